"""Threat models and gradient attacks on models that take inputs in [0,1]."""

from atlens.attacks.pgd import fgsm, fgsm_rs, frozen, margin_loss, mode, per_example_loss, pgd
from atlens.attacks.threat import DEFAULT_EPSILON, ThreatModel, threat_model

__all__ = ["DEFAULT_EPSILON", "ThreatModel", "fgsm", "fgsm_rs", "frozen", "margin_loss", "mode", "per_example_loss",
           "pgd", "threat_model"]
