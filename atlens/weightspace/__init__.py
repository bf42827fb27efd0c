"""Weight-space methods: adversarial weight perturbation (AWP, RWP) and weight averaging (SWA, iSWA, EMA)."""

from atlens.weightspace.averaging import AVERAGING, WeightAveraging
from atlens.weightspace.perturbation import PERTURBATIONS, WeightPerturbation, perturbable_weights

__all__ = ["AVERAGING", "PERTURBATIONS", "WeightAveraging", "WeightPerturbation", "perturbable_weights"]
