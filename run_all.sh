#!/usr/bin/env bash
# Installs the requirements, trains both models, draws both, and prints where the GIFs are.
#   bash run_all.sh                    ArcFace and Softmax, as the seed repository
#   bash run_all.sh --all              the whole family of twelve heads, and the raw view of Softmax,
#                                      ArcFace and MagFace (or MODELS="vgg8_cosface vgg8_arcface")
#   bash run_all.sh --open-set         the whole family with classes 6-9 held out of training, in data/open_set
#   bash run_all.sh --sweep            where a margin pays: sweep.py's grid, and its table and figure; the
#                                      arguments after --sweep go to sweep.py (python sweep.py --help)
# Other arguments go to train.py, e.g.: bash run_all.sh --epochs 20 --dataset fashion-mnist
set -euo pipefail
cd "$(dirname "$0")"

step=""
trap 'echo "run_all.sh: failed during: $step" >&2' ERR

PYTHON=${PYTHON:-python}
if [[ "${1:-}" == "--sweep" ]]; then
    shift
    step="installing requirements"
    "$PYTHON" -m pip install -q -r requirements.txt
    step="the sweep"
    exec "$PYTHON" sweep.py "$@"
fi
FAMILY=(vgg8_softmax vgg8_normface vgg8_sphereface vgg8_cosface vgg8_arcface vgg8_combined
        vgg8_adacos vgg8_subcenter vgg8_curricularface vgg8_elasticface vgg8_magface vgg8_adaface)
read -r -a MODELS <<< "${MODELS:-vgg8_arcface vgg8_softmax}"
OUT_DIR=data  # train.py's default; an --out-dir given to train.py is drawn from too
OPEN_SET=()
RAW_VIEW=()
if [[ "${1:-}" == "--all" ]]; then
    MODELS=("${FAMILY[@]}")
    RAW_VIEW=(vgg8_softmax vgg8_arcface vgg8_magface)
    shift
elif [[ "${1:-}" == "--open-set" ]]; then
    MODELS=("${FAMILY[@]}")
    OUT_DIR=data/open_set
    OPEN_SET=(--unseen-classes 6 7 8 9 --out-dir "$OUT_DIR")
    shift
fi
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
    "$PYTHON" train.py --model "$model" "${OPEN_SET[@]}" "$@"
done

# these first, so that the family's drawing below writes the comparison figures
if ((${#RAW_VIEW[@]})); then
    step="drawing the raw view of ${RAW_VIEW[*]}"
    echo "== $step"
    "$PYTHON" visualization.py --compare "${RAW_VIEW[@]}" --space raw --split val --out-dir "$OUT_DIR"
fi
if ((${#OPEN_SET[@]})); then
    step="drawing the comparison of vgg8_arcface and vgg8_softmax"
    echo "== $step"
    "$PYTHON" visualization.py --compare vgg8_arcface vgg8_softmax --split val --out-dir "$OUT_DIR"
fi
step="drawing ${MODELS[*]}"
echo "== $step"
"$PYTHON" visualization.py --model "${MODELS[@]}" --out-dir "$OUT_DIR"
if ((${#OPEN_SET[@]})); then
    step="summing up the last epoch"
    "$PYTHON" summary.py "$OUT_DIR" --model "${MODELS[@]}"
    echo "ArcFace and Softmax side by side: $OUT_DIR/comparison_Validation_Embeddings.gif"
    echo "the family's ROC curves and metrics: $OUT_DIR/comparison_roc.png, $OUT_DIR/comparison_metrics.png"
fi

if ((${#RAW_VIEW[@]})); then
    echo "the norms before normalisation: $OUT_DIR/comparison_Validation_Embeddings_raw.gif"
fi
echo "GIFs:"
for model in "${MODELS[@]}"; do
    echo "  $OUT_DIR/${model}_Training_Embeddings.gif"
    echo "  $OUT_DIR/${model}_Validation_Embeddings.gif"
done
