#!/usr/bin/env bash
# The outside-models study (docs/studies/outside_models.md): train two outside architectures with atlens, export
# their weights as plain state dicts, analyse them through --model as any outside model, and as atlens runs.
#   bash docs/studies/outside_models/run.sh DATA_ROOT RUNS_FOLDER      (from the repository root)
# DATA_ROOT: the CPU protocol's CIFAR-10 PNG folder (train/<class>/, test/<class>/). About 45 minutes on 2 cores.
set -euo pipefail
data=$1
runs=$2
for pair in "torchvision_resnet18 torchvision:resnet18 torchvision-resnet18" "timm_resnet10t timm:resnet10t timm-resnet10t"; do
    set -- $pair
    name=$1 spec=$2
    run="$runs/$name"
    [ -f "$run/summary.json" ] || atlens train "configs/cpu/cifar10_$name.yaml" --set data.root="$data" --out "$run"
    normalisation=$(python docs/studies/outside_models/export.py "$run" "$run/$name")
    atlens cas "$run" --checkpoint best --compare last --device cpu
    for checkpoint in best last; do
        atlens eval "$run" --checkpoint "$checkpoint" --attacks clean,pgd20 --device cpu
        # shellcheck disable=SC2086
        atlens cas --model "$spec" --weights "$run/$name-$checkpoint.pt" --num-classes 10 $normalisation \
            --data imagefolder --root "$data" --device cpu --out "$run/outside-$checkpoint"
        # shellcheck disable=SC2086
        atlens eval --model "$spec" --weights "$run/$name-$checkpoint.pt" $normalisation --data imagefolder \
            --root "$data" --attacks clean,pgd20 --device cpu --out "$run/outside-$checkpoint"
    done
done
# Grad-CAM of the torchvision network through --model (one model) and as a run (best vs last)
atlens analyze --model torchvision:resnet18 --weights "$runs/torchvision_resnet18/torchvision_resnet18-best.pt" \
    $(python docs/studies/outside_models/export.py "$runs/torchvision_resnet18" /tmp/atlens-export) \
    --data imagefolder --root "$data" --what gradcam --examples 500 --device cpu --out "$runs/torchvision_resnet18/outside-best"
atlens analyze "$runs/torchvision_resnet18" --what gradcam --examples 500 --device cpu
python docs/studies/outside_models/compare.py "$runs"
