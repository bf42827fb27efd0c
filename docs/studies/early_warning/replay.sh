#!/bin/bash
# Replay every rule over the committed runs (run from the repository root): writes replay.md, replay.json,
# replay.png and signals.png beside this script. (runs/pgd_at_eps8_seed0_val, trained with a last batch of
# 4 images per epoch, is left out: see the page.) Extra LABEL=RUN[@FULL_LABEL] arguments go after the PGD-AT runs.
S=docs/studies
python $S/early_warning/replay.py \
    "PGD-AT 8/255 s0=$S/cpu_pgd_at_seed_streams" \
    "PGD-AT 8/255 s1=$S/early_warning/runs/pgd_at_eps8_seed1" \
    "PGD-AT 4/255 s0=$S/early_warning/runs/pgd_at_eps4_seed0" \
    "PGD-AT 4/255 s1=$S/early_warning/runs/pgd_at_eps4_seed1" \
    "PGD-AT 8/255 s0 subset 2=$S/early_warning/runs/pgd_at_eps8_seed0_subset2" \
    "PGD-AT 8/255 s0 val split=$S/early_warning/runs/pgd_at_eps8_seed0_val_droplast@PGD-AT 8/255 s0" \
    "PGD-AT 8/255 s1 val split=$S/early_warning/runs/pgd_at_eps8_seed1_val@PGD-AT 8/255 s1" \
    "TRADES 8/255 s0=$S/early_warning/runs/trades_eps8_seed0" \
    "$@" \
    "PGD-AT 8/255 s0 (replicate A)=$S/cpu_pgd_at" \
    "PGD-AT 4/255 s0 (replicate A)=$S/cpu_eps/epsilon-4_255" \
    "PGD-AT 2/255 s0=$S/cpu_eps/epsilon-2_255" \
    "MART s0=$S/cpu_mart" \
    "+KD s0=$S/cpu_kd" \
    "+SWA s0=$S/cpu_swa" \
    "+AWP s0=$S/cpu_awp" \
    "+RWP s0=$S/cpu_rwp" \
    "+cross_class λ0.1 s0=$S/cross_class_regularizer/cross_class_w0.1_seed0" \
    "+cross_class λ1 s0=$S/cross_class_regularizer/cross_class_w1_seed0" \
    "+cross_class λ10 s0=$S/cross_class_regularizer/cross_class_w10_seed0" \
    "+cross_class λ1 s1=$S/cross_class_regularizer/cross_class_w1_seed1" \
    "+cross_class λ1 s0 subset 2=$S/cross_class_regularizer/cross_class_w1_seed0_subset2" \
    "+SWA s1=$S/cross_class_regularizer/swa_seed1" \
    "+KD s1=$S/cross_class_regularizer/kd_seed1"
