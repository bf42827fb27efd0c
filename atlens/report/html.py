"""``atlens report``: one self-contained HTML page (figures embedded as data URIs) for one run or a
side-by-side comparison of several, built only from what the run directories already hold."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from atlens.analysis.runner import ANALYSES
from atlens.errors import ConfigError
from atlens.evaluation.attacks import ATTACKS, TABLE_ORDER
from atlens.files import write_text
from atlens.plots.figure import format_epsilon, plt
from atlens.progress import duration
from atlens.report.tables import (
    ACCURACY_HEADER,
    AGGREGATED,
    DIFFERENCE_HEADER,
    RunView,
    accuracy_rows,
    aggregate_rows,
    cas_table,
    comparison_figure,
    difference_rows,
    num,
    pct,
    read_json,
    replicate_groups,
    signed,
)
from atlens.runs import is_replaced

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f2f2f2; }
img { max-width: 100%; border: 1px solid #eee; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; }
.grid figure { flex: 1 1 360px; margin: 0; }
figcaption { font-size: 0.85em; color: #555; }
pre { background: #f7f7f7; padding: 0.7em; font-size: 0.8em; overflow-x: auto; }
.warn { color: #b00; font-weight: bold; }
"""


def _image(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _figure(path: Path, caption: str, note: str = "") -> str:
    if not path.is_file():
        return ""
    note = f"<br><small>{html.escape(note)}</small>" if note else ""
    return f"<figure>{_image(path.read_bytes(), caption)}<figcaption>{html.escape(caption)}{note}</figcaption></figure>"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _accuracy_tables(views: list[RunView]) -> str:
    selection = {str(v.summary.get("selection", "?")) for v in views}
    paper = (" Rows marked (paper) are the numbers the config's source reports for its full-scale setting."
             if any(v.reported for v in views) else "")
    note = (f"<p>Best checkpoint selected by {html.escape(', '.join(sorted(selection)).replace('_', ' '))}; "
            f"Diff = Best − Final (the robust-overfitting gap), in %.{paper}</p>")
    return "<h2>Robust and clean accuracy</h2>" + note + _table(ACCURACY_HEADER, accuracy_rows(views))


def _cas_studies(views: list[RunView]) -> str:
    """The results of ``atlens cas``: one row each, with the attack, budget and examples it was computed on."""
    rows = []
    for v in views:
        for name, r in v.cas_studies.items():
            attack = r.get("attack") or {}
            rows.append([v.name, name, attack.get("name", "clean"), format_epsilon(r["epsilon"])
                         if isinstance(r.get("epsilon"), (int, float)) else "–", str(r.get("examples", "–")),
                         num(r.get("cas")), num(r.get("icas")), pct(r.get("robust_acc"))])
    if not rows:
        return ""
    return ("<h3>CAS results added by atlens cas</h3><p>Each on its own attack, budget and examples (in its name); "
            "I-CAS is the instance-wise score where it was asked for (--instance).</p>"
            + _table(["run", "result", "attack", "ε", "examples", "CAS", "I-CAS", "robust acc (%)"], rows))


def _cas_section(views: list[RunView]) -> str:
    with_cas = [v for v in views if "cas_best" in v.summary]
    if not with_cas:
        studies = _cas_studies(views)
        return "<h2>Cross-class attribution (CAS)</h2>" + studies if studies else ""
    rows = []
    for v in with_cas:
        early = cas_table(v.summary, v.metrics)[0]
        rows.append([v.name, num(early.get("cas")), num(v.summary.get("cas_best")), num(v.summary.get("cas_last")),
                     signed(v.summary.get("delta_cas"))])
        r = v.reported
        if any(k in r for k in ("cas_best", "cas_last", "delta_cas")):
            rows.append([f"{v.name} (paper)", num(r.get("epoch10_cas")), num(r.get("cas_best")),
                         num(r.get("cas_last")), signed(r.get("delta_cas"))])
    parts = ["<h2>Cross-class attribution (CAS)</h2>",
             _table(["run", "CAS epoch 10", "CAS best", "CAS last", "ΔCAS (best − last)"], rows)]
    for v in with_cas:
        a = v.run.analysis
        figures = "".join(_figure(a / f"cas-{n}.png", f"{v.name}: {n}") for n in ("best", "last", "best-minus-last"))
        if figures:
            parts.append(f"<h3>{html.escape(v.name)}: attribution matrices</h3><div class='grid'>{figures}</div>")
    return "".join(parts) + _cas_studies(views)


def _eval_section(views: list[RunView]) -> str:
    reports = [(v.name, checkpoint, report) for v in views for checkpoint, report in v.evals.items()
               if report and "attacks" in report]
    if not reports:
        return ""
    seen = {key for _, _, report in reports for key in report["attacks"]}
    columns = [(k, ATTACKS.label(k)) for k in TABLE_ORDER if k in seen]
    columns += sorted((k, ATTACKS.heading(k)) for k in seen if k not in TABLE_ORDER)
    rows = [[name, checkpoint, report.get("examples", "–")] +
            [pct(report["attacks"][k]["accuracy"]) if k in report["attacks"] else "–" for k, _ in columns]
            for name, checkpoint, report in reports]
    header = ["run", "checkpoint", "examples"] + [label for _, label in columns]
    return "<h2>Evaluation (accuracy under attack, %)</h2>" + _table(header, rows)


def _configurations(views: list[RunView]) -> str:
    """Runs that differ only in seed or training subset, as configurations: each metric as mean ± sd with n, and
    each configuration against the first with a 95 % interval and a verdict (docs/statistics.md)."""
    groups = replicate_groups(views)
    if len(groups) < 2 and all(len(members) < 2 for _, members in groups):
        return ""
    parts = ["<h2>Configurations compared</h2>",
             "<p>Runs differing only in their seed or training subset are replicates of one configuration: mean ± "
             "sample standard deviation over them.</p>",
             _table(["configuration", "runs"] + [name for name, _, _ in AGGREGATED], aggregate_rows(groups))]
    if len(groups) > 1:
        parts += [f"<p>Each configuration against the first ({html.escape(groups[0][0])}): the difference of the "
                  "means with a 95 % t interval over the replicates (paired by seed when both ran the same seeds, "
                  "else Welch); with one run in a group there is no estimate of the seed-to-seed spread.</p>",
                  _table(DIFFERENCE_HEADER, difference_rows(groups))]
    return "".join(parts)


def _comparison_figure(views: list[RunView]) -> str:
    fig = comparison_figure(views)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return f"<figure>{_image(buffer.getvalue(), 'runs compared')}<figcaption>runs compared</figcaption></figure>"


def extra_sentence(extra: dict[str, Any]) -> str:
    """What extra data a run trained on, in one sentence."""
    labels = extra.get("labels")
    teacher = extra.get("teacher") if isinstance(extra.get("teacher"), dict) else {}
    source = (f"pseudo-labelled by {teacher.get('checkpoint', teacher.get('path', 'a teacher'))}"
              + (f" (agreeing with the true labels on {100 * teacher['agreement_with_true_labels']:.1f} %)"
                 if isinstance(teacher.get("agreement_with_true_labels"), (int, float)) else "")
              if labels == "pseudo" else "with their own labels")
    fraction = extra.get("fraction")
    share = f"{100 * fraction:.0f} %" if isinstance(fraction, (int, float)) else "a share"
    sampler = extra.get("sampler", "uniform")  # a name (older runs) or the sampler's settings
    if isinstance(sampler, dict):
        options = ", ".join(f"{k} {v}" for k, v in sampler.items() if k != "name")
        sampler = sampler.get("name", "?") + (f" ({options})" if options else "")
    return (f"Extra data: {extra.get('examples', '?')} examples from {extra.get('source')}, {source}; {share} of "
            f"every batch, drawn by the {sampler} sampler.")


def _history_table(segments: list[dict]) -> str:
    """One row per process that trained the run: when, where, which epochs, how long, how it ended."""
    rows = []
    for s in segments:
        machine = s.get("machine") or {}
        where = f"{s.get('host', '?')}: {machine.get('gpu') or machine.get('cpu', '?')}"
        where += f", {s['processes']} processes" if (s.get("processes") or 1) > 1 else ""
        seconds = s.get("seconds")
        cells = [s.get("started", "?"), where, f"{s.get('from_epoch', '?')} → {s.get('to_epoch', '?')}",
                 duration(seconds) if isinstance(seconds, (int, float)) else "?", s.get("how") or "?"]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("started", "where", "epochs", "wall time", "how it ended"))
    return f"<table><caption>what the run went through</caption><tr>{head}</tr>{''.join(rows)}</table>"


def _run_section(v: RunView) -> str:
    parts = [f"<h2 id='{html.escape(v.name)}'>Run {html.escape(v.name)}</h2>",
             f"<p>{html.escape(str(v.run.path))}</p>"]
    if v.summary.get("catastrophic_overfitting_epoch"):
        parts.append(f"<p class='warn'>catastrophic overfitting at epoch "
                     f"{html.escape(str(v.summary['catastrophic_overfitting_epoch']))}</p>")
    extra = v.summary.get("extra") or v.methods.get("extra") or {}
    if isinstance(extra, dict) and extra.get("source"):
        parts.append(f"<p>{html.escape(extra_sentence(extra))}</p>")
    machine = v.summary.get("machine")
    if isinstance(machine, dict) and isinstance(v.summary.get("total_seconds"), (int, float)):
        device = machine.get("gpu") or f"{machine.get('cpu')} ({machine.get('isa')})"
        sentence = f"Trained in {duration(v.summary['total_seconds'])} on {device}, {machine.get('threads')} threads."
        parts.append(f"<p>{html.escape(sentence)}</p>")
    segments = (v.summary.get("history") or {}).get("segments") or []
    if segments:
        parts.append(_history_table(segments))
    if v.methods:
        parts.append("<details><summary>methods</summary><pre>" + html.escape(json.dumps(v.methods, indent=2)) +
                     "</pre></details>")
    parts.append(f"<details><summary>config</summary><pre>{html.escape(v.config)}</pre></details>")
    parts.append(_figure(v.run.curves, f"{v.name}: training curves"))
    budget = [_figure(p, f"{v.name}: {p.stem}") for p in sorted(v.run.path.glob("eval-*-budget.png"))
              if not is_replaced(p)]
    analyses = []
    for name in ANALYSES.names:
        result = read_json(v.run.analysis / f"{name}.json")
        if result is None:
            continue
        caption, note = ANALYSES[name].caption, _analysis_note(name, result)
        figure = _figure(v.run.analysis / f"{name}.png", f"{v.name}: {caption}", note)
        # Grad-CAM has no figure when no example is right under one checkpoint and wrong under the other
        analyses.append(figure or f"<p>{html.escape(caption)}: {html.escape(note)}</p>")
    if any(budget + analyses):
        parts.append("<h3>Analyses</h3><div class='grid'>" + "".join(budget + analyses) + "</div>")
    return "".join(parts)


def _analysis_note(name: str, result: dict[str, Any]) -> str:
    if not result.get("checkpoints"):
        return ""
    seconds = f" ({result['seconds']:.0f} s)" if "seconds" in result else ""
    return ANALYSES[name].note(result) + seconds


def write_report(runs: list[str | Path], out: str | Path | None = None, title: str | None = None) -> Path:
    """Write the report; by default to RUN/report.html for one run, report.html for several."""
    if not runs:
        raise ConfigError("atlens report needs at least one run directory")
    views = [RunView(r) for r in runs]
    out = Path(out) if out else (views[0].run.path / "report.html" if len(views) == 1 else Path("report.html"))
    title = title or ("atlens report: " + ", ".join(v.name for v in views))
    body = [f"<h1>{html.escape(title)}</h1>", _accuracy_tables(views)]
    if len(views) > 1:
        body += [_configurations(views), _comparison_figure(views)]
    body += [_cas_section(views), _eval_section(views)] + [_run_section(v) for v in views]
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")
    return write_text(out, page)
