"""Analyses of trained models: cross-class feature attribution (CAS) and friends."""

from atlens.analysis.attribution import AttributionAccumulator, cas_score, cosine_matrix, instance_matrix
from atlens.analysis.cas import CASResult, cas_for_run, compute_cas, write_cas, write_comparison

__all__ = ["AttributionAccumulator", "CASResult", "cas_for_run", "cas_score", "compute_cas", "cosine_matrix",
           "instance_matrix", "write_cas", "write_comparison"]
