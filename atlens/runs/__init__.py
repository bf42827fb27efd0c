"""Run directories and checkpoints."""

from atlens.runs.checkpoint import load_checkpoint, load_weights, save_checkpoint
from atlens.runs.lock import RunInUseError, remove_if_only_our_lock, run_lock
from atlens.runs.results import is_replaced, replacing
from atlens.runs.rundir import (
    INTERRUPTED,
    RunDirectory,
    distinct_checkpoints,
    load_model,
    load_model_and_epoch,
    model_from_checkpoint,
    run_data,
    run_test_data,
    test_indices,
)

__all__ = ["INTERRUPTED", "RunDirectory", "RunInUseError", "distinct_checkpoints", "load_checkpoint", "load_model",
           "load_model_and_epoch", "load_weights", "model_from_checkpoint", "is_replaced", "remove_if_only_our_lock",
           "replacing", "run_data", "run_lock", "run_test_data", "save_checkpoint", "test_indices"]
