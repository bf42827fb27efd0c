"""Replay every early-stopping rule over finished runs and compare what each selects with the oracle (the best
test robust accuracy of the run): writes replay.json, replay.md and replay.png here.

    python docs/studies/early_warning/replay.py LABEL=RUN_DIR [LABEL=RUN_DIR@FULL_LABEL ...]

A run trained with a validation split (``data.val_split``) is scored against its own oracle and, when
``@FULL_LABEL`` names the same configuration trained on all the data, against that run's oracle too: what
holding out the split cost on top of what the selection gave up.

Rules read only label-free training signals (small_loss_share, train_cas) or, for `val`, the validation split;
the test accuracy is used only to score their choices. Runs written before the signals existed give
`small_loss_share` through their `loss_hist[0]` (the same quantity) and no `train_cas`.
"""

import json
import statistics
import sys
import textwrap
from pathlib import Path

from matplotlib import colormaps
from matplotlib.figure import Figure

from atlens.config import EarlyStopConfig
from atlens.training.early_stop import CASTrendRule, SmallLossRule, StabilityRule, ValidationRule, replay

here = Path(__file__).resolve().parent
default = EarlyStopConfig()
RULES = {
    **{f"small-loss share {s}": (lambda s=s: SmallLossRule(s)) for s in (0.05, 0.1, 0.2)},
    "cas_trend": lambda: CASTrendRule(default.cas_window, default.cas_drop, default.patience),
    "cas_trend unlabelled": lambda: CASTrendRule(default.cas_window, default.cas_drop, default.patience,
                                                 signal="unlabelled_cas"),
    "unlabelled": lambda: StabilityRule(default.patience),
    "val": lambda: ValidationRule(default.patience),
}


def load(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if line.strip()]
    for row in rows:
        if row.get("small_loss_share") is None and "loss_hist" in row:
            row["small_loss_share"] = row["loss_hist"][0]
    return rows


def replay_run(label: str, path: Path, full: str | None = None) -> dict:
    """Every rule replayed over one run: the oracle, the last epoch and what each rule selects, with its regret."""
    rows = load(Path(path))
    test = {r["epoch"]: r["test_robust_acc"] for r in rows if r.get("test_robust_acc") is not None}
    oracle = max(test, key=test.get)
    last = max(test)
    entry = {"run": label, "path": str(path), "oracle_epoch": oracle, "oracle_acc": test[oracle], "last_epoch": last,
             "last_regret": test[last] - test[oracle], "rules": {}, "full_data_run": full or None}
    for name, make in RULES.items():
        rule = make()
        if not any(r.get(rule.signal) is not None for r in rows):  # a run without this signal
            continue
        chosen = replay(rule, rows)
        epoch = chosen["selected_epoch"]
        entry["rules"][name] = {**chosen, "test_acc": test.get(epoch),
                                "regret": None if epoch is None else test[epoch] - test[oracle]}
    return entry


def main() -> None:
    if len(sys.argv) < 2:  # (writing the outputs of no runs would replace the committed ones)
        sys.exit(__doc__.split("\n\n")[1])
    results = []
    for item in sys.argv[1:]:
        label, _, path = item.partition("=")
        path, _, full = path.partition("@")
        results.append(replay_run(label, Path(path), full))

    by_label = {e["run"]: e for e in results}
    for e in results:
        if e["full_data_run"]:
            if e["full_data_run"] not in by_label:
                sys.exit(f"{e['run']}: @{e['full_data_run']} names no run given before it; give LABEL=RUN for it first")
            full_oracle = by_label[e["full_data_run"]]["oracle_acc"]
            for r in e["rules"].values():
                r["regret_vs_full_data"] = None if r["test_acc"] is None else r["test_acc"] - full_oracle

    (here / "replay.json").write_text(json.dumps(results, indent=2) + "\n")
    names = list(RULES)
    lines = ["| run | oracle (epoch) | last | " + " | ".join(names) + " |", "|---" * (3 + len(names)) + "|"]
    for e in results:
        cells = []
        for name in names:
            r = e["rules"].get(name)
            cells.append("—" if r is None or r["selected_epoch"] is None
                         else f"{100 * r['regret']:+.1f} (ep {r['selected_epoch']})")
        lines.append(f"| {e['run']} | {100 * e['oracle_acc']:.1f} ({e['oracle_epoch']}) | "
                     f"{100 * e['last_regret']:+.1f} | " + " | ".join(cells) + " |")


    def spread(values: list[float]) -> str:
        values = [100 * v for v in values if v is not None]
        if not values:
            return "—"
        return f"{statistics.mean(values):+.1f}" + (f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else "") \
            + f" ({len(values)})"


    lines.append("| **mean ± sd (runs)** | | " + spread([e["last_regret"] for e in results]) + " | "
                 + " | ".join(spread([e["rules"][n]["regret"] for e in results if n in e["rules"]
                                      and e["rules"][n]["selected_epoch"] is not None]) for n in names) + " |")
    versus_full = [(e["run"], e["full_data_run"], r) for e in results for n, r in e["rules"].items()
                   if n == "val" and r.get("regret_vs_full_data") is not None]
    if versus_full:
        lines += ["", "| validation-split run | full-data run | val selects | test RA | − own oracle "
                  "| − full-data oracle |", "|---|---|---|---|---|---|"]
        lines += [f"| {run} | {full} | {r['selected_epoch']} | {100 * r['test_acc']:.1f} | {100 * r['regret']:+.1f} | "
                  f"{100 * r['regret_vs_full_data']:+.1f} |" for run, full, r in versus_full]
    (here / "replay.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    # one grey dot per run (replay.md names them), the mean over runs as a black bar, n under every column
    MARKERS, LINES = "os^", ["-", "--", ":"]
    colours = colormaps["tab20"]

    fig = Figure(figsize=(10, 4.2), layout="constrained")
    ax = fig.subplots()
    columns = ["last"] + [n for n in names if any(n in e["rules"] for e in results)]
    counts = []
    for j, column in enumerate(columns):
        values = [e["last_regret"] if column == "last" else e["rules"].get(column, {}).get("regret") for e in results]
        values = [100 * v for v in values if v is not None]
        counts.append(len(values))
        xs = [j + (i - len(values) / 2) * 0.5 / max(len(values), 1) for i in range(len(values))]
        ax.scatter(xs, values, s=14, color="grey", alpha=0.6)
        if values:
            ax.plot([j - 0.35, j + 0.35], [sum(values) / len(values)] * 2, color="black", lw=2)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(range(len(columns)), [f"{textwrap.fill(c, 10)}\n(n = {n})" for c, n in zip(columns, counts)],
                  fontsize=9)
    ax.set(ylabel="selected − oracle (points of\ntest robust accuracy)",
           title="What each rule gives up against the best test checkpoint (grey: a run; black: the mean)")
    ax.grid(alpha=0.3)
    fig.savefig(here / "replay.png", dpi=110)

    # The signals themselves beside the test robust accuracy they are meant to anticipate (dot: the oracle epoch).
    signals = [("test_robust_acc", "test robust accuracy (%)", 100),
               ("small_loss_share", "small_loss_share: share of\ntraining losses < 0.5", 1),
               ("train_cas", "train_cas: CAS of the training\nadversarial examples", 1),
               ("unlabelled_stability", "unlabelled_stability: share of\npredictions an attack cannot change (%)", 100),
               ("unlabelled_cas", "unlabelled_cas: CAS of attacked\nunlabelled inputs by prediction", 1)]
    signals = [s for s in signals if any(r.get(s[0]) is not None for e in results for r in load(Path(e["path"])))]
    columns = 3
    fig = Figure(figsize=(13, 3.6 * -(-(len(signals) + 1) // columns)), layout="constrained")
    grid = fig.subplots(-(-(len(signals) + 1) // columns), columns, squeeze=False).flatten()
    panels, spare = grid[:len(signals)], grid[len(signals):]
    for i, e in enumerate(results):
        rows = load(Path(e["path"]))
        for ax, (key, _, scale) in zip(panels, signals):
            points = [(r["epoch"], scale * r[key]) for r in rows if r.get(key) is not None]
            if not points:
                continue
            ax.plot(*zip(*points), color=colours(i % 20), lw=1, ls=LINES[i // 20 % 3], label=e["run"])
            at_oracle = [y for x, y in points if x == e["oracle_epoch"]]
            if at_oracle:
                ax.scatter([e["oracle_epoch"]], at_oracle, color=colours(i % 20), s=18, zorder=3,
                           marker=MARKERS[i // 20 % 3])
    for ax, (_, title, _) in zip(panels, signals):
        ax.set(xlabel="epoch", ylabel=title)
        ax.grid(alpha=0.3)
    for ax in spare:
        ax.axis("off")
    spare[0].legend(*panels[0].get_legend_handles_labels(), fontsize=7, loc="center", title="dot: oracle epoch")
    fig.savefig(here / "signals.png", dpi=110)


if __name__ == "__main__":
    main()
