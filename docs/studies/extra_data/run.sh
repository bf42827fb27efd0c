#!/usr/bin/env bash
# The extra-data study (docs/studies/extra_data.md): the CPU protocol (configs/cpu/cifar10_pgd_at.yaml: 1,000
# labelled CIFAR-10 images, PreActResNet-18 width 16, PGD-5, 100 epochs) with 2,000 further training images of
# the same CIFAR-10 ImageFolder tree drawn as half of every batch. Run from the repository root; DATA is the tree
# (train/<class>/<image>, test/<class>/<image>; its training split needs 3,000+ images beyond the first 100 of
# each class). SEED=0 by default; runs go to runs/extra_data/. ARMS chooses what to train (default: all).
# Trainings run with THREADS threads each (default 1: two invocations share a 2-core machine; THREADS=2 for
# one alone); every arm is independent once the seed's pseudo-labels exist (the committed ones are beside this
# script), so arms can be spread over machines.
set -euo pipefail
SEED=${SEED:-0}
DATA=${DATA:-data/cifar10-png}
OUT=runs/extra_data
ARMS=${ARMS:-"labels true pseudo crossclass pgd_at trades pgd_at_steps"}
BASE=configs/cpu/cifar10_pgd_at.yaml
EXTRA=(--set data.root=$DATA --set seed=$SEED --set extra.source=rest --set extra.take=2000 --set extra.fraction=0.5)
THREADS=${THREADS:-1}
LABELS=${LABELS:-$OUT/labels-s$SEED}  # LABELS=docs/studies/extra_data/labels-s$SEED: the committed ones
for arm in $ARMS; do
  case $arm in
    labels)  # the standard teacher, trained on the 1,000 labelled images only, labels the 2,000 once
      atlens train configs/cpu/cifar10_standard.yaml --set data.root=$DATA --set seed=$SEED --set eval.every=10 --set runtime.threads=$THREADS \
          --out $OUT/teacher-s$SEED
      atlens label $BASE "${EXTRA[@]}" --set extra.labels=pseudo --set extra.teacher=$OUT/teacher-s$SEED \
          --out $LABELS ;;
    true)  # (a) the true labels: the upper bound
      atlens train $BASE "${EXTRA[@]}" --set extra.labels=provided --set runtime.threads=$THREADS --out $OUT/true-s$SEED ;;
    pseudo)  # (b) the teacher's pseudo-labels, drawn uniformly
      atlens train $BASE "${EXTRA[@]}" --set extra.labels=pseudo --set extra.teacher=$LABELS \
          --set runtime.threads=$THREADS --out $OUT/pseudo-s$SEED ;;
    crossclass)  # (c) the same labels, drawn by the cross-class-aware sampler
      atlens train $BASE "${EXTRA[@]}" --set extra.labels=pseudo --set extra.teacher=$LABELS \
          --set "extra.sampler={name: cross_class, every: 5}" --set runtime.threads=$THREADS --out $OUT/crossclass-s$SEED ;;
    pgd_at | trades)  # the baselines on the 1,000 alone
      atlens train $BASE --set data.root=$DATA --set seed=$SEED --set objective.name=$arm --set runtime.threads=$THREADS \
          --out $OUT/$arm-s$SEED ;;
    pgd_at_steps)  # PGD-AT on the 1,000 alone with the extra-data arms' steps: epochs of 2,048 examples = 16 batches
      # of 128 (an extra-data epoch: 1,000 labelled / 64 per batch), the labelled set permuted afresh as it runs out.
      # Normalised as the other arms were (the mean and std of the tree's 4,000 training images).
      atlens train $BASE --set data.root=$DATA --set seed=$SEED --set data.epoch=2048 \
          --set "data.mean=[0.49159666895866394, 0.48175927996635437, 0.4446566700935364]" \
          --set "data.std=[0.24711380898952484, 0.24397225677967072, 0.2625002861022949]" \
          --set runtime.threads=$THREADS --out $OUT/pgd_at_steps-s$SEED ;;
    *) echo "unknown arm $arm (labels, true, pseudo, crossclass, pgd_at, trades, pgd_at_steps)" >&2; exit 2 ;;
  esac
done
