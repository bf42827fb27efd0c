"""Evaluation of trained models under attack."""

from atlens.evaluation.accuracy import Accuracy, PGDAttack, evaluate

__all__ = ["Accuracy", "PGDAttack", "evaluate"]
