"""The report's comparisons against hand computations: paired and Welch t intervals, one run, verdicts."""

import pytest

from atlens.report.statistics import LARGER, ONE_RUN, WITHIN, difference, spread


def test_paired_differences_over_shared_seeds():
    # d = 1, 2, 3: mean 2, sd 1; t(0.975, 2) = 4.302653; half-width 4.302653 / sqrt(3) = 2.484138
    d = difference({0: 10.0, 1: 12.0, 2: 14.0}, {0: 9.0, 1: 10.0, 2: 11.0})
    assert d.method == "paired" and d.n == (3, 3)
    assert (d.value, d.low, d.high) == pytest.approx((2.0, 2.0 - 2.484138, 2.0 + 2.484138), abs=1e-6)
    assert d.verdict == WITHIN


def test_welch_interval_when_the_seeds_differ():
    # A: 1, 3 (mean 2, variance 2); B: 10, 12, 14 (mean 12, variance 4). s²/n: 1 and 4/3, se = sqrt(7/3).
    # ν = (7/3)² / (1²/1 + (4/3)²/2) = 2.882353; t(0.975, ν) · se = 4.975468
    d = difference({0: 1.0, 1: 3.0}, {5: 10.0, 6: 12.0, 7: 14.0})
    assert d.method == "welch" and d.n == (2, 3)
    assert (d.value, d.low, d.high) == pytest.approx((-10.0, -10.0 - 4.975468, -10.0 + 4.975468), abs=1e-5)
    assert d.verdict == LARGER


def test_one_run_has_no_interval_and_says_so():
    d = difference({0: 5.0}, {0: 3.0, 1: 4.0})
    assert (d.value, d.low, d.high, d.method, d.verdict) == (1.5, None, None, "none", ONE_RUN)


def test_spread_is_mean_and_sample_sd_with_n():
    assert spread([24.0, 26.0]) == pytest.approx(type(spread([1.0]))(25.0, 2 ** 0.5, 2))
    assert spread([7.0]).sd is None


def test_the_comparison_figure_draws_each_configurations_mean_and_spread():
    from matplotlib.collections import PolyCollection

    from atlens.plots.curves import plot_runs_compared

    def rows(values):
        return [{"epoch": e, "test_robust_acc": v, "test_clean_acc": 0.9} for e, v in zip((2, 4), values)]

    runs = {"a s0": rows((0.2, 0.4)), "a s1": rows((0.4, 0.6)), "b s0": rows((0.1, 0.1))}
    fig = plot_runs_compared(runs, {"a": ["a s0", "a s1"], "b": ["b s0"]})
    robust = fig.axes[0]
    labels = robust.get_legend_handles_labels()[1]
    assert labels == ["a (mean of 2)", "b"]
    mean = next(line for line in robust.lines if line.get_label() == "a (mean of 2)")
    assert list(mean.get_ydata()) == pytest.approx([30.0, 50.0])  # percent
    band = [c for c in robust.collections if isinstance(c, PolyCollection)]
    assert len(band) == 1  # mean ± sd of the group with two runs; none for one run
    ys = band[0].get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(30.0 - 2 ** 0.5 * 10) and ys.max() == pytest.approx(50.0 + 2 ** 0.5 * 10)


def test_a_config_written_before_a_replicate_key_existed_pairs_with_one_that_states_its_default():
    """Pairing reads each run's replicate keys; a key the config does not name has today's default, so older
    runs pair with newer ones of the same seed and subset instead of falling back to Welch."""
    from types import SimpleNamespace

    from atlens.report.tables import replicate

    older, newer = SimpleNamespace(config="seed: 1\n"), SimpleNamespace(config="seed: 1\ndata: {per_class_start: 0}\n")
    assert replicate(older) == replicate(newer) == (1, 0)
    assert replicate(SimpleNamespace(config="seed: 1\ndata: {per_class_start: 100}\n")) != replicate(older)
