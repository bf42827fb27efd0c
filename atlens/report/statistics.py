"""How sure a comparison of runs is: each metric of a group of replicates (seeds) as mean ± sd with n, and each
difference between two groups with a 95 % t interval over the replicates and a plain verdict.

For two groups A and B of one metric (values a_i, b_j):

- **Paired**, when both groups ran the same seeds (each seed once, at least two): the differences
  d_s = a_s − b_s over the shared seeds s; the interval is mean(d) ± t(0.975, n − 1) · sd(d) / √n. Pairing
  removes what a seed does to both runs (the same initial weights, data order and attack starts).
- **Welch**, otherwise (at least two runs in each group): mean(a) − mean(b) ± t(0.975, ν) · √(s_a²/n_a + s_b²/n_b),
  with ν = (s_a²/n_a + s_b²/n_b)² / ((s_a²/n_a)²/(n_a − 1) + (s_b²/n_b)²/(n_b − 1)) (Welch–Satterthwaite).
- With one run in a group there is no estimate of the seed-to-seed spread, so no interval: the verdict says
  so instead of comparing.

sd is the sample standard deviation (n − 1). The verdict is "within seed-to-seed spread" when the interval holds
0 and "larger than it" when it does not: a 95 % interval at n = 2 or 3 is wide (t(0.975, 1) = 12.7,
t(0.975, 2) = 4.3), so "within" often means "these seeds cannot tell", not "equal".
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from scipy import stats

LEVEL = 0.95
WITHIN, LARGER, ONE_RUN = "within seed-to-seed spread", "larger than it", "no uncertainty estimate (one run)"


@dataclass(frozen=True)
class Spread:
    mean: float
    sd: float | None  # None for one value
    n: int


def spread(values: list[float]) -> Spread:
    return Spread(statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None, len(values))


@dataclass(frozen=True)
class Difference:
    """A − B: the difference of the means (the mean difference when paired), its 95 % interval (None with one run
    in a group), the runs it rests on, how it was computed and the verdict."""

    value: float
    low: float | None
    high: float | None
    n: tuple[int, int]
    method: str  # paired, welch, or none
    verdict: str


def difference(a: dict[object, float], b: dict[object, float]) -> Difference:
    """A − B of one metric, each group given as {seed: value}."""
    if not a or not b:
        raise ValueError("a difference needs at least one run in each group")
    mean_a, mean_b = statistics.mean(a.values()), statistics.mean(b.values())
    sizes = (len(a), len(b))
    if min(sizes) < 2:
        return Difference(mean_a - mean_b, None, None, sizes, "none", ONE_RUN)
    if a.keys() == b.keys():
        d = [a[s] - b[s] for s in a]
        half = stats.t.ppf(0.5 + LEVEL / 2, len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d))
        value, method = statistics.mean(d), "paired"
    else:
        va, vb = statistics.variance(a.values()) / len(a), statistics.variance(b.values()) / len(b)
        if va + vb == 0:
            half = 0.0
        else:
            dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
            half = stats.t.ppf(0.5 + LEVEL / 2, dof) * math.sqrt(va + vb)
        value, method = mean_a - mean_b, "welch"
    low, high = value - half, value + half
    return Difference(value, low, high, sizes, method, WITHIN if low <= 0 <= high else LARGER)
