"""What run directories hold, read once, and the papers' Best / Final / Diff tables built from it —
as rows for the HTML page or as Markdown for a write-up (``atlens report --markdown``)."""

from __future__ import annotations

import html
import json
import statistics
from pathlib import Path
from typing import Any

import yaml

from atlens.config import ComponentConfig, as_component, component_value, config_from_dict, config_to_dict, dotted
from atlens.errors import ConfigError
from atlens.files import write_text
from atlens.plots.curves import plot_runs_compared
from atlens.plots.figure import format_epsilon, save_figure
from atlens.report.statistics import difference
from atlens.runs import RunDirectory, is_replaced
from atlens.training.samplers import SAMPLERS
from atlens.training.summary import window_gap

# What may differ between replicates of one configuration: the seed and which training subset.
REPLICATE_KEYS = ("seed", "data.per_class_start")
# Where a run was computed, not what: never part of a configuration's identity.
IGNORED_KEYS = ("runtime.", "reported")
ARITHMETIC_KEYS = ("runtime.amp",)  # a runtime key that changes what the run computes: runs differing in it differ
AGGREGATED = [("best epoch", "best_epoch", 1),
              ("RA Best", "best_robust_acc", 100), ("RA Final", "last_robust_acc", 100), ("RA Diff", "robust_gap", 100),
              ("SA Best", "best_clean_acc", 100), ("SA Final", "last_clean_acc", 100), ("SA Diff", "clean_gap", 100),
              ("CAS best", "cas_best", 1), ("CAS last", "cas_last", 1), ("ΔCAS", "delta_cas", 1),
              ("window gap", "window_robust_gap", 100), ("s", "total_seconds", 1)]
DIGITS = {"s": 0}  # decimals of a column's mean ± sd when not 2
ACCURACY_HEADER = ["run", "best epoch", "RA Best", "RA Final", "RA Diff", "SA Best", "SA Final", "SA Diff"]
CAS_HEADER = ["CAS best", "CAS last", "ΔCAS"]
# the windowed robust-overfitting gap (training.summary.window_gap) and the wall time of training and evaluation
COST_HEADER = ["window gap", "s"]


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text(value: Any) -> str:
    """A value of the wrong type (an edited summary, a paper's note) is shown as text, never a crash."""
    return "–" if value is None else str(value)


def pct(value: Any) -> str:
    return f"{100 * value:.2f}" if _is_number(value) else _text(value)


def num(value: Any, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if _is_number(value) else _text(value)


def signed(value: Any) -> str:
    return f"{value:+.2f}" if _is_number(value) else _text(value)


def markdown_cell(text: str) -> str:
    """A Markdown table cell: pipes, backslashes, HTML and line breaks made literal."""
    text = str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")
    return html.escape(text, quote=False)


def cas_table(summary: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The CAS paper's Table 1 rows: CAS (and robust accuracy) at epoch 10 from the metrics, at the best
    checkpoint and at the last model from the summary."""
    early = next((r for r in rows if r.get("epoch") == 10), {})
    table = [{"when": "epoch 10", "epoch": 10 if early else None, "cas": early.get("cas"),
              "robust_acc": early.get("test_robust_acc")}]
    for name in ("best", "last"):
        table.append({"when": name, "epoch": summary.get(f"cas_{name}_epoch", summary.get(f"{name}_epoch")),
                      "cas": summary.get(f"cas_{name}"), "robust_acc": summary.get(f"cas_{name}_robust_acc")})
    return table


METHOD_NAMES = {"pgd_at": "PGD-AT", "trades": "TRADES", "mart": "MART", "fast_at": "fast AT", "standard": "standard",
                "kd": "KD", "tfkd": "Tf-KD", "label_smoothing": "LS", "cross_class": "cross-class",
                "awp": "AWP", "rwp": "RWP", "swa": "SWA", "iswa": "iSWA", "ema": "EMA"}


def method_label(methods: dict[str, Any]) -> str:
    """What a run composes, as a legend says it: ``PGD-AT + KD + SWA`` (``?`` when methods.json is missing)."""
    def name(part: Any) -> str | None:
        value = part.get("name") if isinstance(part, dict) else part
        return None if value in (None, "none", "ce") else METHOD_NAMES.get(value, str(value))

    parts = [name(methods.get(key)) for key in ("objective", "criterion", "perturbation", "averaging")]
    return " + ".join(p for p in parts if p) or "?"


def legend_labels(views: list[RunView]) -> list[str]:
    """One legend entry per run: its methods; where two runs compose the same methods, the budget or seed that
    tells them apart, else the folder."""
    labels = [method_label(v.methods) for v in views]

    def setting(v: RunView) -> str:
        loaded = yaml.safe_load(v.config) or {}
        epsilon = (loaded.get("attack") or {}).get("epsilon")
        return f"ε {format_epsilon(float(epsilon))}" if isinstance(epsilon, (int, float)) else ""

    out = []
    for label, v in zip(labels, views):
        twins = [w for other, w in zip(labels, views) if other == label]
        if len(twins) == 1:
            out.append(label)
            continue
        budgets = [setting(w) for w in twins]
        seeds = [(yaml.safe_load(w.config) or {}).get("seed") for w in twins]
        if len(set(budgets)) == len(twins):
            out.append(f"{label}, {setting(v)}")
        elif len(set(seeds)) == len(twins):
            out.append(f"{label}, seed {(yaml.safe_load(v.config) or {}).get('seed')}")
        else:
            out.append(f"{label} ({v.name})")
    return out


class RunView:
    """What a run directory holds, read once."""

    def __init__(self, path: str | Path) -> None:
        self.run = RunDirectory(path)
        if not self.run.exists():
            raise ConfigError(f"{path} is not a run directory (no config.yaml)")
        self.name = self.run.path.name
        self.config = self.run.config.read_text()
        try:
            loaded = yaml.safe_load(self.config)
        except yaml.YAMLError:
            loaded = None
        reported = loaded.get("reported") if isinstance(loaded, dict) else None
        self.reported = reported if isinstance(reported, dict) else {}
        summary, methods = read_json(self.run.summary), read_json(self.run.path / "methods.json")
        self.summary = summary if isinstance(summary, dict) else {}
        self.methods = methods if isinstance(methods, dict) else {}
        self.metrics = self.run.read_metrics()
        evaluated = [r for r in self.metrics if r.get("test_robust_acc") is not None]
        readable = all(_is_number(r["test_robust_acc"]) and _is_number(r.get("epoch")) for r in evaluated)
        if "window_robust_gap" not in self.summary and evaluated and readable:  # a summary from before windows
            self.summary.update(window_gap(evaluated))
        self.evals = {p.stem.removeprefix("eval-"): read_json(p) for p in sorted(self.run.path.glob("eval-*.json"))
                      if not is_replaced(p)}  # results an --overwrite kept aside are not this run's
        self.cas_studies = cas_studies(self.run)


TRAINING_CAS = ("cas-best", "cas-last")  # the matrices training writes, which the summary's CAS values describe


def cas_studies(run: RunDirectory) -> dict[str, dict[str, Any]]:
    """The CAS results ``atlens cas`` added to a run (name -> result), beside training's own: each names its
    checkpoint, attack, budget and examples (``cas-best-pgd20-n200``), so no two of different attacks or example
    sets share a row of training's table."""
    studies = {}
    for path in sorted(run.analysis.glob("cas-*.json")) if run.analysis.is_dir() else []:
        result = read_json(path)
        if (path.stem in TRAINING_CAS or is_replaced(path) or not isinstance(result, dict) or "matrix" not in result
                or "cas" not in result):  # training's own, set aside, or a difference map
            continue
        studies[path.stem.removeprefix("cas-")] = result
    return studies


def _reported_accuracy(r: dict[str, Any]) -> list[str]:
    """A paper's Best / Final / Diff cells (numbers in %), blank where the paper gives none."""
    cells = []
    for kind in ("robust", "clean"):
        best, last = r.get(f"best_{kind}_acc"), r.get(f"last_{kind}_acc")
        diff = best - last if _is_number(best) and _is_number(last) else None
        cells += [num(best), num(last), num(diff)]
    return cells


def accuracy_rows(views: list[RunView], with_cas: bool = False) -> list[list[str]]:
    """One row per run (Best / Final / Diff of robust and clean accuracy in %, optionally CAS at the best
    and last checkpoints), each followed by the paper's row when the run's config records one."""
    rows = []
    for v in views:
        s, r = v.summary, v.reported
        if "best_epoch" in s:
            row = [v.name, _text(s["best_epoch"])] + [pct(s.get(k)) for k in (
                "best_robust_acc", "last_robust_acc", "robust_gap", "best_clean_acc", "last_clean_acc", "clean_gap")]
        else:
            row = [v.name] + ["–"] * 7
        if with_cas:
            row += [num(s.get("cas_best")), num(s.get("cas_last")), signed(s.get("delta_cas"))]
        rows.append(row)
        paper_cas = any(k in r for k in ("cas_best", "cas_last", "delta_cas"))
        if "best_robust_acc" in r or (with_cas and paper_cas):
            paper = [f"{v.name} (paper)", str(r.get("best_epoch", "–"))] + _reported_accuracy(r)
            if with_cas:
                paper += [num(r.get("cas_best")), num(r.get("cas_last")), signed(r.get("delta_cas"))]
            rows.append(paper)
    return rows


def write_markdown(views: list[RunView], out: Path, vary: tuple[str, ...] = ()) -> Path:
    """OUT.md with the table and, beside it, OUT.png with the runs' curves compared."""
    figure = save_figure(comparison_figure(views, vary), out.with_suffix(".png"))
    text = f"{markdown_table(views, vary)}\n![runs compared]({figure.name})\n"
    return write_text(out, text)


def comparison_figure(views: list[RunView], vary: tuple[str, ...] = ()) -> Any:
    """The runs' curves compared: one line per run, or, when some runs are replicates of one configuration, one
    colour per configuration with its mean and spread."""
    labels = legend_labels(views)
    runs = {label: v.metrics for label, v in zip(labels, views)}
    grouped = replicate_groups(views, vary)
    groups = ({group: [labels[views.index(m)] for m in members] for group, members in grouped}
              if any(len(members) > 1 for _, members in grouped) else None)
    return plot_runs_compared(runs, groups)


DIFFERENCE_HEADER = ["comparison", "metric", "difference", "95 % interval", "runs", "method", "verdict"]


def markdown_table(views: list[RunView], vary: tuple[str, ...] = ()) -> str:
    """The Best / Final / Diff, CAS, windowed-gap and wall-time table of the runs as GitHub Markdown; runs whose
    settings differ only in the replicate keys and in ``vary`` (dotted keys or sections, e.g. a KD teacher's run
    directory) are also aggregated as replicates of one configuration."""
    header = ACCURACY_HEADER + CAS_HEADER + COST_HEADER
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    by_name = {v.name: v for v in views}
    for row in accuracy_rows(views, with_cas=True):
        run = by_name.get(row[0])
        s = run.summary if run is not None else {}  # a paper's row has no window and no wall time
        row += [pct(s.get("window_robust_gap")), num(s.get("total_seconds"), 0)]
        lines.append("| " + " | ".join(markdown_cell(c) for c in row) + " |")
    groups = replicate_groups(views, vary)
    if any(len(members) > 1 for _, members in groups):
        header = ["configuration", "runs"] + [name for name, _, _ in AGGREGATED]
        over = ", ".join(REPLICATE_KEYS + tuple(vary))
        lines += ["", f"Mean ± sample standard deviation over replicates ({over}):", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(markdown_cell(c) for c in row) + " |" for row in aggregate_rows(groups)]
    if len(groups) > 1:
        header = DIFFERENCE_HEADER
        lines += ["", f"Each configuration against the first ({groups[0][0]}): the difference of the means with a 95 % "
                  "t interval over the replicates (paired by seed when both ran the same seeds, else Welch; "
                  "docs/statistics.md):", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(markdown_cell(c) for c in row) + " |" for row in difference_rows(groups)]
    return "\n".join(lines) + "\n"


def _varies(key: str, keys: tuple[str, ...]) -> bool:
    return any(key == k or key.startswith(k + ".") for k in keys)


def configuration(view: RunView, vary: tuple[str, ...] = ()) -> dict[str, Any]:
    """The run's settings as dotted keys, defaults filled in (so a config written before a key existed
    compares equal to one written after), without the replicate keys, the keys in ``vary`` and the machine
    keys (runtime, except its precision)."""
    try:
        raw = yaml.safe_load(view.config)
    except yaml.YAMLError:
        raw = None
    raw = raw if isinstance(raw, dict) else {}
    try:
        resolved = config_to_dict(config_from_dict({k: v for k, v in raw.items() if k != "reported"}))
    except ConfigError:  # a config of another version of atlens: compare it as written
        resolved = raw
    if isinstance(resolved.get("extra"), dict) and "sampler" in resolved["extra"]:
        resolved["extra"]["sampler"] = _sampler_settings(resolved["extra"]["sampler"])
    flat = dotted(resolved)
    if flat.get("extra.source") is None:  # no extra data: the section's other settings do nothing
        flat = {k: v for k, v in flat.items() if not k.startswith("extra.")}
    # a key written as null says what an absent key says (configs record optional keys once they exist)
    return {k: v for k, v in flat.items() if v is not None and not _varies(k, REPLICATE_KEYS + tuple(vary))
            and (k in ARITHMETIC_KEYS or not k.startswith(IGNORED_KEYS))}


def _sampler_settings(raw: Any) -> Any:
    """The extra-data sampler with its options resolved (runs that recorded only its name, or only the options
    they set, compare equal to runs that recorded them all); as written when atlens does not know it."""
    try:
        section = as_component(raw, "extra.sampler")
        return component_value(ComponentConfig(section.name, SAMPLERS.validate(section.name, section.options,
                                                                               "extra.sampler")))
    except ConfigError:
        return raw


def replicate_groups(views: list[RunView], vary: tuple[str, ...] = ()) -> list[tuple[str, list[RunView]]]:
    """Runs grouped by identical configuration up to the replicate keys and ``vary``, in order of first
    appearance, each labelled by the settings that tell the groups apart."""
    every_key = {k for v in views for k in configuration(v)}
    for key in vary:
        if not any(_varies(k, (key,)) for k in every_key):
            raise ConfigError(f"--vary {key}: no run has this setting; give a dotted key of the runs' config.yaml "
                              "(e.g. criterion.adv_teacher)")
    settings = [configuration(v, vary) for v in views]
    keys: dict[str, list[RunView]] = {}
    for view, config in zip(views, settings):
        keys.setdefault(repr(sorted(config.items())), []).append(view)
    distinct = sorted({k for config in settings for k in config
                       if len({repr(other.get(k)) for other in settings}) > 1})
    groups = []
    for members in keys.values():
        config = settings[views.index(members[0])]
        # the settings this group has and the others lack or set otherwise (unset keys say nothing)
        label = ", ".join(f"{k}={config[k]}" for k in distinct if config.get(k) is not None) or "defaults"
        groups.append((label, members))
    return groups


def mean_spread(values: list[float], scale: float = 1, digits: int = 2) -> str:
    """``mean ± sd`` (sample standard deviation) of the numbers, scaled; the value alone for one."""
    values = [scale * v for v in values if _is_number(v)]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


# the metrics whose differences between configurations the report states with their uncertainty
COMPARED = [("RA Best", "best_robust_acc", 100), ("RA Final", "last_robust_acc", 100), ("RA Diff", "robust_gap", 100),
            ("window gap", "window_robust_gap", 100), ("CAS best", "cas_best", 1), ("CAS last", "cas_last", 1),
            ("ΔCAS", "delta_cas", 1)]


def replicate(view: RunView) -> tuple[Any, ...]:
    """Which replicate a run is: its values of the replicate keys (runs of one seed pair up across groups); a key
    its config does not name (written before the key existed) has today's default."""
    raw = yaml.safe_load(view.config) or {}
    flat = dotted(raw) if isinstance(raw, dict) else {}
    defaults = dotted(config_to_dict(config_from_dict({})))
    return tuple(flat.get(key, defaults.get(key)) for key in REPLICATE_KEYS)


def _by_replicate(members: list[RunView], key: str, scale: float) -> dict[Any, float]:
    values = [(replicate(m), scale * m.summary[key]) for m in members if _is_number(m.summary.get(key))]
    if len({r for r, _ in values}) < len(values):  # a replicate twice in one group: nothing to pair by
        return {(r, i): v for i, (r, v) in enumerate(values)}
    return dict(values)


def difference_rows(groups: list[tuple[str, list[RunView]]]) -> list[list[str]]:
    """Every group against the first, metric by metric (``COMPARED``): the difference, its 95 % interval, the runs
    per group, how it was computed and the verdict (``atlens.report.statistics``)."""
    reference_label, reference = groups[0]
    rows = []
    for label, members in groups[1:]:
        for name, key, scale in COMPARED:
            a, b = _by_replicate(members, key, scale), _by_replicate(reference, key, scale)
            if not a or not b:
                continue
            d = difference(a, b)
            interval = "–" if d.low is None else f"[{d.low:+.2f}, {d.high:+.2f}]"
            rows.append([f"{label} − {reference_label}", name, f"{d.value:+.2f}", interval,
                         f"{d.n[0]} vs {d.n[1]}", d.method, d.verdict])
    return rows


def aggregate_rows(groups: list[tuple[str, list[RunView]]]) -> list[list[str]]:
    """One row per group: mean ± sd of the summary numbers over its runs (accuracies in %)."""
    return [[label, str(len(members))] + [mean_spread([m.summary.get(key) for m in members], scale,
                                                      DIGITS.get(name, 2))
                                          for name, key, scale in AGGREGATED]
            for label, members in groups]
