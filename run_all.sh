#!/usr/bin/env bash
# Installs the requirements, trains both models, draws both, and prints where the GIFs are.
# Extra arguments go to train.py, e.g.: bash run_all.sh --epochs 20 --dataset fashion-mnist
set -euo pipefail
cd "$(dirname "$0")"

step=""
trap 'echo "run_all.sh: failed during: $step" >&2' ERR

PYTHON=${PYTHON:-python}
MODELS=(vgg8_arcface vgg8_softmax)

step="installing requirements"
"$PYTHON" -m pip install -q -r requirements.txt

for model in "${MODELS[@]}"; do
    step="training $model"
    echo "== $step"
    "$PYTHON" train.py --model "$model" "$@"
done

for model in "${MODELS[@]}"; do
    step="drawing $model"
    echo "== $step"
    "$PYTHON" visualization.py --model "$model"
done

echo "GIFs:"
for model in "${MODELS[@]}"; do
    echo "  data/${model}_Training_Embeddings.gif"
    echo "  data/${model}_Validation_Embeddings.gif"
done
