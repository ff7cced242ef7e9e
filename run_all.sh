#!/usr/bin/env bash
# Installs the requirements, trains both models, draws both, and prints where the GIFs are.
#   bash run_all.sh                    ArcFace and Softmax, as the seed repository
#   bash run_all.sh --all              the whole margin family (or MODELS="vgg8_cosface vgg8_arcface")
# Other arguments go to train.py, e.g.: bash run_all.sh --epochs 20 --dataset fashion-mnist
set -euo pipefail
cd "$(dirname "$0")"

step=""
trap 'echo "run_all.sh: failed during: $step" >&2' ERR

PYTHON=${PYTHON:-python}
FAMILY=(vgg8_softmax vgg8_normface vgg8_sphereface vgg8_cosface vgg8_arcface vgg8_combined)
read -r -a MODELS <<< "${MODELS:-vgg8_arcface vgg8_softmax}"
if [[ "${1:-}" == "--all" ]]; then
    MODELS=("${FAMILY[@]}")
    shift
fi
OUT_DIR=data  # train.py's default; an --out-dir given to train.py is drawn from too
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
        --out-dir) OUT_DIR="${args[i + 1]:-data}" ;;
        --out-dir=*) OUT_DIR="${args[i]#--out-dir=}" ;;
    esac
done

step="installing requirements"
"$PYTHON" -m pip install -q -r requirements.txt

for model in "${MODELS[@]}"; do
    step="training $model"
    echo "== $step"
    "$PYTHON" train.py --model "$model" "$@"
done

step="drawing ${MODELS[*]}"
echo "== $step"
"$PYTHON" visualization.py --model "${MODELS[@]}" --out-dir "$OUT_DIR"

echo "GIFs:"
for model in "${MODELS[@]}"; do
    echo "  $OUT_DIR/${model}_Training_Embeddings.gif"
    echo "  $OUT_DIR/${model}_Validation_Embeddings.gif"
done
