"""atlens: adversarial training, evaluation and analysis of robust image classifiers."""

from atlens.data import load_dataset
from atlens.runs import load_model

__version__ = "0.1.0"
__all__ = ["__version__", "load_dataset", "load_model"]
