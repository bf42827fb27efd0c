"""Recompute the numbers of the study pages from the committed runs and say where a page disagrees.

    python docs/studies/check_numbers.py        # exit 1 and one line per disagreement

Tables are checked cell by cell: each checked table names, per row, the run it reports, and each column has
a definition over that run's ``summary.json`` and ``metrics.jsonl``; a cell agrees when it equals the
recomputed value at the precision it is printed with. Sentences are checked as templates: the page must
contain the text the template makes from the recomputed values. The test suite runs this check.

Coverage: on a page of ``COVERED`` every number (outside commands, code, links and headings) must stand in a
cell or a sentence a check confirmed, or in a phrase ``INPUTS`` names as a setting or an input; any other
number fails the check, so a number changed or added anywhere on the page is caught (tests/test_docs.py
changes one of each kind). For the other pages the script counts the numbers not yet accounted for.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STUDIES = ROOT / "docs" / "studies"


@dataclass(frozen=True)
class Run:
    path: Path

    @property
    def summary(self) -> dict:
        return json.loads((self.path / "summary.json").read_text())

    @property
    def rows(self) -> list[dict]:
        return [json.loads(line) for line in (self.path / "metrics.jsonl").read_text().splitlines() if line.strip()]

    @property
    def evaluated(self) -> list[dict]:
        return [r for r in self.rows if r.get("test_robust_acc") is not None]

    def mean_robust(self, first: int, last: int) -> float:
        values = [r["test_robust_acc"] for r in self.evaluated if first <= r["epoch"] <= last]
        return 100 * sum(values) / len(values)

    def row(self, epoch: int) -> dict:
        return next(r for r in self.rows if r["epoch"] == epoch)

    def training_epoch_seconds(self) -> float:
        """Mean seconds of the epochs without a test evaluation: the training step's own cost."""
        return statistics.mean(r["seconds"] for r in self.rows if r.get("test_robust_acc") is None)

    def window_gap(self) -> float:
        """Points between the best mean over k consecutive evaluations and the mean of the last k, where the
        last k are the evaluations of the last 10 % of the epochs (recomputed, whatever the summary says)."""
        robust = [r["test_robust_acc"] for r in self.evaluated]
        k = max(1, sum(r["epoch"] > 0.9 * self.evaluated[-1]["epoch"] for r in self.evaluated))
        means = [statistics.mean(robust[i:i + k]) for i in range(len(robust) - k + 1)]
        return 100 * (max(means) - means[-1])


@cache
def run(relative: str) -> Run:
    path = ROOT / relative
    if not (path / "summary.json").is_file():
        raise SystemExit(f"check_numbers: {relative} holds no finished run (summary.json)")
    return Run(path)


def pct(key: str) -> Callable[[Run], list[float]]:
    return lambda r: [100 * r.summary[key]]


# a column header -> the values its cells print, in order, from the row's run
COLUMNS: dict[str, Callable[[Run], list[float]]] = {
    "best epoch": lambda r: [r.summary["best_epoch"]],
    "RA Best": pct("best_robust_acc"), "RA best": pct("best_robust_acc"), "best RA %": pct("best_robust_acc"),
    "best RA % (epoch)": lambda r: [100 * r.summary["best_robust_acc"], r.summary["best_epoch"]],
    "RA Final": pct("last_robust_acc"), "RA last": pct("last_robust_acc"), "last RA %": pct("last_robust_acc"),
    "RA Diff": pct("robust_gap"), "RA gap": pct("robust_gap"), "gap": pct("robust_gap"),
    "SA Best": pct("best_clean_acc"), "best clean %": pct("best_clean_acc"),
    "SA Final": pct("last_clean_acc"), "SA last": pct("last_clean_acc"), "last clean %": pct("last_clean_acc"),
    "SA Diff": pct("clean_gap"),
    "CAS best": lambda r: [r.summary["cas_best"]], "CAS last": lambda r: [r.summary["cas_last"]],
    "ΔCAS": lambda r: [r.summary["delta_cas"]],
    "CAS best → last": lambda r: [r.summary["cas_best"], r.summary["cas_last"]],
    "s": lambda r: [r.summary["total_seconds"]],
    "final train RA %": pct("final_train_robust_acc"),
    "best window % (epochs)": lambda r: [100 * r.summary["best_window_robust_acc"], *r.summary["best_window_epochs"]],
    "last window %": pct("last_window_robust_acc"), "window gap": lambda r: [r.window_gap()],
    "s per training epoch": lambda r: [r.training_epoch_seconds()],
}
# per-epoch tables: a row is an epoch of one run
EPOCH_COLUMNS: dict[str, Callable[[dict], list[float]]] = {
    "epoch": lambda row: [row["epoch"]], "lr": lambda row: [row["lr"]],
    "train RA": lambda row: [100 * row["train_robust_acc"]], "test clean": lambda row: [100 * row["test_clean_acc"]],
    "test RA (PGD-10)": lambda row: [100 * row["test_robust_acc"]], "CAS": lambda row: [row["cas"]],
}


def column(header: str) -> Callable[[Run], list[float]] | None:
    window = re.fullmatch(r"mean RA, epochs (\d+)–(\d+)", header)
    if window:
        return lambda r: [r.mean_robust(int(window[1]), int(window[2]))]
    return COLUMNS.get(header)


NUMBER = re.compile(r"[−+-]?\d[\d,]*(?:\.\d+)?")


def numbers(cell: str) -> list[tuple[float, int]]:
    """The numbers a cell prints with their decimals (footnote marks ¹ ² and emphasis ignored)."""
    found = []
    for text in NUMBER.findall(cell.replace("**", "")):
        plain = text.replace("−", "-").replace(",", "")
        found.append((float(plain), len(plain.partition(".")[2])))
    return found


def agrees(printed: tuple[float, int], value: float) -> bool:
    shown, decimals = printed
    return abs(shown - value) <= 0.5 * 10 ** -decimals + 1e-9


def tables(page: str) -> list[list[list[str]]]:
    """The markdown tables of a page: rows of stripped cells, the header first, the rule line dropped."""
    found, current = [], []
    for line in (ROOT / page).read_text().splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def table(page: str, first_header: str) -> list[list[str]]:
    for candidate in tables(page):
        if candidate[0][0] == first_header:
            return candidate
    raise SystemExit(f"check_numbers: {page} has no table whose first header is {first_header!r}")


problems: list[str] = []


def check_row(page: str, cells: list[str], header: list[str], values: dict[str, list[float]]) -> None:
    """Each cell of a row against ``values`` (column header -> what its cell prints; absent: not checked)."""
    for name, cell in zip(header[1:], cells[1:]):
        expected = values.get(name)
        if expected is None or cell in ("", "–", "—"):
            continue
        printed = numbers(cell)[: len(expected)]
        if len(printed) < len(expected) or not all(agrees(p, v) for p, v in zip(printed, expected)):
            shown = ", ".join(f"{v:.4g}" for v in expected)
            problems.append(f"{page}: row {cells[0]!r}, column {name!r} prints {cell!r}; the data give {shown}")
        else:
            confirm_cell(page, cells, header.index(name), len(expected))
    confirm_cell(page, cells, 0, None)  # the row's label: which run (or setting) the row reports


def run_values(header: list[str], r: Run) -> dict[str, list[float]]:
    return {name: f(r) for name in header if (f := column(name))}


def check_table(page: str, first_header: str, runs: dict[str, str]) -> None:
    """Every row of the table whose first header is ``first_header``; ``runs`` maps row labels to run folders."""
    rows = table(page, first_header)
    header = rows[0]
    for cells in rows[1:]:
        label = cells[0]
        if label not in runs:
            problems.append(f"{page}: row {label!r} of the {first_header!r} table names no run to check it against")
            continue
        check_row(page, cells, header, run_values(header, run(runs[label])))


def check_epoch_table(page: str, relative: str) -> None:
    rows = table(page, "epoch")
    r = run(relative)
    for cells in rows[1:]:
        row = r.row(int(cells[0]))
        check_row(page, cells, rows[0], {name: f(row) for name, f in EPOCH_COLUMNS.items()})


def check_mean_table(page: str, first_header: str, groups: dict[str, list[str]]) -> None:
    """mean ± sd over each row's runs (sample standard deviation)."""
    rows = table(page, first_header)
    header = rows[0]
    for cells in rows[1:]:
        members = [run_values(header, run(p)) for p in groups[cells[0]]]
        values = {"runs": [len(members)]}
        for name in members[0]:  # "a ± b → c ± d": each value's mean, then its sd
            series = list(zip(*(m[name] for m in members)))
            values[name] = [x for values_ in series for x in (statistics.mean(values_), statistics.stdev(values_))]
        check_row(page, cells, header, values)


def says(page: str, text: str) -> None:
    """The page contains ``text`` (made from recomputed values)."""
    if text not in re.sub(r"\s+", " ", (ROOT / page).read_text()):
        problems.append(f"{page}: expected the text {text!r} (recomputed from the data)")
    else:
        confirm(page, text)


def holds(page: str, condition: bool, claim: str) -> None:
    """A comparison the page states, recomputed."""
    if not condition:
        problems.append(f"{page}: the page says {claim}; the data do not")


def last_ten(r: Run) -> float:
    """Mean test robust accuracy (%) over the run's last ten evaluations."""
    return 100 * statistics.mean(row["test_robust_acc"] for row in r.evaluated[-10:])


def mean_sd(values: list[float], digits: int = 2) -> str:
    """``mean ± sd`` (sample standard deviation) as the pages print it; thousands separated without decimals."""
    form = f",.{digits}f" if digits == 0 else f".{digits}f"
    return f"{statistics.mean(values):{form}} ± {statistics.stdev(values):{form}}"


def f1(x: float) -> str:
    return f"{x:.1f}"


def signed(x: float, digits: int = 2) -> str:
    return f"{x:+.{digits}f}".replace("-", "−")


# ---------------------------------------------------------------------------------------------------------------
S = "docs/studies/"
PGD, SEED_STREAMS = S + "cpu_pgd_at", S + "cpu_pgd_at_seed_streams"
REMEDIES = {"cpu_pgd_at": PGD, "cpu_swa": S + "cpu_swa", "cpu_kd": S + "cpu_kd", "cpu_awp": S + "cpu_awp",
            "cpu_rwp": S + "cpu_rwp"}
EPS = {"epsilon-2_255": S + "cpu_eps/epsilon-2_255", "epsilon-4_255": S + "cpu_eps/epsilon-4_255", "cpu_pgd_at": PGD}
CC = S + "cross_class_regularizer/"
EW = S + "early_warning/runs/"


def cpu_pgd_at() -> None:
    page = S + "cpu_pgd_at.md"
    check_epoch_table(page, PGD)
    s = run(PGD).summary
    says(page, f"peaks at **{100 * s['best_robust_acc']:.1f} % (epoch {s['best_epoch']})** and ends at "
               f"**{100 * s['last_robust_acc']:.1f} %** (gap {100 * s['robust_gap']:.1f} points)")
    says(page, f"**CAS at the best checkpoint exceeds CAS at the last: {s['cas_best']:.2f} vs {s['cas_last']:.2f}, "
               f"ΔCAS = {s['delta_cas']:+.2f}**")
    says(page, f"{run(PGD).summary['total_seconds']:,.0f} s of training and evaluation")
    r = run(PGD)
    says(page, f"on a 2-core CPU (about {s['total_seconds'] / 60:.0f} minutes;")
    best, last = r.row(s["best_epoch"]), r.rows[-1]
    says(page, f"climbs from {100 * best['train_robust_acc']:.0f} % at the best epoch to "
               f"{100 * last['train_robust_acc']:.0f} % at the last")
    says(page, f"Clean accuracy keeps rising ({100 * best['test_clean_acc']:.1f} → "
               f"{100 * last['test_clean_acc']:.1f} %)")
    import yaml

    paper = yaml.safe_load((ROOT / "configs/papers/wei2025_cifar10_pgd_at.yaml").read_text())["reported"]
    says(page, f"({paper['cas_best']} vs {paper['cas_last']} on full CIFAR-10 on a GPU, its Table 1 at 8/255)")
    says(page, f"at the best epoch {paper['best_epoch']})")
    early = r.row(10)
    says(page, f"epoch 10 CAS {early['cas']:.2f} (RA {100 * early['test_robust_acc']:.1f} %), best "
               f"{s['cas_best']:.2f} (RA {100 * s['best_robust_acc']:.1f} %), last {s['cas_last']:.2f} "
               f"(RA {100 * s['last_robust_acc']:.1f} %)")
    peak = max((row for row in r.rows if row.get("cas") is not None), key=lambda row: row["cas"])
    says(page, f"({peak['cas']:.1f} at epoch {peak['epoch']})")
    says(page, f"the best checkpoint (epoch {s['best_epoch']}) comes early")
    says(page, f"With {json.loads((r.path / 'data.json').read_text())['train_examples']:,} training images")
    says(page, f"consecutive evaluations differ by {cas_noise(r):.2f} on average ({cas_noise(r, after=50):.2f} after "
               f"epoch 50")


def cas_noise(r: Run, after: int = 0) -> float:
    """The mean absolute difference of CAS between consecutive evaluations (from epoch ``after`` on)."""
    cas = [(row["epoch"], row["cas"]) for row in r.rows if row.get("cas") is not None]
    return statistics.mean(abs(b - a) for (e, a), (_, b) in zip(cas, cas[1:]) if e >= after)


def comparison_pages() -> None:
    check_table(S + "cpu_eps/compared.md", "run", EPS)
    check_table(S + "cpu_remedies/compared.md", "run", REMEDIES)
    check_table(S + "cpu_mart.md", "run", {
        "PGD-AT, replicate A (`cpu_pgd_at`)": PGD, "PGD-AT, replicate B (`cpu_pgd_at_seed_streams`)": SEED_STREAMS,
        "**MART** (`cpu_mart`)": S + "cpu_mart"})
    page = "docs/reproduction.md"
    check_table(page, "method", {"PGD-AT": PGD, "+ SWA": S + "cpu_swa", "+ KD (std & adv)": S + "cpu_kd",
                                 "+ AWP (γ 0.01)": S + "cpu_awp", "+ RWP (γ 0.01, c_min 1.7)": S + "cpu_rwp"})
    first = table(page, "")
    check_row(page, first[1], first[0], run_values(first[0], run(PGD)))
    awp, rwp = run(S + "cpu_awp"), run(S + "cpu_rwp")
    says(page, f"training robust accuracy ends at {100 * awp.summary['final_train_robust_acc']:.1f} % (AWP) and "
               f"{100 * rwp.summary['final_train_robust_acc']:.1f} % (RWP)")
    five = [run(p) for p in REMEDIES.values()]  # PGD-AT, SWA, KD, AWP, RWP
    by_best = sorted(five, key=lambda r: -r.summary["cas_best"])
    holds(page, by_best[:2] == [awp, rwp], "AWP then RWP have the highest CAS at the best checkpoint")
    says(page, f"AWP has the highest CAS of the five ({awp.summary['cas_best']:.2f}) and RWP the next "
               f"({rwp.summary['cas_best']:.2f})")
    holds(page, max(five, key=lambda r: r.summary["cas_last"]) == rwp, "RWP has the highest CAS at the last")
    says(page, f"At the last checkpoint the order changes: RWP {rwp.summary['cas_last']:.2f}, AWP "
               f"{awp.summary['cas_last']:.2f}")
    says(page, "gap " + " / ".join(f1(100 * r.summary["robust_gap"]) for r in five) + " vs ΔCAS "
         + " / ".join(signed(r.summary["delta_cas"], 1) for r in five))
    says(page, "mean of the last ten evaluations " + " and ".join(f"{last_ten(r):.2f}" for r in (awp, rwp))
         + f" vs {last_ten(run(PGD)):.2f} %")
    swa, kd = run(S + "cpu_swa"), run(S + "cpu_kd")
    says(page, "mean robust accuracy is " + f"{last_ten(run(PGD)):.2f} % (PGD-AT), {last_ten(swa):.2f} % (SWA) and "
               f"{last_ten(kd):.2f} % (KD)")
    after = statistics.mean(100 * r["test_robust_acc"] for r in swa.evaluated if r["epoch"] >= 52)
    says(page, f"over epochs 52–100 its mean is {after:.1f} % ({last_ten(swa):.2f} % over the last ten evaluations)")
    from_50 = statistics.mean(100 * r["test_robust_acc"] for r in rwp.evaluated if r["epoch"] >= 50)
    says(page, f"from epoch 50 on its mean is {from_50:.1f} %")
    says(page, f"ΔCAS {signed(run(SEED_STREAMS).summary['delta_cas'])} vs {signed(run(PGD).summary['delta_cas'])}")
    protocol = [run(S + p).summary["total_seconds"] for p in ("cpu_pgd_at", "precision/fp32-s0", "precision/fp32-s1")]
    says(page, f"One PGD-AT run took {min(protocol) / 60:.0f}–{max(protocol) / 60:.0f} minutes on 2 CPU cores "
               f"({min(protocol):,.0f}–{max(protocol):,.0f} s")


def paper(name: str) -> dict:
    """A paper preset's reported numbers (configs/papers/NAME.yaml)."""
    import yaml

    return yaml.safe_load((ROOT / "configs/papers" / f"{name}.yaml").read_text())["reported"]


def reproduction_page() -> None:
    """docs/reproduction.md beyond its tables: the demo's and the studies' prose, the papers' numbers against
    their presets, the ε table, the theory figures' numbers against theory.json."""
    import yaml

    page = "docs/reproduction.md"
    shared = [
        run(p).summary["total_seconds"]
        for p in (SEED_STREAMS, EW + "pgd_at_eps8_seed1", EW + "pgd_at_eps8_seed0_subset2")
    ]
    says(page, f"and {min(shared):,.0f}–{max(shared):,.0f} s with one thread while another run shared the cores")
    # the demo
    demo = yaml.safe_load((ROOT / "atlens/presets/demo.yaml").read_text())
    seeds = [run(S + f"demo/seed-{seed}") for seed in range(3)]
    examples = json.loads((seeds[0].path / "data.json").read_text())["eval_examples"]
    says(
        page,
        f"PGD-AT (L∞ ε = {demo['attack']['epsilon']}, PGD-{demo['attack']['steps']}) on {demo['data']['per_class']} "
        f"digits per class of scikit-learn's digits with {100 * demo['data']['label_noise']:.0f} % of the training "
        f"labels replaced by random other classes, PreActResNet-18 width {demo['model']['width']}, "
        f"{demo['optim']['epochs']} epochs, PGD-{demo['eval']['steps']} accuracy and CAS on the {examples} test "
        f"digits every {demo['eval']['every']} epochs",
    )
    k = {
        len(range(s.summary["best_window_epochs"][0], s.summary["best_window_epochs"][1] + 1, demo["eval"]["every"]))
        for s in seeds
    }
    says(page, f"over the last {k.pop()} evaluations (the last tenth of the epochs)")
    machines = {
        (s.summary["machine"]["cores"], s.summary["machine"]["cpu"], s.summary["machine"]["isa"]) for s in seeds
    }
    holds(page, len(machines) == 1, "the demo's seeds ran on one kind of machine")
    cores, cpu, isa = machines.pop()
    says(page, f"(s: training and evaluation time in the run's summary, {cores} CPU cores, {cpu}, {isa}.)")
    best = [s.summary["best_epoch"] for s in seeds]
    holds(page, all(abs(b - 20) <= 2 for b in best), "test robust accuracy peaks around epoch 20 at every seed")
    holds(
        page,
        all(b < demo["optim"]["milestones"][0] * demo["optim"]["epochs"] for b in best),
        "the demo peaks before the first decay",
    )
    says(page, f"peaks around epoch 20, at the learning rate of {demo['optim']['lr']}")
    window = [100 * s.summary["window_robust_gap"] for s in seeds]
    says(page, f"and falls by {min(window):.0f}–{max(window):.0f} points (windowed)")
    peaks = [max(s.rows, key=lambda r: (r["train_robust_acc"], -r["epoch"])) for s in seeds]
    says(
        page,
        f"rises to a peak of {100 * min(p['train_robust_acc'] for p in peaks):.1f}–"
        f"{100 * max(p['train_robust_acc'] for p in peaks):.1f} % (at seed 0 at epoch {peaks[0]['epoch']}, ending "
        f"at {100 * seeds[0].summary['final_train_robust_acc']:.1f} %)",
    )
    rise = [s.summary["cas_last"] - s.summary["cas_best"] for s in seeds]
    says(
        page,
        f"higher at the last checkpoint than at the best one by {rise[0]:.2f} and {rise[1]:.2f} at seeds 0 and 1, "
        f"and by {rise[2]:.2f} at seed 2, within the ±{cas_noise(run(PGD)):.1f} that CAS moves between evaluations",
    )
    # 1. PGD-AT against the CAS paper
    wei = paper("wei2025_cifar10_pgd_at")
    epochs = yaml.safe_load((ROOT / "configs/papers/wei2025_cifar10_pgd_at.yaml").read_text())["optim"]["epochs"]
    first = table(page, "")
    row = next(c for c in first if c[0].startswith("CAS paper"))
    check_row(
        page,
        row,
        first[0],
        {
            "RA Best": [wei["best_robust_acc"]],
            "RA Final": [wei["last_robust_acc"]],
            "RA Diff": [wei["best_robust_acc"] - wei["last_robust_acc"]],
            "CAS best": [wei["cas_best"]],
            "CAS last": [wei["cas_last"]],
            "ΔCAS": [wei["delta_cas"]],
        },
    )
    says(page, f"CAS paper, CIFAR-10 (epoch {wei['best_epoch']} / {epochs})")
    a = run(PGD)
    sa = a.summary
    says(page, f"measured (epoch {sa['best_epoch']} / {sa['epochs']})")
    best_row, last_row = a.row(sa["best_epoch"]), a.rows[-1]
    says(
        page,
        f"test robust accuracy peaks at epoch {sa['best_epoch']} and loses {100 * sa['robust_gap']:.1f} points by "
        f"the end while training robust accuracy rises from {100 * best_row['train_robust_acc']:.0f} % to "
        f"{100 * last_row['train_robust_acc']:.0f} %",
    )
    cas = [(r["epoch"], r["cas"]) for r in a.rows if r.get("cas") is not None]
    top = max(cas, key=lambda c: c[1])
    says(
        page,
        f"but by {sa['delta_cas']:.1f}, not {wei['delta_cas']}: at this scale CAS is highest in the first epochs "
        f"({top[1]:.1f} at epoch {top[0]})",
    )
    says(page, f"(epoch 10: {a.row(10)['cas']:.1f} here, {wei['epoch10_cas']} < {wei['cas_best']} in the paper)")
    # 2. the ε study
    eps = {"2/255": S + "cpu_eps/epsilon-2_255", "4/255": S + "cpu_eps/epsilon-4_255", "8/255": PGD}
    reported = {
        "2/255": paper("wei2025_cifar10_pgd_at_eps2")["delta_cas"],
        "4/255": paper("wei2025_cifar10_pgd_at_eps4")["delta_cas"],
        "8/255": wei["delta_cas"],
    }
    rows = table(page, "ε")
    for cells in rows[1:]:
        r = run(eps[cells[0]])
        check_row(
            page,
            cells,
            rows[0],
            {
                **run_values(rows[0], r),
                "mean RA, last 10 evals": [last_ten(r)],
                "final train RA": [100 * r.summary["final_train_robust_acc"]],
                "paper ΔCAS": [reported[cells[0]]],
            },
        )
    three = [run(eps[e]) for e in ("2/255", "4/255", "8/255")]
    gaps = [100 * r.summary["robust_gap"] for r in three]
    holds(page, all(r.summary["delta_cas"] > 0 for r in three), "ΔCAS > 0 at every ε")
    says(page, f"(robust gap {min(gaps):.1f}–{max(gaps):.1f} points)")
    says(page, "The paper's ΔCAS rises " + " → ".join(str(reported[e]) for e in ("2/255", "4/255", "8/255")))
    says(
        page,
        "the gap is "
        + " / ".join(f"{g:.1f}" for g in gaps)
        + " and ΔCAS "
        + " / ".join(f"{r.summary['delta_cas']:+.1f}" for r in three)
        + " for ε = 2 / 4 / 8 /255",
    )
    says(page, f"(sd {100 * (0.25 * 0.75 / 1000) ** 0.5:.1f} points for an accuracy near 25 %)")
    trained = [100 * r.summary["final_train_robust_acc"] for r in three]
    says(
        page,
        f"(final training robust accuracy {trained[0]:.0f} % at 2/255, {trained[1]:.0f} % at 4/255 vs "
        f"{trained[2]:.0f} % at 8/255)",
    )
    late = [{r["epoch"]: r["cas"] for r in x.rows if r.get("cas") is not None and r["epoch"] >= 30} for x in three]
    holds(
        page, all(late[0][e] == min(d[e] for d in late) for e in late[0]), "from epoch 30 on 2/255 has the lowest CAS"
    )
    says(page, "(final " + " / ".join(f"{r.summary['cas_last']:.1f}" for r in three) + " for 2 / 4 / 8 /255)")
    # 3. the remedies
    swa, kd, awp, rwp = (run(S + p) for p in ("cpu_swa", "cpu_kd", "cpu_awp", "cpu_rwp"))
    says(page, f"(its best checkpoint, epoch {sa['best_epoch']};")
    says(page, f"(clean test accuracy {100 * run(S + 'cpu_kd/teachers/std').summary['best_clean_acc']:.1f} %)")
    says(page, f"({swa.summary['total_seconds'] / 60:.0f} and {kd.summary['total_seconds'] / 60:.0f} minutes,")
    chen = {name: paper(f"chen2021_cifar10_{name}") for name in ("pgd_at", "swa", "kd")}

    def best_final_diff(r: dict) -> str:
        best, last = r["best_robust_acc"], r["last_robust_acc"]
        return f"{best:.2f} / {last:.2f} / {best - last:.2f}"

    says(
        page,
        f"PGD-AT {best_final_diff(chen['pgd_at'])}, + SWA {best_final_diff(chen['swa'])}, + KD std&adv "
        f"{best_final_diff(chen['kd'])} (RA Best / Final / Diff)",
    )
    says(
        page,
        f"{100 * sa['robust_gap']:.1f} → {100 * swa.summary['robust_gap']:.1f} points with SWA and → "
        f"{100 * kd.summary['robust_gap']:.1f} with KD, by raising the final robust accuracy "
        f"({100 * sa['last_robust_acc']:.1f} → {100 * swa.summary['last_robust_acc']:.1f} and "
        f"{100 * kd.summary['last_robust_acc']:.1f} %)",
    )
    bests = [100 * r.summary["best_robust_acc"] for r in (a, swa, kd)]
    says(
        page,
        f"within noise ({min(bests):.1f}–{max(bests):.1f} %; ±"
        f"{100 * (0.236 * 0.764 / 1000) ** 0.5:.1f} points on 1,000 test images)",
    )
    paper_gaps = [c["best_robust_acc"] - c["last_robust_acc"] for c in chen.values()]
    says(page, "(" + f"{paper_gaps[0]:.1f} → {paper_gaps[1]:.1f} / {paper_gaps[2]:.1f}" + ")")
    says(
        page,
        f"(final {100 * kd.summary['last_clean_acc']:.1f} vs {100 * sa['last_clean_acc']:.1f} %), as in Chen et al. "
        f"({chen['kd']['last_clean_acc']:.2f} vs {chen['pgd_at']['last_clean_acc']:.2f} %)",
    )
    averaged = [r for r in swa.evaluated if r["epoch"] > 50]
    top_swa = max(averaged, key=lambda r: (r["test_robust_acc"], -r["epoch"]))
    start = yaml_config(S + "cpu_swa")["optim"]["milestones"][0] * swa.summary["epochs"]
    says(
        page,
        f"SWA's best checkpoint (epoch {swa.summary['best_epoch']}) predates the averaging, which starts after the "
        f"first decay (epoch {start:.0f}): the averaged model's best is {100 * top_swa['test_robust_acc']:.1f} % "
        f"(epoch {top_swa['epoch']}); over epochs {averaged[0]['epoch']}–",
    )
    wei_kd = paper("wei2025_cifar10_pgd_at_kd")
    says(
        page,
        f"(best {wei_kd['cas_best']}, last {wei_kd['cas_last']}, ΔCAS {wei_kd['delta_cas']} vs {wei['delta_cas']} for "
        f"PGD-AT)",
    )
    says(
        page,
        f"({kd.summary['cas_best']:.1f} → {kd.summary['cas_last']:.1f}) and the *largest* ΔCAS "
        f"({kd.summary['delta_cas']:+.1f})",
    )
    yu = {name: paper(f"yu2022_cifar10_linf_{name}") for name in ("at", "awp", "rwp")}
    says(
        page,
        f"(AT {yu['at']['best_robust_acc']} / {yu['at']['last_robust_acc']}, AWP {yu['awp']['best_robust_acc']} / "
        f"{yu['awp']['last_robust_acc']}, RWP {yu['rwp']['best_robust_acc']} / {yu['rwp']['last_robust_acc']} best "
        f"/ last on CIFAR-10 L∞)",
    )
    says(
        page,
        f"({100 * awp.summary['last_robust_acc']:.1f} and {100 * rwp.summary['last_robust_acc']:.1f} % vs "
        f"{100 * sa['last_robust_acc']:.1f} %;",
    )
    says(
        page,
        f"the highest best accuracy ({100 * awp.summary['best_robust_acc']:.1f} and "
        f"{100 * rwp.summary['best_robust_acc']:.1f} %)",
    )
    ranked = sorted(rwp.evaluated, key=lambda r: -r["test_robust_acc"])
    says(
        page,
        f"AWP's gap is the smallest ({100 * awp.summary['robust_gap']:.1f} points); RWP's "
        f"{100 * rwp.summary['robust_gap']:.1f} comes from a single high evaluation at epoch {ranked[0]['epoch']} "
        f"({100 * ranked[0]['test_robust_acc']:.1f} %, next-highest {100 * ranked[1]['test_robust_acc']:.1f} % at "
        f"epoch {ranked[1]['epoch']})",
    )
    says(
        page,
        f"RWP and AWP are level ({100 * rwp.summary['last_robust_acc']:.1f} vs "
        f"{100 * awp.summary['last_robust_acc']:.1f} %)",
    )
    fitted = [100 * r.summary["final_train_robust_acc"] for r in (a, swa, kd)]
    says(page, f"against {min(fitted):.0f}–{max(fitted):.0f} % for PGD-AT, SWA and KD")
    says(
        page,
        f"AWP starts slowly ({100 * awp.row(2)['test_robust_acc']:.1f} % robust accuracy at epoch 2 vs "
        f"{100 * a.row(2)['test_robust_acc']:.0f} %",
    )
    rwp_config = yaml_config(S + "cpu_rwp")["perturbation"]
    says(
        page,
        f"Its LSC statistics: {100 * rwp.rows[-1]['loss_below_cmin']:.0f} % of training examples end below c_min = "
        f"{rwp_config['c_min']}, and batches ran "
        f"{statistics.mean(r['rwp_mean_ascent_steps'] for r in rwp.rows):.1f} ascent steps on average",
    )
    says(
        page,
        f"(a {100 * rwp_config['gamma']:.0f} % weight perturbation never lifts a fitted example above "
        f"{rwp_config['c_min']})",
    )
    says(page, f"RWP's ΔCAS is negative ({signed(rwp.summary['delta_cas'])}:")
    # 3b. MART, 3c. outside networks, 3e. extra data: their pages' numbers, in short
    mart, b = run(S + "cpu_mart"), run(SEED_STREAMS)
    says(page, f"(gap {100 * b.summary['robust_gap']:.1f} vs {100 * sa['robust_gap']:.1f} points,")
    says(
        page,
        f"(windowed robust accuracy {mart.mean_robust(12, 30):.1f} → {mart.mean_robust(82, 100):.1f} %; its best − "
        f"last gap of {100 * mart.summary['robust_gap']:.1f} points is what picking the best of "
        f"{len(mart.evaluated)} noisy evaluations gives; last {100 * mart.summary['last_robust_acc']:.1f} % vs "
        f"PGD-AT's {100 * b.summary['last_robust_acc']:.1f} %)",
    )
    says(page, f"(ΔCAS {signed(mart.summary['delta_cas'])})")
    outside = {e["model"]: e for e in json.loads((STUDIES / "outside_models" / "summary.json").read_text())["rows"]}
    tv, tm = outside["torchvision_resnet18"], outside["timm_resnet10t"]
    early = [r["cas"] for r in b.rows if r.get("cas") is not None and r["epoch"] <= 30]
    says(
        page,
        f"({tv['best_cas_outside']:.2f} and {tv['last_cas_outside']:.2f} at the best and last checkpoints for "
        f"torchvision's ResNet-18, {tm['best_cas_outside']:.2f} and {tm['last_cas_outside']:.2f} for timm's, "
        f"between {min(early):.1f} and {max(early):.1f} for PreActResNet-18 over the same "
        f"{run(S + 'outside_models/torchvision_resnet18').summary['epochs']} epochs)",
    )
    says(page, f"trained by atlens for {run(S + 'outside_models/timm_resnet10t').summary['epochs']} epochs")
    # 4. the theory figures
    theory = json.loads((ROOT / "docs/reproduction/theory/theory.json").read_text())
    q, t = theory["parameters"], theory["thresholds"]
    says(page, f"(μ = {q['mu']:g}, σ = {q['sigma']:g}, λ = {q['lambda']:g}, label smoothing β = {q['beta']:g})")
    says(
        page,
        f"ε0 = {t['epsilon0_numerical']:.4f} (closed form {t['epsilon0_closed']:.4f}) and, with label smoothing, at "
        f"ε1 = {t['epsilon1_numerical']:.4f} (closed form {t['epsilon1_closed']:.4f} > ε0)",
    )
    says(page, f"within {100 * theory['max_weight_error_relative_to_scale']:.2f} % of μ/λ")
    ratios = [r["ratio"] for r in theory["cross_entropy_at"]["table"]]
    says(page, f"keeps w2/w1 between {max(ratios):.2f} and {min(ratios):.2f} over the same ε range")


def cross_class() -> None:
    page = S + "cross_class_regularizer.md"
    check_table(page, "seed 0", {
        "PGD-AT": SEED_STREAMS, "+ cross_class, λ = 0.1": CC + "cross_class_w0.1_seed0",
        "+ cross_class, λ = 1": CC + "cross_class_w1_seed0", "+ cross_class, λ = 10": CC + "cross_class_w10_seed0",
        "*for scale:* + KD (replicate with other random draws)": S + "cpu_kd",
        "*for scale:* + SWA (replicate with other random draws)": S + "cpu_swa"})
    seed1 = {"PGD-AT": EW + "pgd_at_eps8_seed1", "+ cross_class, λ = 1": CC + "cross_class_w1_seed1",
             "+ KD": CC + "kd_seed1", "+ SWA": CC + "swa_seed1"}
    check_table(page, "seed 1", seed1)
    subset2 = {"PGD-AT": EW + "pgd_at_eps8_seed0_subset2", "+ cross_class, λ = 1": CC + "cross_class_w1_seed0_subset2",
               "+ KD": CC + "kd_seed0_subset2", "+ SWA": CC + "swa_seed0_subset2"}
    check_table(page, "subset 2", subset2)
    check_mean_table(page, "mean ± sd", {
        "PGD-AT": [SEED_STREAMS, seed1["PGD-AT"], subset2["PGD-AT"]],
        "+ cross_class, λ = 1": [CC + "cross_class_w1_seed0", seed1["+ cross_class, λ = 1"],
                                 subset2["+ cross_class, λ = 1"]],
        "+ KD": [seed1["+ KD"], subset2["+ KD"]], "+ SWA": [seed1["+ SWA"], subset2["+ SWA"]]})


def cross_class_findings() -> None:
    """The prose of the cross-class criterion's page, recomputed from its runs and their attribution matrices."""
    page = S + "cross_class_regularizer.md"
    base0, grid = run(SEED_STREAMS), [run(CC + f"cross_class_w{w}_seed0") for w in ("0.1", "1", "10")]
    kd0, swa0 = run(S + "cpu_kd"), run(S + "cpu_swa")
    minutes = [r.summary["total_seconds"] / 60 for r in run_folders(CC)]
    says(page, f"shared the machine ({min(minutes):.0f}–{max(minutes):.0f} minutes each)")
    says(page, "Test CAS at the last epoch goes " + " → ".join(f"{r.summary['cas_last']:.1f}" for r in [base0, *grid]))
    holds(
        page,
        all(r.summary["cas_last"] > r.summary["cas_best"] for r in grid[1:])
        and base0.summary["cas_last"] < base0.summary["cas_best"],
        "CAS rises for λ ≥ 1 where PGD-AT's falls",
    )
    four = [base0, *grid]
    says(
        page,
        f"best {min(100 * r.summary['best_robust_acc'] for r in four):.1f}–"
        f"{max(100 * r.summary['best_robust_acc'] for r in four):.1f} %, last "
        f"{min(100 * r.summary['last_robust_acc'] for r in four):.1f}–"
        f"{max(100 * r.summary['last_robust_acc'] for r in four):.1f} %",
    )
    seed1 = {
        name: run(path)
        for name, path in (
            ("PGD-AT", EW + "pgd_at_eps8_seed1"),
            ("cc", CC + "cross_class_w1_seed1"),
            ("KD", CC + "kd_seed1"),
            ("SWA", CC + "swa_seed1"),
        )
    }
    sub2 = {
        name: run(path)
        for name, path in (
            ("PGD-AT", EW + "pgd_at_eps8_seed0_subset2"),
            ("cc", CC + "cross_class_w1_seed0_subset2"),
            ("KD", CC + "kd_seed0_subset2"),
            ("SWA", CC + "swa_seed0_subset2"),
        )
    }
    p1 = seed1["PGD-AT"].summary
    says(page, f"(seed 1: {100 * p1['best_robust_acc']:.1f} → {100 * p1['last_robust_acc']:.1f})")
    gaps = [100 * r.summary["robust_gap"] for r in four]
    holds(page, gaps == sorted(gaps, reverse=True), "the gap shrinks monotonically with λ")
    says(page, "The gap shrinks monotonically with λ (" + ", ".join(f"{g:.1f}" for g in gaps) + " points)")
    says(
        page,
        f"KD and SWA close the gap further ({100 * kd0.summary['robust_gap']:.1f}, "
        f"{100 * swa0.summary['robust_gap']:.1f}): KD with a *lower* CAS ({kd0.summary['cas_best']:.1f} → "
        f"{kd0.summary['cas_last']:.1f}), SWA with a CAS above PGD-AT's at both checkpoints "
        f"({swa0.summary['cas_best']:.1f} → {swa0.summary['cas_last']:.1f})",
    )

    def cosines(r: Run) -> list[float]:
        m = json.loads((r.path / "analysis" / "cas-last.json").read_text())["matrix"]
        return [m[i][j] for i in range(len(m)) for j in range(i + 1, len(m))]

    c10, c1, c0 = cosines(grid[2]), cosines(grid[1]), cosines(base0)
    holds(page, min(c1) > 0, "every off-diagonal cosine is positive at λ = 1")
    says(
        page,
        f"every off-diagonal cosine is ≥ {int(min(c10) * 100) / 100:.2f} at λ = 10 (mean "
        f"{statistics.mean(c10):.2f}) and positive at λ = 1 (mean {statistics.mean(c1):.2f}), against "
        f"{100 * sum(c > 0 for c in c0) / len(c0):.0f} % positive (mean {signed(statistics.mean(c0))})".replace(
            "(mean +", "(mean "
        ),
    )
    says(page, f'the best "best" robust accuracy of the grid ({100 * grid[1].summary["best_robust_acc"]:.1f} %)')
    holds(page, max(grid, key=lambda r: r.summary["best_robust_acc"]) is grid[1], "λ = 1 has the grid's best best")
    says(page, f"averaging starts at epoch {seed1['SWA'].summary.get('swa_start', 51)}")
    holds(page, seed1["SWA"].summary["best_epoch"] == p1["best_epoch"], "SWA's best checkpoint is PGD-AT's on seed 1")
    teachers = [
        run(path + "/teachers/std").summary["best_clean_acc"]
        for path in (CC + "kd_seed1", S + "cpu_kd", CC + "kd_seed0_subset2")
    ]
    says(page, f"(its best checkpoint, epoch {p1['best_epoch']}), its standard teacher")
    says(page, f"clean accuracy {100 * teachers[0]:.1f} %; seed 0's: {100 * teachers[1]:.1f} %")
    says(
        page,
        f"(best checkpoint, epoch {sub2['PGD-AT'].summary['best_epoch']}), its standard teacher trained on this "
        f"subset inside the KD run (clean accuracy {100 * teachers[2]:.1f} %)",
    )

    def at(group: dict, name: str, key: str, scale: float = 100) -> float:
        return scale * group[name].summary[key]

    says(
        page,
        f"The criterion triples CAS ({at(seed1, 'cc', 'cas_last', 1):.1f} against "
        f"{at(seed1, 'PGD-AT', 'cas_last', 1):.1f} at the last epoch)",
    )
    says(
        page,
        f"last {at(seed1, 'cc', 'last_robust_acc'):.1f} against {at(seed1, 'PGD-AT', 'last_robust_acc'):.1f} %, "
        f"gap {at(seed1, 'cc', 'robust_gap'):.1f} against {at(seed1, 'PGD-AT', 'robust_gap'):.1f}",
    )
    says(
        page,
        f"KD (which *lowers* CAS: {at(seed1, 'KD', 'cas_last', 1):.1f} against "
        f"{at(seed1, 'PGD-AT', 'cas_last', 1):.1f} at the last epoch) and SWA (whose last CAS, "
        f"{at(seed1, 'SWA', 'cas_last', 1):.1f}, is *above* PGD-AT's)",
    )

    def over(group: dict, name: str, key: str) -> str:
        return f"{at(group, name, key) - at(group, 'PGD-AT', key):+.1f}".replace("-", "−")

    says(
        page,
        f"last robust accuracy {over(seed1, 'KD', 'last_robust_acc')} and {over(seed1, 'SWA', 'last_robust_acc')} "
        f"points over PGD-AT, KD also {over(seed1, 'KD', 'last_clean_acc')} clean",
    )
    says(
        page,
        f"KD's gap is {100 * kd0.summary['robust_gap']:.1f} and {at(seed1, 'KD', 'robust_gap'):.1f} on seeds 0 and 1, "
        f"SWA's {100 * swa0.summary['robust_gap']:.1f} and {at(seed1, 'SWA', 'robust_gap'):.1f}",
    )
    says(page, f"(last {over(sub2, 'cc', 'last_robust_acc')} point)")
    ratio = at(sub2, "cc", "cas_last", 1) / at(sub2, "PGD-AT", "cas_last", 1)
    holds(page, 4 <= ratio <= 5.5, f"the criterion's last CAS is four to five times PGD-AT's on subset 2 ({ratio:.2f})")
    says(
        page,
        f"KD and SWA keep {at(sub2, 'KD', 'last_robust_acc') - at(sub2, 'PGD-AT', 'last_robust_acc'):.1f} and "
        f"{at(sub2, 'SWA', 'last_robust_acc') - at(sub2, 'PGD-AT', 'last_robust_acc'):.1f} points more robust "
        f"accuracy at the last epoch, KD also {over(sub2, 'KD', 'last_clean_acc')} clean; KD lowers CAS "
        f"({at(sub2, 'KD', 'cas_last', 1):.1f} against {at(sub2, 'PGD-AT', 'cas_last', 1):.1f} at the last epoch), "
        f"SWA keeps it above PGD-AT's ({at(sub2, 'SWA', 'cas_last', 1):.1f})",
    )
    pairs = [({"PGD-AT": base0, "cc": grid[1]}), seed1, sub2]
    last_d = [at(g, "cc", "last_robust_acc") - at(g, "PGD-AT", "last_robust_acc") for g in pairs]
    gap_d = [at(g, "cc", "robust_gap") - at(g, "PGD-AT", "robust_gap") for g in pairs]

    def listed(values: list[float]) -> str:
        text = [f"{v:+.1f}".replace("-", "−") for v in values]
        return ", ".join(text[:-1]) + " and " + text[-1]

    says(page, f"changes the last checkpoint's robust accuracy by {listed(last_d)} points and the gap by "
               f"{listed(gap_d)}")
    holds(page, all(d < 0 for d in gap_d), "the criterion's gap is smaller on all three replicates")
    says(page, f"its gap is smaller on all three replicates, by {-statistics.mean(gap_d):.1f} points on average")
    from atlens.report.statistics import WITHIN, difference

    rows = table(page, "method − PGD-AT (paired by replicate)")
    paired = {"+ cross_class, λ = 1": dict(zip(("seed 0", "seed 1", "subset 2"), (grid[1], seed1["cc"], sub2["cc"]))),
              "+ KD": {"seed 1": seed1["KD"], "subset 2": sub2["KD"]},
              "+ SWA": {"seed 1": seed1["SWA"], "subset 2": sub2["SWA"]}}
    base = {"seed 0": base0, "seed 1": seed1["PGD-AT"], "subset 2": sub2["PGD-AT"]}
    found = {}
    for cells in rows[1:]:
        runs = paired[cells[0]]
        values = {"replicates": [len(runs)]}
        for name, key in (("last RA", "last_robust_acc"), ("gap", "robust_gap")):
            d = difference({k: 100 * r.summary[key] for k, r in runs.items()},
                           {k: 100 * base[k].summary[key] for k in runs})
            values[f"{name} (points)"], values[f"{name} 95 % interval"] = [d.value], [d.low, d.high]
            printed = cells[rows[0].index(f"{name} verdict")]
            holds(page, printed == d.verdict, f"{cells[0]}: {name} is {printed!r} (the data: {d.verdict!r})")
            found[cells[0], name] = d
        check_row(page, cells, rows[0], values)
    cc_gap = found["+ cross_class, λ = 1", "gap"]
    windowed = difference({k: r.window_gap() for k, r in paired["+ cross_class, λ = 1"].items()},
                          {k: base[k].window_gap() for k in base})
    holds(page, windowed.verdict == WITHIN, "the criterion's paired windowed-gap interval includes zero")
    says(page, f"(the windowed gap, less sensitive to one evaluation: {windowed.value:+.2f} [{windowed.low:+.2f}, "
               f"{windowed.high:+.2f}], just includes it)".replace("-", "−"))
    holds(page, cc_gap.verdict != WITHIN and cc_gap.high < 0, "the criterion's paired gap interval excludes zero")
    says("docs/reproduction.md", f"the robust gap shrinks by {-cc_gap.value:.2f} points paired (95 % interval "
                                 f"[{cc_gap.low:.2f}, {cc_gap.high:.2f}], three replicates".replace("-", "−"))
    says(page, f"and its gap is {-cc_gap.value:.2f} points smaller, paired")
    kd_d = [
        (
            at(g, "KD", "last_robust_acc") - at(g, "PGD-AT", "last_robust_acc"),
            at(g, "KD", "robust_gap") - at(g, "PGD-AT", "robust_gap"),
        )
        for g in (seed1, sub2)
    ]
    swa_d = [
        (
            at(g, "SWA", "last_robust_acc") - at(g, "PGD-AT", "last_robust_acc"),
            at(g, "SWA", "robust_gap") - at(g, "PGD-AT", "robust_gap"),
        )
        for g in (seed1, sub2)
    ]
    says(
        page,
        f"KD raises the last checkpoint by {listed([d[0] for d in kd_d])} points (gap "
        f"{', '.join(f'{d[1]:+.1f}' for d in kd_d)}), SWA by {listed([d[0] for d in swa_d])} (gap "
        f"{', '.join(f'{d[1]:+.1f}' for d in swa_d)})".replace("-", "−"),
    )
    says(
        page,
        f"replicates ({at(seed1, 'SWA', 'cas_last', 1):.1f} vs {at(seed1, 'PGD-AT', 'cas_last', 1):.1f}, "
        f"{at(sub2, 'SWA', 'cas_last', 1):.1f} vs {at(sub2, 'PGD-AT', 'cas_last', 1):.1f})",
    )
    cc_runs = [grid[1], seed1["cc"], sub2["cc"]]
    rises = [
        r.summary["cas_last"] / b.summary["cas_last"]
        for r, b in zip(cc_runs + [grid[2]], [base0, seed1["PGD-AT"], sub2["PGD-AT"], base0])
    ]
    says(page, f"at the last checkpoint rises {int(min(rises))}–{int(max(rises))}× (λ ≥ 1)")
    teacher_time = [
        run(kd + "/teachers/std").summary["total_seconds"] / run(pgd).summary["total_seconds"]
        for kd, pgd in (
            (CC + "kd_seed1", EW + "pgd_at_eps8_seed1"),
            (CC + "kd_seed0_subset2", EW + "pgd_at_eps8_seed0_subset2"),
        )
    ]
    says(page, f"the standard one {teacher_time[0]:.2f} of its time ({teacher_time[1]:.2f} on subset 2)")
    span = grid[2].summary["cas_last"] / base0.summary["cas_last"]
    says(page, f"The criterion controls CAS, over a {span:.0f}× range")
    gains = [d[0] for d in kd_d + swa_d]
    says(page, f"by {min(gains):.1f}–{max(gains):.1f} points on every replicate they were run on")

    def mean_gap(runs: list[Run]) -> str:
        return mean_sd([100 * r.summary["robust_gap"] for r in runs], 1)

    says(page, f"(gap {mean_gap(cc_runs)} against {mean_gap([base0, seed1['PGD-AT'], sub2['PGD-AT']])})")
    pgd_runs = [base0, seed1["PGD-AT"], sub2["PGD-AT"]]
    says("docs/reproduction.md", f"CAS rises {int(min(rises))}–{int(max(rises))}×, the robust gap shrinks")
    says(page, f"(gap {mean_gap(cc_runs)} against {mean_gap(pgd_runs)})")
    says(page, f"(gap {mean_gap([seed1['KD'], sub2['KD']])} and {mean_gap([seed1['SWA'], sub2['SWA']])})")
    says(
        page, f"(criterion {statistics.mean(gap_d):.1f} ± {statistics.stdev(gap_d):.1f} points paired".replace("-", "−")
    )
    paired_gaps = [d[1] for d in kd_d + swa_d]
    says(page, f"KD and SWA −{-max(paired_gaps):.0f} to −{-min(paired_gaps):.0f} on every replicate")


def run_folders(folder: str) -> list[Run]:
    """Every finished run directly under ``folder``."""
    return [run(str(path.parent.relative_to(ROOT))) for path in sorted((ROOT / folder).glob("*/summary.json"))]


def paired_claims() -> None:
    """Last-checkpoint robust accuracy of KD and SWA over PGD-AT on the paired replicates (seed 1, subset 2)."""
    page = S + "cross_class_regularizer.md"
    pairs = [(EW + "pgd_at_eps8_seed1", CC + "kd_seed1", CC + "swa_seed1"),
             (EW + "pgd_at_eps8_seed0_subset2", CC + "kd_seed0_subset2", CC + "swa_seed0_subset2")]
    gain = {name: [100 * (run(p[i]).summary["last_robust_acc"] - run(p[0]).summary["last_robust_acc"]) for p in pairs]
            for i, name in ((1, "KD"), (2, "SWA"))}
    gap = {name: [100 * (run(p[i]).summary["robust_gap"] - run(p[0]).summary["robust_gap"]) for p in pairs]
           for i, name in ((1, "KD"), (2, "SWA"))}
    says(page, f"checkpoint by {signed(gain['KD'][0], 1)} and {signed(gain['KD'][1], 1)} points (gap "
               f"{signed(gap['KD'][0], 1)}, {signed(gap['KD'][1], 1)}), SWA by {signed(gain['SWA'][0], 1)} and "
               f"{signed(gain['SWA'][1], 1)} (gap {signed(gap['SWA'][0], 1)}, {signed(gap['SWA'][1], 1)})")
    holds(page, all(run(p[2]).summary["cas_last"] > run(p[0]).summary["cas_last"] for p in pairs),
          "SWA's last CAS is above PGD-AT's on both paired replicates")
    holds(page, all(run(p[1]).summary["cas_last"] < run(p[0]).summary["cas_last"] for p in pairs),
          "KD lowers the last CAS on both paired replicates")
    gains = gain["KD"] + gain["SWA"]
    says("docs/reproduction.md", f"by {min(gains):.1f}–{max(gains):.1f} points on every replicate")


def early_warning() -> None:
    """The results table against the rules replayed now over the same runs (replay.json names them)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("replay", STUDIES / "early_warning" / "replay.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the study's own replay, beside its data

    page = S + "early_warning.md"
    recorded = json.loads((STUDIES / "early_warning" / "replay.json").read_text())
    rows = table(page, "run")
    header = rows[0]
    fresh_entries: list[dict] = []
    for entry in recorded:
        fresh = module.replay_run(entry["run"], ROOT / entry["path"], entry["full_data_run"])
        cells = next((c for c in rows if c[0] == entry["run"]), None)
        if cells is None:
            problems.append(f"{page}: no row for the replayed run {entry['run']!r}")
            continue

        values = {"oracle (epoch)": [100 * fresh["oracle_acc"], fresh["oracle_epoch"]],
                  "last": [100 * fresh["last_regret"]],
                  **{name: [100 * rule["regret"], rule["selected_epoch"]] for name, rule in fresh["rules"].items()
                     if rule["selected_epoch"] is not None}}
        check_row(page, cells, header, values)
        fresh_entries.append(fresh)
        kept = {k: v for k, v in entry.items() if k != "path"}
        if {k: v for k, v in fresh.items() if k != "path"} != strip_full_data(kept):
            problems.append(f"{S}early_warning/replay.json: the entry for {entry['run']!r} differs from a fresh replay")
    last = [100 * e["last_regret"] for e in fresh_entries]
    says(page, f"**Not selecting costs {-statistics.mean(last):.1f} ± {statistics.stdev(last):.1f} points** "
               f"({len(last)} runs)")
    holds(page, all(x < 0 for x in last), "the last checkpoint is below the best in every run")
    lsc = [[100 * e["rules"][f"small-loss share {share}"]["regret"] for e in fresh_entries] for share in (0.05, 0.1)]
    says(page, f"gives {statistics.mean(lsc[0]):.1f} ± {statistics.stdev(lsc[0]):.1f} / "
               f"{statistics.mean(lsc[1]):.1f} ± {statistics.stdev(lsc[1]):.1f} against {statistics.mean(last):.1f}"
         .replace("-", "−"))
    early_warning_findings(page, {e["run"]: e for e in fresh_entries}, module)


def early_warning_findings(page: str, entries: dict[str, dict], module) -> None:
    """The prose of the early-warning study: its mean row, the validation table and every finding, from the rules
    replayed now over its runs (``module``: the study's replay.py) and from the runs' logged signals."""
    for e in entries.values():  # what replay.py adds for a validation-split run: the regret against the full run
        if e["full_data_run"]:
            for rule in e["rules"].values():
                rule["regret_vs_full_data"] = rule["test_acc"] - entries[e["full_data_run"]]["oracle_acc"]

    def minus(x: float, digits: int = 1) -> str:
        return f"{x:.{digits}f}".replace("-", "−")

    def regret(label: str, rule: str | None = None, key: str = "regret") -> float:
        e = entries[label]
        return 100 * (e["last_regret"] if rule is None else e["rules"][rule][key])

    def chosen(label: str, rule: str) -> int:
        return entries[label]["rules"][rule]["selected_epoch"]

    def rows(label: str) -> list[dict]:
        return module.load(ROOT / entries[label]["path"])

    # the mean row of the results table: each column's regrets over the runs that have the rule
    header = table(page, "run")[0]
    mean_row = next(c for c in table(page, "run") if c[0].startswith("**mean"))
    values = {"last": [statistics.mean(v := [regret(r) for r in entries]), statistics.stdev(v), len(v)]}
    for name in header[3:]:
        found = [regret(r, name) for r, e in entries.items() if e["rules"].get(name, {}).get("regret") is not None]
        values[name] = [statistics.mean(found), statistics.stdev(found), len(found)]
    check_row(page, mean_row, header, values)
    signals = sum("cas_trend" in e["rules"] for e in entries.values())
    unlabelled = sum("unlabelled" in e["rules"] for e in entries.values())
    says(page, f"{len(entries)} CPU-protocol runs replayed")
    says(page, f"{signals} runs log the training-example signals, {unlabelled} the unlabelled-input ones")
    # the validation-split table
    rows_ = table(page, "validation-split run")
    for cells in rows_[1:]:
        e = entries[cells[0]]
        val = e["rules"]["val"]
        holds(page, cells[1] == e["full_data_run"], f"{cells[0]} is scored against {cells[1]}")
        check_row(
            page,
            cells,
            rows_[0],
            {
                "val selects": [val["selected_epoch"]],
                "test RA": [100 * val["test_acc"]],
                "− own oracle": [100 * val["regret"]],
                "− full-data oracle": [100 * val["regret_vs_full_data"]],
            },
        )
    by_last = sorted(entries, key=lambda r: entries[r]["last_regret"])
    says(page, f"by {minus(-regret(by_last[-1]))} (AWP) to {minus(-regret(by_last[0]))} (PGD-AT 8/255 seed 1) points")
    holds(page, (by_last[-1], by_last[0]) == ("+AWP s0", "PGD-AT 8/255 s1"), "AWP gaps least, PGD-AT 8/255 s1 most")
    evaluations = {len([r for r in rows(label) if r.get("test_robust_acc") is not None]) for label in entries}
    says(page, f"picking the best of {evaluations.pop()} noisy evaluations")
    holds(page, not evaluations, "every run has the same number of evaluations")
    v0, v1 = "PGD-AT 8/255 s0 val split", "PGD-AT 8/255 s1 val split"
    held = [json.loads((ROOT / entries[v]["path"] / "data.json").read_text())["train_examples"] for v in (v0, v1)]
    says(page, f"The validation-split runs ({held[0]} training images, `data.drop_last: true`)")
    holds(page, held[0] == held[1], "both validation-split runs train on the same number of images")

    def val_says(v: str) -> str:
        return f"epoch {chosen(v, 'val')} on"

    says(
        page,
        f"select {val_says(v0)} seed 0 ({100 * entries[v0]['rules']['val']['test_acc']:.1f} %: "
        f"{minus(regret(v0, 'val'))} against their own oracle, {minus(regret(v0, 'val', 'regret_vs_full_data'))} "
        f"against the full-data run's) and {val_says(v1)} seed 1 ({100 * entries[v1]['rules']['val']['test_acc']:.1f}"
        f" %: {minus(regret(v1, 'val'))} and {minus(regret(v1, 'val', 'regret_vs_full_data'))})",
    )
    full = [entries[entries[v]["full_data_run"]] for v in (v0, v1)]
    own = [entries[v] for v in (v0, v1)]
    says(
        page,
        f"Withholding the 100 images cost {100 * (full[0]['oracle_acc'] - own[0]['oracle_acc']):.1f} and "
        f"{100 * (full[1]['oracle_acc'] - own[1]['oracle_acc']):.1f} points of best accuracy (oracle "
        f"{100 * own[0]['oracle_acc']:.1f} against {100 * full[0]['oracle_acc']:.1f} %, "
        f"{100 * own[1]['oracle_acc']:.1f} against {100 * full[1]['oracle_acc']:.1f} %)",
    )
    seed1 = rows(v1)
    validation = {r["epoch"]: r["val_robust_acc"] for r in seed1 if r.get("val_robust_acc") is not None}
    val_peak = max(validation, key=validation.get)
    says(
        page,
        f"the validation accuracy peaks at {round(100 * validation[val_peak])}/100 at epoch {val_peak} while the "
        f"test accuracy peaks at epoch {own[1]['oracle_epoch']}, where the validation split scores "
        f"{round(100 * validation[own[1]['oracle_epoch']])}/100",
    )
    says(
        page,
        f"100 images measure robust accuracy to ± {100 * (0.25 * 0.75 / 100) ** 0.5:.0f} points (binomial sd at 25 %)",
    )
    steps = [
        statistics.mean(abs(a - b) for a, b in zip(t, t[1:]))
        for t in ([r["test_robust_acc"] for r in rows(v) if r.get("test_robust_acc") is not None] for v in (v0, v1))
    ]
    says(
        page,
        f"consecutive evaluations differ by {100 * statistics.mean(steps):.1f} points on average on the test set too",
    )

    def vs_full(rule: str | None) -> str:
        """The validation rule on the split runs against the full-data oracle; a label-free rule (or none) on the
        full-data runs themselves, which need no split."""
        found = [
            regret(v, rule, "regret_vs_full_data") if rule == "val" else regret(e["run"], rule)
            for v, e in zip((v0, v1), full)
        ]
        return minus(statistics.mean(found), 2) + " ± " + f"{statistics.stdev(found):.2f}"

    says(
        page,
        f"validation {vs_full('val')}, small-loss share 0.05 {vs_full('small-loss share 0.05')}, share 0.1 "
        f"{vs_full('small-loss share 0.1')}, last {vs_full(None)}",
    )
    says(page, f"({vs_full('val')} against the full-data oracle,")
    says(
        page,
        f"beside {vs_full('small-loss share 0.05')} and {vs_full('small-loss share 0.1')} for the small-loss "
        f"shares on the same two seeds",
    )
    # the run with a 4-image last batch, left out of the table
    small = module.replay_run("val, last batch of 4", ROOT / S / "early_warning/runs/pgd_at_eps8_seed0_val")
    small_rows, skipped, whole = (
        rows(v0)[:0] or module.load(ROOT / S / "early_warning/runs/pgd_at_eps8_seed0_val"),
        rows(v0),
        rows("PGD-AT 8/255 s0"),
    )
    examples = json.loads((ROOT / S / "early_warning/runs/pgd_at_eps8_seed0_val/data.json").read_text())[
        "train_examples"
    ]
    batch = yaml_config(S + "early_warning/runs/pgd_at_eps8_seed0_val")["data"]["batch_size"]
    says(
        page,
        f"splits {examples} images into {NUMBER_WORDS[examples // batch]} "
        f"batches of {batch} and one of {examples % batch}",
    )
    says(page, f"A last batch of {examples % batch} images holds a run back")
    end = [r[-1] for r in (small_rows, skipped, whole)]
    says(
        page,
        f"training loss {end[0]['train_loss']:.2f} at epoch {end[0]['epoch']} against {end[1]['train_loss']:.2f} "
        f"with the batch skipped and {end[2]['train_loss']:.2f} for the full-data run, training robust accuracy "
        f"{100 * end[0]['train_robust_acc']:.0f} % against {100 * end[1]['train_robust_acc']:.0f} %, test clean "
        f"accuracy {100 * end[0]['test_clean_acc']:.0f} % against {100 * end[1]['test_clean_acc']:.0f} %",
    )
    full0 = entries["PGD-AT 8/255 s0"]["oracle_acc"]
    says(page, f"it hardly overfitted (last {minus(100 * small['last_regret'])})")
    val_small = small["rules"]["val"]
    says(
        page,
        f"its validation selection ({minus(100 * val_small['regret'])} / "
        f"{minus(100 * (val_small['test_acc'] - full0))} against its own / the full-data oracle)",
    )
    tenth = [next(r for r in x if r["epoch"] == 10)["train_loss"] for x in (skipped, whole, small_rows)]
    says(
        page,
        f"(training loss at epoch 10: {tenth[0]:.2f} against {tenth[1]:.2f}; {tenth[2]:.2f} with the "
        f"{examples % batch}-image batch)",
    )
    # the small-loss rule
    holds(page, regret("PGD-AT 4/255 s1", "small-loss share 0.05") == 0, "share 0.05 is exact on 4/255 s1")
    says(
        page,
        f"(4/255 s0: {minus(regret('PGD-AT 4/255 s0', 'small-loss share 0.05'))} at share 0.05 vs "
        f"{minus(regret('PGD-AT 4/255 s0'))})",
    )
    shares = {
        label: [r["small_loss_share"] for r in rows(label) if r.get("small_loss_share") is not None]
        for label in ("PGD-AT 2/255 s0", "PGD-AT 8/255 s0", "PGD-AT 8/255 s1", "+AWP s0", "+RWP s0", "MART s0")
    }
    at_2 = next(r["epoch"] for r in rows("PGD-AT 2/255 s0") if (r.get("small_loss_share") or 0) >= 0.2)
    says(page, f"at 2/255 it passes 0.2 by epoch {at_2}")
    top_8 = max(max(shares["PGD-AT 8/255 s0"]), max(shares["PGD-AT 8/255 s1"]))
    says(page, f"at 8/255 it stays below {math.ceil(100 * top_8) / 100:.2f} all run")
    holds(
        page,
        all(max(shares[m]) < 0.05 for m in ("+AWP s0", "+RWP s0", "MART s0")),
        "AWP, RWP and MART never reach 0.05",
    )
    says(
        page,
        f"at share 0.05 ({minus(regret('PGD-AT 8/255 s0 subset 2', 'small-loss share 0.05'))} against "
        f"{minus(regret('PGD-AT 8/255 s0 subset 2'))}), and on TRADES "
        f"({minus(regret('TRADES 8/255 s0', 'small-loss share 0.05'))} against {minus(regret('TRADES 8/255 s0'))} "
        f"at share 0.05, {minus(regret('TRADES 8/255 s0', 'small-loss share 0.1'))} at 0.1)",
    )
    # the CAS trend
    declining = [
        "PGD-AT 4/255 s0",
        "PGD-AT 4/255 s1",
        "PGD-AT 8/255 s1",
        "PGD-AT 8/255 s0 subset 2",
        v0,
        v1,
        "+cross_class λ0.1 s0",
    ]
    picked = [chosen(label, "cas_trend") for label in declining]
    lost = [regret(label, "cas_trend") for label in declining]
    says(page, f"so `cas_trend` selects epoch {min(picked)}–{max(picked)} ({minus(max(lost))} to {minus(min(lost))})")
    says(page, f"`train_cas` peaks by epoch {max(picked)} and then declines")  # the moving average's peak: the choice
    raised = [
        chosen(label, "cas_trend")
        for label in ("+cross_class λ1 s0", "+cross_class λ1 s1", "+cross_class λ1 s0 subset 2")
    ]
    holds(page, chosen("+cross_class λ10 s0", "cas_trend") == 100, "at λ = 10 the rule selects the last epoch")
    says(page, f"the rule selects epoch {min(raised)}–{max(raised)} or the last")
    kd, swa = "+KD s1", "+SWA s1"
    holds(page, chosen(kd, "cas_trend") == chosen(swa, "cas_trend"), "KD and SWA select the same epoch on seed 1")
    says(
        page,
        f"their `train_cas` also peaks at epoch {chosen(kd, 'cas_trend')} ({minus(regret(kd, 'cas_trend'))}, "
        f"{minus(regret(swa, 'cas_trend'))})",
    )
    trades = entries["TRADES 8/255 s0"]
    says(
        page,
        f"(epoch {chosen('TRADES 8/255 s0', 'cas_trend')}, {minus(regret('TRADES 8/255 s0', 'cas_trend'))}; "
        f"oracle epoch {trades['oracle_epoch']})",
    )
    trades_rows = rows("TRADES 8/255 s0")
    cas = [(r["epoch"], r["train_cas"]) for r in trades_rows if r.get("train_cas") is not None]
    window = module.default.cas_window
    moving = [
        (cas[i][0], statistics.mean(c for _, c in cas[i - window + 1 : i + 1])) for i in range(window - 1, len(cas))
    ]
    top = max(moving, key=lambda m: m[1])
    first = dict(cas)
    holds(
        page,
        all(first[e] > 0.85 * first[4] for e in range(4, top[0] + 1)),
        "TRADES's training CAS stays near its epoch-4 level until the moving average's peak",
    )
    says(
        page,
        f"from {first[1]:.1f} at epoch 1 to {first[4]:.1f} at epoch 4 and stays near that level until epoch "
        f"{top[0]} (the {window}-epoch moving average peaks at {top[1]:.1f} at epoch {top[0]}",
    )
    plateau = [
        100 * r["test_robust_acc"]
        for r in trades_rows
        if r.get("test_robust_acc") is not None and 10 <= r["epoch"] <= 22
    ]
    says(
        page,
        f"stays on a plateau from epoch 10 to 22 ({min(plateau):.1f}–{max(plateau):.1f} % at the evaluated epochs)",
    )
    # the unlabelled inputs
    four = ["PGD-AT 4/255 s0", "PGD-AT 4/255 s1"]
    stability = [
        [r["unlabelled_stability"] for r in rows(label) if r.get("unlabelled_stability") is not None] for label in four
    ]
    holds(page, len({f"{s[0]:.1f}" for s in stability}) == 1, "both runs' stability starts at the same level")
    says(
        page,
        f"falls steadily from {stability[0][0]:.1f} to {stability[0][-1]:.2f} and {stability[1][-1]:.2f} over training",
    )
    best = [chosen(label, "unlabelled") for label in four]
    says(
        page,
        f"its best is at epoch {min(best)}–{max(best)} ({minus(regret(four[0], 'unlabelled'))}, "
        f"{minus(regret(four[1], 'unlabelled'))})",
    )
    from scipy import stats

    late = [
        [r for r in rows(label) if r.get("unlabelled_stability") is not None and r["epoch"] >= 20] for label in four
    ]
    rho = [stats.spearmanr([r["unlabelled_stability"] for r in x], [r["test_robust_acc"] for r in x])[0] for x in late]
    anti = [stats.spearmanr([r["unlabelled_stability"] for r in x], [r["test_clean_acc"] for r in x])[0] for x in late]
    says(page, f"(Spearman {rho[0]:.2f}, {rho[1]:.2f})")
    says(page, f"*against* clean accuracy ({minus(anti[0], 2)}, {minus(anti[1], 2)})")
    ucas = [[r["unlabelled_cas"] for r in rows(label) if r.get("unlabelled_cas") is not None] for label in four]
    says(
        page,
        f"({ucas[0][0]:.1f} → {ucas[0][-1]:.1f}, {ucas[1][0]:.1f} → {ucas[1][-1]:.1f}) and its trend rule selects "
        f"epoch {min(chosen(x, 'cas_trend unlabelled') for x in four)}–"
        f"{max(chosen(x, 'cas_trend unlabelled') for x in four)}",
    )

    def evaluation_seconds(label: str) -> float:  # an evaluation epoch's time beyond a training epoch's
        epochs = rows(label)
        return statistics.mean(r["seconds"] for r in epochs if r.get("test_robust_acc") is not None) - statistics.mean(
            r["seconds"] for r in epochs if r.get("test_robust_acc") is None
        )

    others = [
        evaluation_seconds(label)
        for label in ("PGD-AT 8/255 s1", "PGD-AT 8/255 s0 subset 2", "TRADES 8/255 s0", v0, v1)
    ]
    unlabelled_n = {yaml_config(entries[label]["path"])["data"]["unlabelled"] for label in four}
    says(
        page,
        f"with N = {unlabelled_n.pop()} an evaluation epoch took {evaluation_seconds(four[0]):.1f} and "
        f"{evaluation_seconds(four[1]):.1f} s longer than a training epoch, against {min(others):.1f}–"
        f"{max(others):.1f} s in this study's five other new runs",
    )
    rule = entries[four[0]]["rules"]
    cas_rule, small_rule = rule["cas_trend"]["rule"], rule["small-loss share 0.05"]["rule"]
    says(
        page,
        f"whose training loss (the objective's own, at the weights the step updates) is < {small_rule['loss_below']}",
    )
    says(
        page,
        f"`cas_trend` selects the peak of the {cas_rule['window']}-epoch moving average of `train_cas` (or of "
        f"`unlabelled_cas`) and declares overfitting after {cas_rule['patience']} epochs "
        f"{100 * cas_rule['drop']:.0f} % below it",
    )
    holds(
        page,
        all(yaml_config(entries[v]["path"])["data"]["val_split"] == 100 for v in (v0, v1)),
        "the validation split holds 100 images",
    )
    every = {yaml_config(entries[label]["path"])["eval"]["every"] for label in entries}
    says(page, f"Rules select among evaluated epochs (every {every.pop()} here)")
    holds(page, not every, "every run evaluates equally often")
    says(
        page,
        f"The oracle itself is the maximum of {len([r for r in seed1 if r.get('test_robust_acc') is not None])} "
        f"noisy evaluations",
    )
    says(page, f"come from {examples % batch} images, held training back")
    val_spread = statistics.stdev(regret(v, "val", "regret_vs_full_data") for v in (v0, v1))
    says(page, f"but two runs with spreads of {val_spread:.0f} points")
    gain = [
        statistics.mean(regret(r, f"small-loss share {s}") for r in entries) - statistics.mean(map(regret, entries))
        for s in (0.1, 0.05)
    ]
    says(page, f"by {min(gain):.1f}–{max(gain):.1f} points ({len(entries)} runs)")
    last = [regret(r) for r in entries]
    says("docs/reproduction.md", f"({len(entries)} runs: the last checkpoint is {-statistics.mean(last):.1f} ± "
                                 f"{statistics.stdev(last):.1f} points below the test oracle; the best small-loss "
                                 f"share recovers {min(gain):.1f}–{max(gain):.1f} points")
    says("docs/reproduction.md", f"select best on average, {vs_full('val')} points against the full-data oracle")


NUMBER_WORDS = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def yaml_config(relative: str) -> dict:
    import yaml

    return yaml.safe_load((ROOT / relative / "config.yaml").read_text())


def strip_full_data(entry: dict) -> dict:
    """An entry without what needs the other runs (the regret against the full-data run's oracle)."""
    rules = {name: {k: v for k, v in rule.items() if k != "regret_vs_full_data"}
             for name, rule in entry["rules"].items()}
    return {**entry, "rules": rules}


def outside_models() -> None:
    """Each network's best and last checkpoint, as its run and through --model (summary.json, from compare.py)."""
    page = S + "outside_models.md"
    summary = json.loads((STUDIES / "outside_models" / "summary.json").read_text())
    rows = table(page, "network")
    expected = [(e, which) for e in summary["rows"] for which in ("best", "last")]
    if len(expected) != len(rows) - 1:
        problems.append(f"{page}: {len(rows) - 1} rows in the results table, {len(expected)} in summary.json")
    for cells, (e, which) in zip(rows[1:], expected):
        epoch = e["best_epoch"] if which == "best" else e["epochs"]
        check_row(page, cells, rows[0], {
            "checkpoint (epoch)": [epoch], "clean %": [100 * e[f"{which}_clean_acc_outside"]],
            "PGD-20 %": [100 * e[f"{which}_pgd20_acc_outside"]], "CAS as a run": [e[f"{which}_cas_run"]],
            "CAS through `--model`": [e[f"{which}_cas_outside"]],
            "largest matrix difference": [e[f"{which}_matrix_max_abs_difference_outside"]]})
    tv, tm, pre = run(S + "outside_models/torchvision_resnet18"), run(S + "outside_models/timm_resnet10t"), \
        run(SEED_STREAMS)
    says(page, f"Time: {tv.summary['total_seconds'] / 60:.1f} and {tm.summary['total_seconds'] / 60:.1f} minutes of "
               f"training and evaluation")
    by_model = {e["model"]: e for e in summary["rows"]}
    tv_row, tm_row = (next(e for m, e in by_model.items() if name in m) for name in ("torchvision", "timm"))
    early = [c for c in ((row["epoch"], row["cas"]) for row in pre.rows if row.get("cas") is not None) if c[0] <= 30]
    says(page, f"{tv_row['best_cas_outside']:.2f} and {tv_row['last_cas_outside']:.2f} (best, last) for "
               f"torchvision's ResNet-18, {tm_row['best_cas_outside']:.2f} and {tm_row['last_cas_outside']:.2f} for "
               f"timm's ResNet-10-T, and between {min(c for _, c in early):.1f} and {max(c for _, c in early):.1f} "
               f"for PreActResNet-18 over the same {tv.summary['epochs']} epochs")
    says(page, f"it learns least ({100 * tv_row['best_clean_acc_outside']:.1f} % clean)")

    def first_last(r: Run) -> str:
        cas = [row["cas"] for row in r.rows if row.get("cas") is not None and row["epoch"] <= 30]
        return f"{cas[0]:.1f} → {cas[-1]:.1f}"
    says(page, f"In the first {tv.summary['epochs']} epochs CAS rises for both outside networks** ({first_last(tv)} "
               f"and {first_last(tm)}) while it falls for PreActResNet-18 ({first_last(pre)})")
    says(page, f"overfits in {tv.summary['epochs']} epochs at this scale (torchvision: best − last "
               f"{100 * tv.summary['robust_gap']:.1f} points by PGD-10; timm: {100 * tm.summary['robust_gap']:.1f} "
               f"points")
    says(page, f"of {len(tv.evaluated)} evaluations on 1,000 images")
    says(page, "(ΔCAS best − last " + " and ".join(f"{r.summary['delta_cas']:.2f}".replace("-", "−") for r in (tv, tm))
         + ")")


def cpu_mart() -> None:
    page = S + "cpu_mart.md"
    mart, a, b = run(S + "cpu_mart"), run(PGD), run(SEED_STREAMS)
    says(page, f"({f1(mart.mean_robust(12, 30))} % over epochs 12–30, {f1(mart.mean_robust(82, 100))} % over "
               f"epochs 82–100)")
    fall = [x.mean_robust(12, 30) - x.mean_robust(82, 100) for x in (b, a)]
    says(page, f"the windowed means fall by {fall[0]:.1f} vs {fall[1]:.1f} points")
    says(page, f"CAS does not fall with MART** ({mart.summary['cas_best']:.2f} at the best checkpoint, "
               f"{mart.summary['cas_last']:.2f} at the last, ΔCAS {signed(mart.summary['delta_cas'])})")
    sa, sb, sm = a.summary, b.summary, mart.summary
    says(page, f"epoch 10 CAS {b.row(10)['cas']:.2f} for PGD-AT, {mart.row(10)['cas']:.2f} for MART")
    says(page, f"peaks early (epoch {sb['best_epoch']} vs {sa['best_epoch']}) and ends about "
               f"{round(100 * statistics.mean([sb['robust_gap'], sa['robust_gap']]))} points lower (gap "
               f"{100 * sb['robust_gap']:.1f} vs {100 * sa['robust_gap']:.1f}")
    says(page, f"(ΔCAS {signed(sb['delta_cas'])} vs {signed(sa['delta_cas'])})")
    says(page, f"flat after epoch 12 ({f1(mart.mean_robust(12, 30))} %")
    says(page, f"ends **{100 * (sm['last_robust_acc'] - sb['last_robust_acc']):.1f} points above PGD-AT** "
               f"({100 * sm['last_robust_acc']:.1f} vs {100 * sb['last_robust_acc']:.1f} %), with the same clean "
               f"accuracy ({100 * sm['last_clean_acc']:.1f} vs {100 * sb['last_clean_acc']:.1f} %)")
    says(page, f"Its best − last gap of {100 * sm['robust_gap']:.1f} points is the noise of picking the best of "
               f"{len(mart.evaluated)} evaluations")
    says(page, f"while it falls by {sb['delta_cas']:.2f} with PGD-AT")
    says(page, f"one seed on {json.loads((mart.path / 'data.json').read_text())['train_examples']:,} images")
    says(page, f"its run took {sm['total_seconds'] / sb['total_seconds']:.2f}× PGD-AT's time")


def demo() -> None:
    """The demo's three seeds: the table of docs/reproduction.md and the numbers the README quotes."""
    seeds = {str(seed): S + f"demo/seed-{seed}" for seed in range(3)}
    check_table("docs/reproduction.md", "seed", seeds)
    r0, r1, r2 = (run(p) for p in seeds.values())
    s0, s1, s2 = (r.summary for r in (r0, r1, r2))
    peak = max(r0.rows, key=lambda r: (r["train_robust_acc"], -r["epoch"]))
    says("README.md", f"test robust accuracy best **{100 * s0['best_robust_acc']:.2f} % (epoch {s0['best_epoch']})**, "
                      f"last **{100 * s0['last_robust_acc']:.2f} %**, while training robust accuracy climbs to "
                      f"{100 * peak['train_robust_acc']:.2f} % at epoch {peak['epoch']} and ends at "
                      f"{100 * s0['final_train_robust_acc']:.2f} %")
    says("README.md", f"the last 5 evaluations average **{100 * s0['window_robust_gap']:.2f} points** below the best "
                      f"5-evaluation window (seeds 1, 2: {100 * s1['window_robust_gap']:.2f}, "
                      f"{100 * s2['window_robust_gap']:.2f})")
    says("README.md", f"CAS rises from the best to the last checkpoint at seed 0 ({s0['cas_best']:.2f} → "
                      f"{s0['cas_last']:.2f}) and seed 1 ({s1['cas_best']:.2f} → {s1['cas_last']:.2f}); at seed 2 by "
                      f"{s2['cas_last'] - s2['cas_best']:.2f} ({s2['cas_best']:.2f} → {s2['cas_last']:.2f}), within "
                      f"the ±{cas_noise(run(PGD)):.1f}")
    holds("README.md", s0["cas_last"] - s0["cas_best"] > 0.5 and s1["cas_last"] - s1["cas_best"] > 0.5
          and 0 < s2["cas_last"] - s2["cas_best"] < 0.5, "CAS rises by more than 0.5 at seeds 0 and 1, by less at 2")
    holds("README.md", all(s["window_robust_gap"] >= 0.03 for s in (s0, s1, s2)),
          "the demo overfits by 3 points or more (windowed) at every seed")
    seconds = [s["total_seconds"] for s in (s0, s1, s2)]
    says("README.md", f"It took {min(seconds):.0f}–{max(seconds):.0f} s at seeds 0–2 on 2 CPU cores")
    holds("README.md", all("machine" in s for s in (s0, s1, s2)) or "machine is not recorded" in
          (ROOT / "docs/reproduction.md").read_text(), "every demo run records its machine")
    protocol = [run(S + p).summary["total_seconds"] for p in ("cpu_pgd_at", "precision/fp32-s0", "precision/fp32-s1")]
    says("README.md", f"--out runs/pgd_at # {min(protocol) / 60:.0f}-{max(protocol) / 60:.0f} min on 2 cores")


def precision() -> None:
    """The training runs in fp32 and bf16, and the attacks crafted in both (eval_crafting_native.json)."""
    page = S + "precision.md"
    runs = {f"{p}, seed {seed}": S + f"precision/{p}-s{seed}" for p in ("fp32", "bf16") for seed in (0, 1)}
    check_table(page, "trained in", runs)
    check_mean_table(page, "trained in (2 seeds)", {p: [runs[f"{p}, seed {seed}"] for seed in (0, 1)]
                                                    for p in ("fp32", "bf16")})
    fp32, bf16 = ([run(runs[f"{p}, seed {seed}"]) for seed in (0, 1)] for p in ("fp32", "bf16"))
    holds(page, all(b.summary["robust_gap"] > f.summary["robust_gap"] for f, b in zip(fp32, bf16)),
          "the gap is larger in bf16 at both seeds")
    differences = [100 * (b.summary["robust_gap"] - f.summary["robust_gap"]) for f, b in zip(fp32, bf16)]
    says(page, f"larger in bf16 at both seeds (by {differences[0]:.1f} and {differences[1]:.1f} points)")
    holds(page, all(r.summary["cas_last"] < r.summary["cas_best"] for r in fp32 + bf16),
          "CAS falls from the best to the last checkpoint in every run")
    speed = [statistics.mean(r.training_epoch_seconds() for r in fp32) /
             statistics.mean(r.training_epoch_seconds() for r in bf16),
             statistics.mean(r.summary["total_seconds"] for r in fp32) /
             statistics.mean(r.summary["total_seconds"] for r in bf16)]
    says(page, f"the CPU protocol, 100 epochs, training epochs only (below) | – | {speed[0]:.2f}×")
    says("docs/precision.md", f"a training epoch of the CPU protocol {speed[0]:.2f}× faster")
    sys.path.insert(0, str(ROOT))
    from atlens.report.statistics import WITHIN, difference

    def paired(key: str) -> str:
        d = difference({i: 100 * b.summary[key] for i, b in enumerate(bf16)},
                       {i: 100 * f.summary[key] for i, f in enumerate(fp32)})
        holds(page, d.verdict == WITHIN, f"the bf16 − fp32 difference of {key} is within the seed-to-seed spread")
        return f"{d.value:+.2f} [{d.low:+.2f}, {d.high:+.2f}]"
    says(page, f"the gap {paired('robust_gap')} points and the last robust accuracy "
               f"{paired('last_robust_acc')} points")
    lower = []
    for f, b in zip(fp32, bf16):
        cas_fp32 = {r["epoch"]: r["cas"] for r in f.evaluated if r.get("cas") is not None}
        lower.append(statistics.mean(cas_fp32[r["epoch"]] - r["cas"] for r in b.evaluated
                                     if r.get("cas") is not None and r["epoch"] in cas_fp32))
    says("docs/precision.md", f"(by {differences[0]:.1f} and {differences[1]:.1f} points) and CAS ran lower at every "
                              f"stage of training (by {lower[0]:.2f} and {lower[1]:.2f} on average over the 50")
    says(page, f"CAS runs lower in bf16: by {lower[0]:.2f} (seed 0) and {lower[1]:.2f} (seed 1) on average over the "
               f"{len(bf16[0].evaluated)} evaluations")
    says(page, f"the CPU protocol, 100 epochs, whole run with its fp32 evaluations (below) | – | {speed[1]:.2f}×")
    every = fp32 + bf16
    peaks, gaps = [r.summary["best_epoch"] for r in every], [100 * r.summary["robust_gap"] for r in every]
    says(page, f"Every run peaks early (epochs {min(peaks)}–{max(peaks)}) and ends {min(gaps):.0f}–{max(gaps):.0f} "
               f"points lower")

    def both(key: str, scale: float = 100, digits: int = 2) -> tuple[str, str]:
        return tuple(mean_sd([scale * r.summary[key] for r in group], digits) for group in (fp32, bf16))
    says(page, "the last robust accuracy is {} % in fp32 and {} % in bf16".format(*both("last_robust_acc")))
    says(page, "the best {} % and {} %, and the last clean accuracy".format(*both("best_robust_acc")))
    says(page, "the last clean accuracy {} % and {} %: differences within".format(*both("last_clean_acc")))
    says(page, "The gap is larger in bf16 at both seeds (" + " and ".join(
        f"{100 * b.summary['robust_gap']:.1f} vs {100 * f.summary['robust_gap']:.1f}" for f, b in zip(fp32, bf16))
        + " points; window gap " + " and ".join(
        f"{100 * b.summary['window_robust_gap']:.2f} vs {100 * f.summary['window_robust_gap']:.2f}"
        for f, b in zip(fp32, bf16)) + ")")
    sd = [statistics.stdev(100 * r.summary["robust_gap"] for r in group) for group in (fp32, bf16)]
    says(page, f"a seed-to-seed standard deviation of {sd[0]:.2f} (fp32) and {sd[1]:.2f} (bf16) points")
    says(page, "to the same level ({} in fp32, {} in bf16)".format(*both("cas_last", scale=1)))
    one = fp32[1].summary
    says(page, f"the fp32 seed-1 run peaks at epoch {one['best_epoch']}, where CAS is still high "
               f"({one['cas_best']:.2f}), hence fp32's wide {both('cas_best', scale=1)[0]}")
    says(page, f"(seed 0: {fp32[0].summary['cas_best']:.2f} at epoch {fp32[0].summary['best_epoch']} in fp32, "
               f"{bf16[0].summary['cas_best']:.2f} at epoch {bf16[0].summary['best_epoch']} in bf16)")
    seconds = [[r.training_epoch_seconds() for r in group] for group in (bf16, fp32)]
    totals = [[r.summary["total_seconds"] for r in group] for group in (bf16, fp32)]
    says(page, f"A training epoch takes {mean_sd(seconds[0])} s in bf16 against {mean_sd(seconds[1])} s in fp32 "
               f"({speed[0]:.2f}×)")
    says(page, f"every second epoch, {mean_sd(totals[0], 0)} s against {mean_sd(totals[1], 0)} s ({speed[1]:.2f}×)")
    says(page, f"makes a training epoch {speed[0]:.2f}× faster and the CPU protocol's whole run {speed[1]:.2f}× faster")
    says(page, f"came out larger in bf16 at both seeds (by {differences[0]:.1f} and {differences[1]:.1f} points)")
    says(page, f"gains {speed[0]:.1f}× per training epoch")
    says(page, f"the best checkpoint of the fp32 seed-0 run above (epoch {fp32[0].summary['best_epoch']})")
    evaluations = {len(r.evaluated) for r in every}
    holds(page, evaluations == {50}, f"every run has 50 evaluations (the data: {sorted(evaluations)})")
    crafted = json.loads((STUDIES / "precision" / "eval_crafting_native.json").read_text())
    rows = table(page, "attack, seed")
    for cells in rows[1:]:
        attack, seed = cells[0].rsplit(", seed ", 1)
        found = {r["crafted_in"]: r for r in crafted["rows"] if r["attack"] == attack and r["seed"] == int(seed)}
        if len(found) != 2:
            problems.append(f"{page}: row {cells[0]!r} names no fp32/bf16 pair of eval_crafting_native.json")
            continue
        fp32_row, bf16_row = found["fp32"], found["bf16"]
        check_row(page, cells, rows[0], {
            "fp32 crafting %": [100 * fp32_row["accuracy"]], "bf16 crafting %": [100 * bf16_row["accuracy"]],
            "difference (points)": [100 * (bf16_row["accuracy"] - fp32_row["accuracy"])],
            "s fp32 / bf16": [fp32_row["seconds"], bf16_row["seconds"]]})
    emulated = json.loads((STUDIES / "precision" / "eval_crafting_emulated.json").read_text())["rows"]
    rows = table(page, "seed")
    for cells in rows[1:]:
        found = {r["crafted_in"]: 100 * r["pgd20_accuracy"] for r in emulated if r["seed"] == int(cells[0])}
        check_row(page, cells, rows[0], {"fp32 crafting": [found["fp32"]], "bf16 crafting": [found["bf16-emulated"]],
                                         "difference": [found["bf16-emulated"] - found["fp32"]]})
    emulated_seconds = {p: sum(r["seconds"] for r in emulated if r["crafted_in"] == p)
                        for p in ("fp32", "bf16-emulated")}
    says(page, f"{emulated_seconds['fp32'] / emulated_seconds['bf16-emulated']:.2f}× (PGD-20, timm ResNet-10-T)")
    for attack, label in (("pgd20", "PGD-20"), ("autoattack", "AutoAttack")):
        seconds = {p: sum(r["seconds"] for r in crafted["rows"] if r["attack"] == attack and r["crafted_in"] == p)
                   for p in ("fp32", "bf16")}
        says(page, f"{label}, 500 CIFAR-10 test images")
        says(page, f"{seconds['fp32'] / seconds['bf16']:.2f}× ({label}, PreActResNet-18 w16)")


XD = S + "extra_data/"
EXTRA_ARMS = {  # the extra-data study's arms -> their runs by seed (the baselines come from other studies)
    "PGD-AT": [S + "precision/fp32-s0", S + "precision/fp32-s1"],
    "TRADES": [EW + "trades_eps8_seed0", XD + "trades-s1"],
    "true labels": [XD + "true-s0", XD + "true-s1"],
    "pseudo-labels": [XD + "pseudo-s0", XD + "pseudo-s1"],
    "cross-class sampler": [XD + "crossclass-s0", XD + "crossclass-s1"],
    "PGD-AT, steps matched": [XD + "pgd_at_steps-s0", XD + "pgd_at_steps-s1"],
}


def extra_data() -> None:
    """The per-seed and the mean tables of the extra-data study, and its teachers' label agreement."""
    page = S + "extra_data.md"
    check_table(page, "arm, seed", {f"{arm}, seed {seed}": path for arm, paths in EXTRA_ARMS.items()
                                    for seed, path in enumerate(paths)})
    check_mean_table(page, "arm (2 seeds)", EXTRA_ARMS)
    from atlens.report.statistics import difference

    rows = table(page, "arm − PGD-AT (paired by seed, n = 2)")
    base = [run(path) for path in EXTRA_ARMS["PGD-AT"]]
    for cells in rows[1:]:
        arm = [run(path) for path in EXTRA_ARMS[cells[0]]]
        values = {}
        for name, key in (("last RA", "last_robust_acc"), ("gap", "robust_gap")):
            d = difference({i: 100 * r.summary[key] for i, r in enumerate(arm)},
                           {i: 100 * r.summary[key] for i, r in enumerate(base)})
            values[f"{name} (points)"], values[f"{name} 95 % interval"] = [d.value], [d.low, d.high]
            printed = cells[rows[0].index(f"{name} verdict")]
            holds(page, printed == d.verdict, f"{cells[0]}: {name} is {printed!r} (the data: {d.verdict!r})")
        check_row(page, cells, rows[0], values)
    for seed in (0, 1):
        labels = json.loads((STUDIES / "extra_data" / f"labels-s{seed}" / "extra-labels.json").read_text())
        says(page, f"seed {seed}: {100 * labels['agreement_with_true_labels']:.1f} %")
    teachers = [run(XD + f"teacher-s{seed}").summary["best_clean_acc"] for seed in (0, 1)]
    says(page, f"reaches {100 * teachers[0]:.1f} % (seed 0) and {100 * teachers[1]:.1f} % (seed 1) clean test accuracy")
    epoch_seconds = [f"{run(EXTRA_ARMS['cross-class sampler'][seed]).training_epoch_seconds():.1f} s vs "
                     f"{run(EXTRA_ARMS['pseudo-labels'][seed]).training_epoch_seconds():.1f} s (seed {seed})"
                     for seed in (0, 1)]
    says(page, " and ".join(epoch_seconds) + ", sampler vs uniform")
    horse = []  # the class the sampler draws least: its mean probability over the run / its uniform share
    for path in EXTRA_ARMS["cross-class sampler"]:
        counts = json.loads((ROOT / path / "extra-labels.json").read_text())["class_counts"]
        drawn = [r["extra_class_probabilities"][7] for r in run(path).rows if "extra_class_probabilities" in r]
        horse.append(statistics.mean(drawn) / (counts[7] / sum(counts)))
    says(page, f"away from horse ({horse[0]:.2f}× and {horse[1]:.2f}×)")
    alone = run(EXTRA_ARMS["true labels"][1]).training_epoch_seconds()  # the one extra-data run alone, 2 threads
    baseline = [run(path).training_epoch_seconds() for path in EXTRA_ARMS["PGD-AT"]]
    says(page, f"a true-label training epoch took {alone:.1f} s against {baseline[0]:.1f} s and {baseline[1]:.1f} s "
               f"for the two PGD-AT runs ({alone / max(baseline):.1f}–{alone / min(baseline):.1f}×")

    def spread(arm: str, value: Callable[[Run], float]) -> str:
        values = [value(run(path)) for path in EXTRA_ARMS[arm]]
        return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"

    def gap(r: Run) -> float:
        return 100 * r.summary["robust_gap"]

    def last(r: Run) -> float:
        return 100 * r.summary["last_robust_acc"]

    summary = "docs/reproduction.md"  # its section on the study
    says(summary, f"(gap {spread('true labels', gap)} points against {spread('PGD-AT', gap)} for PGD-AT) and keep CAS "
                  f"({spread('true labels', lambda r: r.summary['cas_best'])} → "
                  f"{spread('true labels', lambda r: r.summary['cas_last'])})")
    agreements = [100 * json.loads((STUDIES / "extra_data" / f"labels-s{seed}" / "extra-labels.json").read_text())
                  ["agreement_with_true_labels"] for seed in (0, 1)]
    says(summary, f"(its labels {min(agreements):.1f}–{max(agreements):.1f} % right)")
    gain = statistics.mean(map(last, map(run, EXTRA_ARMS["pseudo-labels"]))) - statistics.mean(
        map(last, map(run, EXTRA_ARMS["PGD-AT"])))
    says(summary, f"accuracy by {gain:.1f} points and keep CAS high, but the robust-overfitting gap stays "
                  f"({spread('pseudo-labels', gap)})")
    steps = [run(path) for path in EXTRA_ARMS["PGD-AT, steps matched"]]
    trained = [100 * run(path).rows[-1]["train_robust_acc"]
               for arm in ("PGD-AT, steps matched", "PGD-AT", "true labels") for path in EXTRA_ARMS[arm]]
    says(page, f"best {100 * steps[0].summary['best_robust_acc']:.1f} % (epoch {steps[0].summary['best_epoch']}) and "
               f"{100 * steps[1].summary['best_robust_acc']:.1f} % (epoch {steps[1].summary['best_epoch']}), last "
               f"{last(steps[0]):.1f} % and {last(steps[1]):.1f} %, gap {spread('PGD-AT, steps matched', gap)} points "
               f"(window gap {spread('PGD-AT, steps matched', Run.window_gap)})")
    says(page, f"against {spread('PGD-AT', gap)} for PGD-AT and {spread('true labels', gap)} with the true labels")
    says(page, f"training robust accuracy ends at {trained[0]:.1f} % and {trained[1]:.1f} % against {trained[2]:.1f} % "
               f"and {trained[3]:.1f} % for PGD-AT and {trained[4]:.1f} % and {trained[5]:.1f} % with the true labels")
    says(page, f"CAS falls from {spread('PGD-AT, steps matched', lambda r: r.summary['cas_best'])} to "
               f"{spread('PGD-AT, steps matched', lambda r: r.summary['cas_last'])}")
    says(summary, f"PGD-AT given those steps on the 1,000 alone (2 seeds) overfits far more (gap "
                  f"{spread('PGD-AT, steps matched', gap)} points)")
    def best(r: Run) -> float:
        return 100 * r.summary["best_robust_acc"]

    says(page, f"Its best checkpoint ({spread('PGD-AT, steps matched', best)} %) lies between PGD-AT's "
               f"({spread('PGD-AT', best)} %) and the pseudo-label arm's ({spread('pseudo-labels', best)} %)")
    extra_data_findings(spread, gap, last, best)


def extra_data_findings(spread: Callable, gap: Callable, last: Callable, best: Callable) -> None:
    """The prose of the extra-data study's findings, recomputed from its runs."""
    import yaml

    page = S + "extra_data.md"
    arms = {arm: [run(path) for path in paths] for arm, paths in EXTRA_ARMS.items()}

    def mean(arm: str, value: Callable[[Run], float]) -> float:
        return statistics.mean(value(r) for r in arms[arm])

    def window(r: Run) -> float:
        return r.window_gap()

    def last_clean(r: Run) -> float:
        return 100 * r.summary["last_clean_acc"]

    def cas(key: str) -> Callable[[Run], float]:
        return lambda r: r.summary[key]

    def epochs(arm: str) -> str:
        return " and ".join(str(r.summary["best_epoch"]) for r in arms[arm])

    true, base, pseudo, sampler = "true labels", "PGD-AT", "pseudo-labels", "cross-class sampler"
    agreement = statistics.mean(json.loads((STUDIES / "extra_data" / f"labels-s{seed}" / "extra-labels.json")
                                           .read_text())["agreement_with_true_labels"] for seed in (0, 1))
    says(page, f"pseudo-labels from a {100 * agreement:.0f} %-accurate teacher do not.")
    says(page, f"(epochs {epochs(true)}, after the second learning-rate decay, against {epochs(base)} for PGD-AT) "
               f"and the last is {spread(true, gap)} points below it (window gap {spread(true, window)}), against "
               f"{spread(base, gap)} points (window {spread(base, window)}) for PGD-AT; robust accuracy is "
               f"{spread(true, last)} % at the end against {spread(base, last)} %, clean accuracy "
               f"{spread(true, last_clean)} % against {spread(base, last_clean)} %.")
    says(page, f"the last checkpoint gains {mean(pseudo, last) - mean(base, last):.1f} points "
               f"({spread(pseudo, last)} % vs {spread(base, last)} %, within the seed-to-seed spread at n = 2")
    says(page, f"clean accuracy {mean(pseudo, last_clean) - mean(base, last_clean):.2f} points "
               f"({mean(pseudo, last_clean):.2f} % vs {mean(base, last_clean):.2f} %), at twice PGD-AT's optimiser "
               f"steps")
    says(page, f"stays where it was ({spread(pseudo, gap)} vs {spread(base, gap)} points; window gap "
               f"{spread(pseudo, window)} vs {spread(base, window)}, within two seeds' spread): the runs peak early "
               f"(epochs {epochs(pseudo)})")
    says(page, f"keeps a higher CAS at the last checkpoint**: {spread(true, cas('cas_last'))} with true labels, "
               f"{spread(pseudo, cas('cas_last'))} with pseudo-labels and {spread(sampler, cas('cas_last'))} with the "
               f"sampler, against {spread(base, cas('cas_last'))} for PGD-AT and {mean('TRADES', cas('cas_last')):.2f} "
               f"for TRADES")
    holds(page, all(min(r.summary["cas_last"] for r in arms[arm]) > max(r.summary["cas_last"] for r in arms[base])
                    for arm in (true, pseudo, sampler)), "every extra-data arm's last CAS is above PGD-AT's")
    rise = [r.summary["cas_last"] - r.summary["cas_best"] for r in arms[true]]
    holds(page, rise[0] > 0 > rise[1], "with true labels CAS rises at seed 0 and falls at seed 1")
    says(page, f"({spread(true, cas('cas_best'))} → {spread(true, cas('cas_last'))}: up at seed 0, down "
               f"{-rise[1]:.2f} at seed 1)")
    says(page, f"hardly falls ({spread(pseudo, cas('cas_best'))} → {spread(pseudo, cas('cas_last'))}) while their "
               f"robust accuracy falls by {mean(pseudo, gap):.2f} points")
    says(page, f"Last robust accuracy {spread(sampler, last)} % vs {spread(pseudo, last)} %, best "
               f"{spread(sampler, best)} % vs {spread(pseudo, best)} %, gap {spread(sampler, gap)} vs "
               f"{spread(pseudo, gap)} (window gap "
               f"{spread(sampler, window)} vs {spread(pseudo, window)}): differences inside the spread of two seeds.")
    says(page, f"({spread(sampler, cas('cas_last'))} vs {spread(pseudo, cas('cas_last'))}), and a lower best clean "
               f"accuracy ({spread(sampler, lambda r: 100 * r.summary['best_clean_acc'])} % vs "
               f"{spread(pseudo, lambda r: 100 * r.summary['best_clean_acc'])} %)")
    shares = []  # per seed: each class's mean drawing probability over the run / its share of the extra images
    for r in arms[sampler]:
        counts = json.loads((r.path / "extra-labels.json").read_text())["class_counts"]
        drawn = [row["extra_class_probabilities"] for row in r.rows if "extra_class_probabilities" in row]
        shares.append([statistics.mean(d[c] for d in drawn) / (counts[c] / sum(counts)) for c in range(10)])
    favoured = [{c for c in range(10) if seed[c] > 1.1} for seed in shares]
    holds(page, favoured[0] & favoured[1] == {2, 4, 6} and favoured[0] - favoured[1] == {8},
          "the sampler favours bird, deer and frog at both seeds, and ship at seed 0")
    ratios = [seed[c] for seed in shares for c in (2, 4, 6)]
    says(page, f"towards deer, bird and frog ({min(ratios):.2f}–{max(ratios):.2f}× their uniform share on average over "
               f"the run, at both seeds; and towards ship at seed 0, {shares[0][8]:.2f}×)")
    says(page, f"the true-label arm's {spread(true, best)} % is above it")
    from scipy import stats

    says(page, f"With two seeds a paired interval is wide (t(0.975, 1) = {stats.t.ppf(0.975, 1):.2f})")
    peaks = [r.summary["best_epoch"] for r in arms[base]]
    says(page, f"where PGD-AT's best checkpoint comes at epochs {min(peaks)}–{max(peaks)} of "
               f"{arms[base][0].summary['epochs']}:")
    for cells in table(page, "arm, seed")[1:]:
        arm, seed = cells[0].rsplit(", seed ", 1)
        r = run(EXTRA_ARMS[arm][int(seed)])
        machine = r.summary.get("machine")
        if machine is None:  # the cell says so, and states the configured threads (none: all cores, CPU B's 2)
            threads = yaml.safe_load((r.path / "config.yaml").read_text())["runtime"]["threads"]
            holds(page, "not recorded" in cells[-1] and cells[-1].startswith(
                f"{threads} thread" if threads else "CPU B, 2 threads"), f"{cells[0]}: the machine is not recorded, "
                  f"and the table says so with the configured threads ({threads})")
            confirm_cell(page, cells, len(cells) - 1, 1 if threads else None)
            continue
        threads = f"{machine['threads']} thread{'s' if machine['threads'] > 1 else ''}"
        holds(page, cells[-1].startswith(f"{machine['isa']}, {threads}"),
              f"{cells[0]} trained on {cells[-1]!r} (its summary: {machine['isa']}, {threads})")
        confirm_cell(page, cells, len(cells) - 1, None)  # the ISA and the threads


def attack_details() -> None:
    """The measured differences between atlens's TRADES and the reference code's."""
    page = S + "attack_details.md"
    measured = json.loads((STUDIES / "attack_details" / "measured.json").read_text())
    start, passes = measured["start"], measured["forward_passes"]
    says(page, f"x′ for {start['examples_with_a_difference']} of the {measured['examples']} images")
    says(page, f"({start['differing_outside_saturated_examples']} image without any differs")
    says(page, f"The KL the attacks reach is {start['kl_atlens']:.4f} against {start['kl_reference']:.4f}")
    says(page, f"accuracy on the attacked images is {100 * start['accuracy_atlens']:.1f} % against "
               f"{100 * start['accuracy_reference']:.1f} %")
    says(page, f"(cosine {measured['gradient_cosine']:.4f})")
    says(page, f"{passes['steps']} training-mode steps")
    says(page, f"differ by {100 * passes['relative_difference']:.2f} % of their norm")
    says(page, f"clean accuracy is {100 * passes['clean_atlens']:.1f} % against "
               f"{100 * passes['clean_reference']:.1f} % and its PGD-10 accuracy "
               f"{100 * passes['pgd10_atlens']:.1f} % against {100 * passes['pgd10_reference']:.1f} %")
    says(page, f"first {measured['examples']} CIFAR-10 test images")
    n = measured["examples"]
    clean, robust = (round(abs(passes[f"{k}_atlens"] - passes[f"{k}_reference"]) * n) for k in ("clean", "pgd10"))
    words = ["none", "one", "two", "three", "four", "five"]
    says(page, f"on the {n} images (atlens, reference) — {words[clean]} images of {n} for clean accuracy, "
               f"{words[robust]} for robust accuracy")
    says("docs/methods.md", f"statistics {100 * passes['relative_difference']:.1f} % apart")


# the pages whose every number is accounted for (the others: their tables and chosen sentences)
COVERED = ["README.md", "docs/studies/cpu_pgd_at.md", "docs/studies/attack_details.md", "docs/studies/cpu_mart.md",
           "docs/studies/outside_models.md", "docs/studies/extra_data.md", "docs/studies/early_warning.md",
           "docs/reproduction.md"]
# the pages whose numbers are checked in their tables and chosen sentences only, so far
PENDING = ["docs/reproduction.md", "BENCHMARKS.md", *(f"docs/studies/{p.name}" for p in sorted(STUDIES.glob("*.md")))]
# per page, phrases that hold settings or inputs rather than results (each must stand on the page)
INPUTS: dict[str, list[str]] = {
    "README.md": [
        "Python 3.11", "AVX-512", "torch 2.4 – 2.x", "pins timm to 1.0.9", "PreActResNet-18", "PGD-AT (L∞",
        "scikit-learn's 8x8 digits", "What it prints at seed 0", "CIFAR-10", "PGD-20"],
    "docs/studies/cpu_pgd_at.md": [  # the protocol's settings (configs/cpu/cifar10_pgd_at.yaml) and the paper's
        "PreActResNet-18 width 16; the first 100 training images of each class",
        "(1,000 images, crop + flip); PGD-5 training (L∞ 8/255, α 2/255); SGD lr 0.1, momentum 0.9, weight decay "
        "5e-4, batch 128; 100 epochs with ×0.1 decays at 50 and 75; every 2 epochs PGD-10 accuracy and CAS (PGD-10 "
        "at 8/255 on the same examples) on all 1,000 test images", "on a 2-core CPU", "test RA (PGD-10)",
        "on full CIFAR-10", "Table 1 at 8/255", "The paper's Table 1 rows", "epoch 10 CAS",
        "(CAS 18.2 at epoch 70 <",  # the paper's Figure 2, not in its tables
        "25.6 at the best epoch"],
    "docs/studies/attack_details.md": [  # the reference's start, the box, the network and the attack measured
        "x + 0.001·N(0, I)", "outside [0, 1]", "PreActResNet-18 of width 16", "step-matched seed-0 run",
        "two PGD-10 attacks", "n = 1 network"],
    "docs/studies/cpu_mart.md": [  # the source, the protocol (configs/cpu/cifar10_mart.yaml), the table's windows
        "ICLR 2020", "n = 1, so", "PreActResNet-18 width 16, the first 100 training images of each CIFAR-10 class",
        "(1,000 images, crop + flip), PGD-5 training at L∞ 8/255 (α 2/255), SGD lr 0.1 with decays ×0.1 at epochs 50 "
        "and 75, 100 epochs, every 2 epochs PGD-10 accuracy and CAS (on the PGD-10 examples) on all 1,000 test "
        "images. MART: β = 6", "x + 0.001·N(0, I)", "mean RA, epochs 12–30", "mean RA, epochs 82–100",
        "(2 threads)", "(1 thread)", "under PGD-10", "all 1,000 test images; CAS", "Table 1 rows",
        "below about 1.5 points as noise",  # the binomial spread of an accuracy on 1,000 images, rounded up
        "1 − p_y(x)", "over epochs 12–30", "over epochs 82–100"],
    "docs/studies/precision.md": [  # the two machines, the protocol (configs/cpu/cifar10_pgd_at.yaml), the attacks
        "AMD EPYC, 2 cores | AMD EPYC, 2 cores", "Both are 2-core virtual machines with torch 2.14.1 and 2 threads",
        "PGD-10 AT step, PreActResNet-18 w16, batch 128", "PGD-20 evaluation, digits CNN",
        "1,000 CIFAR-10 training images, PreActResNet-18 of width 16, PGD-5 at L∞ 8/255, 100 epochs, PGD-10 on "
        "1,000 test images and CAS every 2 epochs", "seeds 0 and 1, one run at a time with 2 threads",
        "the last mean of 5 consecutive evaluations", "trained in (2 seeds)", "(n = 2: the spread",
        "with a 95 % interval", "at n = 2 every one", "(n = 2 seeds per precision",
        "PGD-20 (three attack seeds) and AutoAttack (standard, seed 0) at L∞ 8/255 on 500 class-balanced test images",
        "timm ResNet-10-T (best epoch, CPU protocol data), PGD-20",
        "PGD-20 at three seeds and AutoAttack natively, PGD-20 at three seeds emulated", "on a PGD-10 training step"],
    "docs/studies/extra_data.md": [  # the sources, the protocol (configs/cpu/cifar10_pgd_at.yaml), the arms' settings
        "Carmon et al. 2019; paper 001's Table 2 RST rows", "(Wang et al. 2023)", "Paper 000's account",
        "as 000's account",
        "1,000 labelled CIFAR-10 training images (the first 100 per class of an ImageFolder tree of CIFAR-10 PNGs), "
        "PreActResNet-18 of width 16, PGD-5 at L∞ 8/255 (step 2/255), SGD lr 0.1 decayed ×0.1 at epochs 50 and 75, "
        "batch 128, 100 epochs; every second epoch PGD-10 robust and clean accuracy on 1,000 test images and CAS on "
        "their PGD-10 examples", "the training split outside the 1,000", "half of every batch of 128 (64 images) is "
        "drawn from the 2,000 with replacement, the other half from the 1,000", "has 16 batches instead of 8",
        "PGD-AT on the 1,000 alone with epochs of 2,048 examples", "16 batches of 128", "⌈50,000 / batch⌉",
        "the extra-data arms' 16 steps per epoch on the 1,000", "`trades`, β = 6", "the 2,000 with their true labels",
        "the 2,000 labelled by the seed's", "(strength 1)", "(paper 001 eq. 6:", "it labels the 2,000 once",
        "agree with the true labels of the 2,000", "all 50,000 labelled CIFAR-10 images", "share a 2-core machine",
        "the early-warning study's seed-0 run", "the TRADES baseline at seed 0, and the true-label run and its teacher "
        "at seed 0", "(PGD-10, 1,000 test images)", "the last mean of 5 consecutive evaluations", "(AMD EPYC, 2 cores;",
        "shared the 2 cores", "arm (2 seeds)", "(n = 2: the spread", "with a 95 % t interval",
        "(paired by seed, n = 2)",
        "last RA 95 % interval", "gap 95 % interval", "n = 2 seeds per arm", "(`fraction` 0.5 and `take` 2,000 were "
        "fixed before, the sampler's `every` 5 and `strength` 1 are its defaults)", "2,000 extra images all but",
        "(item 4 compares", "optimiser steps on the 1,000 alone (2 seeds)", "fit its 1,000 images'",
        "drawn from 2,000 further images", "with n = 2 the study",
        "(16 batches instead of 8, each of 128 images attacked with PGD-5)", "Alone with 2 threads on AVX512",
        "one arm alone on the machine: 2 threads"],
    "docs/reproduction.md": [  # the papers' scale, the data and protocol (configs/cpu/cifar10_pgd_at.yaml), designs
        "200-epoch runs", "an offline copy of CIFAR-10 images", "CIFAR-10 training images 0–3999 and test images 0–999",
        "first 100 training images of each class (1,000 images, crop + flip), all 1,000 test images; "
        "PreActResNet-18 of width 16; PGD-5 training at L∞ 8/255 (α 2/255); SGD lr 0.1, momentum 0.9, weight decay "
        "5e-4, batch 128; 100 epochs with ×0.1 decays at epochs 50 and 75; every 2 epochs PGD-10 robust accuracy, "
        "clean accuracy and CAS on "
        "the 1,000 test images", "the best mean over 5 consecutive evaluations", "paper 000's account", "(n = 3,",
        "The CIFAR-10 runs below", "ε = 8/255 is study 1", "(α = ε/4", "the paper's Figure 1 and 4",
        "mean RA, last 10 evals", "(ΔCAS > 0 in all three runs)", "mildest at 2/255", "noise of 1,000 test examples",
        "with 1,000 training images the width-16", "the paper's 50,000-image runs", "Theorem 1's intuition",
        "from epoch 30 on", "perturbation: awp, γ 0.01", "perturbation: rwp, γ 0.01, c_min 1.7", "the study-1 run",
        "(ResNet-18, full CIFAR-10; Table 1, SWA alone from Table 5)", "Yu et al.'s Table 1", "as Algorithm 1",
        "under about 1.5 points of robust accuracy", "(section 3b)", "(Wang et al. 2020, β = 6)", "the PGD-10 pass",
        "A torchvision ResNet-18 and a timm ResNet-10-T", "while they fall for PreActResNet-18",
        "100 held-out labelled images", "as noisily as 100 images allow", "(λ grid on seed 0, then λ = 1",
        "The CPU protocol with 2,000 further CIFAR-10 training images", "(`extra:`, 2 seeds)", "trained on the 1,000",
        "Theorems 1 and 3", "σ1 = σ/(μ − 2ε), not the paper's √2σ/(μ − 2ε) (Theorem 2;"],
    "docs/studies/early_warning.md": [  # the runs' design (ε, seeds, subsets, λ), the protocol, the rules' shares
        "PGD-AT at 2, 4 and 8/255 (two seeds at 4 and 8/255, a second training subset at 8/255)",
        "1,000 CIFAR-10 training images, PreActResNet-18 width 16, PGD-5 training, 100 epochs, PGD-10 on the 1,000 "
        "test images every 2 epochs), two runs at a time with 1 thread each", "900 training images, 100 held out",
        "(PGD-AT at 2/4/8 255", "(the grid on seed 0; λ = 1, +KD and +SWA on seed 1; λ = 1 on the second subset)",
        "small-loss share 0.05 |", "small-loss share 0.1 |", "small-loss share 0.2 |", "PGD-AT 8/255 s0",
        "PGD-AT 8/255 s1", "on 100 held-out labelled images: as noisy as 100 images are", "on seed 1 the validation",
        "share 0.05 or 0.1 gives", "(4/255 s1, share 0.05)", "never reach 0.05",
        "(two seeds at 4/255, seed 1 and the second subset at 8/255,", "the criterion at λ = 0.1", "(λ = 1, 10)",
        "KD and SWA on seed 1", "(2 runs, 4/255)", "from epoch 20 on", "A validation split of 100 labelled images",
        "as noisy as 100 images make it"],
    "docs/studies/cross_class_regularizer.md": [  # the design (which seeds, subsets, λ), the protocol, the definitions
        "seed 0", "seed 1", "seed-0", "seed-1", "Seed 2", "subset 2", "λ = 1", "λ ≥ 1", "λ = 0.1", "λ = 10",
        "(3 runs)", "(8 runs)", "(Wei et al. 2025)", "1,000 CIFAR-10 training images, PreActResNet-18 width 16, PGD-5 "
        "training, 100 epochs, PGD-10 on the 1,000 test images every 2 epochs, CAS on the same PGD-10 examples), "
        "PGD-AT at 8/255", "Every run used 1 thread", "PGD-10 on the 1,000 test images", "on PGD-20 examples",
        "the evaluation's PGD-10 pass", "as λ goes 0 → 0.1 → 1 → 10 (the maximum for 10 classes is 90)",
        "(an EMA with momentum 0.99)", "a 128-image batch (≈ 13 per class)", "other seeds: 1**",
        "the same 1,000 images", "(images 100–199 of each class", "with a 95 % t interval", "last RA 95 % interval",
        "gap 95 % interval"],
    "docs/studies/outside_models.md": [  # the protocol's data, the architectures as their libraries build them,
        # the training settings (configs/cpu/cifar10_{torchvision_resnet18,timm_resnet10t}.yaml), the figure's facts
        "1,000 CIFAR-10 training images, all 1,000 test images", "torchvision ResNet-18", "7×7 stride-2 stem",
        "a 32×32 image ends as a 1×1 map; 11.2 M parameters, 512 features", "timm ResNet-10-T",
        "(tiered 3-layer stem), 4.9 M parameters, 512 features", "PGD-5 AT at L∞ 8/255 (α 2/255), SGD lr 0.1 (×0.1 "
        "at epochs 15 and 22), batch 128, **30 epochs**, seed 0, PGD-10 evaluation and CAS every 2 epochs",
        "PreActResNet-18 of width 16 (128 features;", "100 epochs, decays at 50 and 75", "on 2 cores",
        "(PGD-20 and CAS on all 1,000 test images, seed 0;", "PGD-20 %", "clean and PGD-20 accuracy",
        "ResNet-18 | best", "ResNet-18 | last", "ResNet-10-T | best", "ResNet-10-T | last",
        "(largest difference 0, not a tolerance)", "Two of the three have 512 features",
        "leaves a 1×1 map at 32×32 pixels", "within the ±2-point noise of a best", "Grad-CAM** of the torchvision",
        "uses its third stage (2×2 → upsampled): its final 1×1 map", "torchvision's ResNet-18", "timm's ResNet-10-T",
        "PreActResNet-18"],
}


def readme() -> None:
    """The README's settings against the presets they describe, and its measurements against their records."""
    import yaml

    demo = yaml.safe_load((ROOT / "atlens/presets/demo.yaml").read_text())
    o = demo["optim"]
    attack = demo["attack"]
    says("README.md", f"PreActResNet-18 (width {demo['model']['width']}) by PGD-AT (L∞, ε = {attack['epsilon']}, "
                      f"PGD-{attack['steps']})")
    says("README.md", f"{demo['data']['per_class']} per class with **{100 * demo['data']['label_noise']:.0f} % of the "
                      f"training labels replaced")
    says("README.md", f"for {o['epochs']} epochs (learning rate {o['lr']}, divided by 10 at epochs "
                      f"{round(o['milestones'][0] * o['epochs'])} and {round(o['milestones'][1] * o['epochs'])})")
    examples = json.loads((ROOT / S / "demo/seed-0/data.json").read_text())["eval_examples"]
    says("README.md", f"evaluates PGD-{demo['eval']['steps']} accuracy on the {examples} test digits every "
                      f"{demo['eval']['every']} epochs")
    protocol = yaml.safe_load((ROOT / "configs/cpu/cifar10_pgd_at.yaml").read_text())
    says("README.md", f"{protocol['data']['per_class']} training images per class are used")
    suite = json.loads((ROOT / "docs/measurements/test_suite.json").read_text())
    seconds, machine = [r["seconds"] for r in suite["runs"]], suite["machine"]
    says("README.md", f"The tests take about {round(statistics.mean(seconds) / 60)} minutes on {machine['cores']} CPU "
                      f"cores (AMD EPYC without AVX-512: {min(seconds):.0f}–{max(seconds):.0f} s over "
                      f"{NUMBER_WORDS[len(seconds)]} runs)")

CHECKS = [demo, cpu_pgd_at, comparison_pages, reproduction_page, cpu_mart, cross_class, cross_class_findings,
          paired_claims, early_warning, outside_models, precision, extra_data, attack_details]


# ------------------------------------------------------------------------------------------- coverage
# Where the checks confirmed a page: character ranges of its text. On a covered page every number must lie in one,
# or in a phrase of INPUTS (a setting or an input, not a result); a number elsewhere is reported as unchecked.
confirmed: dict[str, list[tuple[int, int]]] = {}


def _phrase(text: str) -> re.Pattern:
    """``text`` as a pattern that matches it across line breaks (a page wraps its sentences anywhere)."""
    return re.compile(r"\s+".join(re.escape(word) for word in text.split()))


def confirm(page: str, text: str) -> None:
    """Every place ``text`` stands on ``page`` is confirmed (a copy that differs is not)."""
    for match in _phrase(text).finditer((ROOT / page).read_text()):
        confirmed.setdefault(page, []).append(match.span())


def confirm_cell(page: str, cells: list[str], index: int, count: int | None) -> None:
    """The first ``count`` numbers (all with None) of cell ``index`` of the table row ``cells``."""
    text = (ROOT / page).read_text()
    offset = 0
    for line in text.splitlines(keepends=True):
        row = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and row == cells:
            start = offset + line.index("|")
            for _ in range(index + 1):
                start = text.index("|", start) + 1
            end = text.index("|", start)
            found = list(NUMBER.finditer(text, start, end))
            for match in found if count is None else found[:count]:
                confirmed.setdefault(page, []).append(match.span())
        offset += len(line)


def result_text(text: str) -> str:
    """``text`` with what states no result blanked out (same length, so positions hold): fenced code but its
    comments (commands and their settings), inline code, link targets, HTML comments, headings."""
    lines, fenced = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
            lines.append(re.sub(r"\S", " ", line))
        elif fenced:
            code, mark, comment = line.partition(" # ")
            lines.append(re.sub(r"\S", " ", code + mark) + comment if mark else re.sub(r"\S", " ", line))
        else:
            lines.append(line)
    out = "".join(lines)
    patterns = ((r"`[^`]*`", 0), (r"\]\([^)]*\)", 0), (r"<!--.*?-->", re.S), (r"^#+ .*$", re.M),
                (r"^ *\d+\. ", re.M))  # (the last: the numbers of an ordered list)
    for pattern, flags in patterns:
        out = re.sub(pattern, lambda m: re.sub(r"\S", " ", m.group(0)), out, flags=flags)
    return out


def unchecked(page: str) -> list[str]:
    """The numbers of ``page`` that no check confirmed and no input phrase names, each with its context."""
    text = (ROOT / page).read_text()
    spans = list(confirmed.get(page, []))
    for phrase in INPUTS.get(page, ()):
        found = list(_phrase(phrase).finditer(text))
        if not found:
            problems.append(f"{page}: the input phrase {phrase!r} is not on the page")
        spans += [m.span() for m in found]
    missing = []
    for match in re.finditer(r"(?<![\w.])[−+-]?\d+(?:,\d{3})*(?:\.\d+)?", result_text(text)):
        if not any(a <= match.start() and match.end() <= b for a, b in spans):
            context = re.sub(r"\s+", " ", text[max(0, match.start() - 30): match.end() + 30])
            missing.append(f"{match.group(0)!r} in …{context}…")
    return missing


def coverage() -> None:
    """Every number of the covered pages is checked or named as an input."""
    for page in COVERED:
        for number in unchecked(page):
            problems.append(f"{page}: unchecked number {number}")


def machines() -> None:
    """Every committed run records the machine it ran on, or the page that reports it says it does not."""
    for summary in sorted(STUDIES.rglob("summary.json")):
        if "machine" in json.loads(summary.read_text()):
            continue
        folder = summary.relative_to(STUDIES).parts[0]
        page = "docs/reproduction.md" if folder.startswith("cpu_") or folder == "demo" else f"docs/studies/{folder}.md"
        if "machine is not recorded" not in re.sub(r"\s+", " ", (ROOT / page).read_text()):
            problems.append(f"{page}: {summary.parent.relative_to(ROOT)} records no machine, and the page does not say "
                            f"so")


def main() -> int:
    problems.clear()
    confirmed.clear()
    for check in [*CHECKS, readme, machines, coverage]:
        check()
    for problem in problems:
        print(problem)
    pending = {page: len(unchecked(page)) for page in PENDING}
    print("not yet covered: " + ", ".join(f"{page} ({n} numbers unchecked)" for page, n in pending.items() if n))
    print(f"check_numbers: {len(problems)} disagreement(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
