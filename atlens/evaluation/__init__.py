"""Evaluation of trained models under attack."""

from atlens.evaluation.accuracy import Accuracy, PGDAttack, evaluate, seconds_per_gradient

__all__ = ["Accuracy", "PGDAttack", "evaluate", "seconds_per_gradient"]
