#!/usr/bin/env bash
# Do this checkout's train.py and visualization.py give the numbers and pictures of an earlier commit?
#   bash scripts/same_numbers.sh [REV]   (default: ab7b665, before the core was rewritten for reading)
# Trains vgg8_arcface, vgg8_softmax, vgg8_adaface and vgg8_subcenter for 2 epochs on mnist-sample (fp32,
# seed 58) with both trees, draws each, and compares the embeddings and the GIFs byte for byte; then
# checks that a run stopped after epoch 1 and resumed ends with the same bytes as one never stopped, and
# that a run of REV's, stopped after epoch 1, resumes here (its checkpoint loads) to the same bytes.
set -euo pipefail
rev=${1:-ab7b665}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'git -C "$here" worktree remove --force "$work/then" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git -C "$here" worktree add --detach "$work/then" "$rev" >/dev/null 2>&1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
options=(--dataset mnist-sample --epochs 2 --precision fp32 --seed 58)
failed=0
for model in vgg8_arcface vgg8_softmax vgg8_adaface vgg8_subcenter; do
    for tree in then now; do
        code=$work/then; [ "$tree" = now ] && code=$here
        (cd "$code" && python train.py --model "$model" "${options[@]}" --out-dir "$work/out-$tree" >/dev/null 2>&1 &&
         python visualization.py --model "$model" --no-figures --out-dir "$work/out-$tree" >/dev/null 2>&1) ||
            { echo "$model: the $tree tree failed"; exit 1; }
    done
    for file in "all_${model}_embeddings.npy" "${model}_Training_Embeddings.gif" "${model}_Validation_Embeddings.gif"; do
        if cmp -s "$work/out-then/$file" "$work/out-now/$file"; then echo "same      $file"; else echo "DIFFERENT $file"; failed=1; fi
    done
done
(cd "$here" && python train.py --model vgg8_arcface "${options[@]}" --epochs 1 --out-dir "$work/resumed" >/dev/null 2>&1 &&
 python train.py --model vgg8_arcface "${options[@]}" --resume --out-dir "$work/resumed" >/dev/null 2>&1)
if cmp -s "$work/out-now/all_vgg8_arcface_embeddings.npy" "$work/resumed/all_vgg8_arcface_embeddings.npy"; then
    echo "same      all_vgg8_arcface_embeddings.npy, stopped after epoch 1 and resumed"
else
    echo "DIFFERENT all_vgg8_arcface_embeddings.npy, stopped after epoch 1 and resumed"; failed=1
fi
(cd "$work/then" && python train.py --model vgg8_subcenter "${options[@]}" --epochs 1 --out-dir "$work/old-run" >/dev/null 2>&1)
(cd "$here" && python train.py --model vgg8_subcenter "${options[@]}" --resume --out-dir "$work/old-run" >/dev/null 2>&1 &&
 python -c "import sys; sys.path.insert(0, '.'); from models import load_model; load_model('$work/old-run/vgg8_subcenter_best.pth')")
if cmp -s "$work/out-then/all_vgg8_subcenter_embeddings.npy" "$work/old-run/all_vgg8_subcenter_embeddings.npy"; then
    echo "same      all_vgg8_subcenter_embeddings.npy, epoch 1 by $rev, resumed and loaded by this tree"
else
    echo "DIFFERENT all_vgg8_subcenter_embeddings.npy, epoch 1 by $rev, resumed by this tree"; failed=1
fi
[ $failed = 0 ] && echo "the same numbers and pictures as $rev" || { echo "not the same as $rev"; exit 1; }
