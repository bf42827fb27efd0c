#!/usr/bin/env bash
# The extra-data study (docs/studies/extra_data.md): the CPU protocol (configs/cpu/cifar10_pgd_at.yaml: 1,000
# labelled CIFAR-10 images, PreActResNet-18 width 16, PGD-5, 100 epochs) with 2,000 further training images of
# the same CIFAR-10 ImageFolder tree drawn as half of every batch. Run from the repository root; DATA is the tree
# (train/<class>/<image>, test/<class>/<image>; its training split needs 3,000+ images beyond the first 100 of
# each class). SEED=0 by default; runs go to runs/extra_data/.
# Two trainings at a time with one thread each on a 2-core machine. The baselines on the 1,000 alone are the
# committed CPU-protocol runs (PGD-AT: docs/studies/cpu_pgd_at_seed_streams for seed 0,
# docs/studies/early_warning/runs/pgd_at_eps8_seed1; TRADES: docs/studies/early_warning/runs/trades_eps8_seed*):
#   atlens train $BASE --set seed=$SEED [--set objective.name=trades] --set runtime.threads=1
set -euo pipefail
SEED=${SEED:-0}
DATA=${DATA:-data/cifar10-png}
OUT=runs/extra_data
BASE=configs/cpu/cifar10_pgd_at.yaml
EXTRA=(--set data.root=$DATA --set extra.source=rest --set extra.take=2000 --set extra.fraction=0.5)
# the standard teacher that pseudo-labels the extra images: trained on the 1,000 labelled images only
atlens train configs/cpu/cifar10_standard.yaml --set data.root=$DATA --set seed=$SEED --set eval.every=10 \
    --out $OUT/teacher-s$SEED
# (a) true labels (the upper bound), (b) pseudo-labels, (c) pseudo-labels drawn by the cross-class sampler
atlens train $BASE --set seed=$SEED "${EXTRA[@]}" --set extra.labels=provided \
    --set runtime.threads=1 --out $OUT/true-s$SEED &
atlens train $BASE --set seed=$SEED "${EXTRA[@]}" --set extra.labels=pseudo \
    --set extra.teacher=$OUT/teacher-s$SEED --set runtime.threads=1 --out $OUT/pseudo-s$SEED &
wait
atlens train $BASE --set seed=$SEED "${EXTRA[@]}" --set extra.labels=pseudo \
    --set extra.teacher=$OUT/teacher-s$SEED --set "extra.sampler={name: cross_class, every: 5}" \
    --set runtime.threads=1 --out $OUT/crossclass-s$SEED
