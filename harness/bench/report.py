"""Reports: Markdown, CSV and LaTeX tables from the result store, with the paper's numbers beside, and
(on request) one self-contained HTML page per table and scale (:mod:`harness.bench.htmlpage`).

Each entry is the mean ± population std over the finished runs of a cell (percent, final-epoch test
accuracy), the paper's number (``≈`` where read off a figure) and ours minus the paper's. Beside each
row: whose protocol it follows (the spec's ``follows``). Under each table: the scale (with its
``about`` line), and every protocol used (``Protocol.describe()``).

Units: every record holds accuracies as fractions in [0, 1] (in-memory and streamed cells alike);
percent appears only here, when printing. A record outside [0, 1] is refused rather than printed.

Fairness (DD-Ranking style, on request with ``fairness: true`` in the spec): for a condensed set at
IPC k we also report a random real subset at the same IPC under the identical protocol and the
set's hard-label accuracy, and the label-robust score we compute as

    IOR = acc(set) - acc(random real, same IPC)           (fractions, not percent)
    HLR = acc(full data) - acc(set, hard labels)          (fractions; full_accuracy from the spec)
    LRS = (exp(w * IOR - (1 - w) * HLR) - exp(-1)) / (exp(1) - exp(-1)),  w = 0.5

(DD-Ranking, "label-robust score", with w = 0.5; in [0, 1] for IOR, HLR in [-1, 1]).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from harness.bench.htmlpage import render_html
from harness.bench.plots import render_plots, write_plots
from harness.bench.schema import TableSpec
from harness.bench.summary import (
    FAIRNESS_NOTE,
    CellSummary,
    by_dataset,
    fairness_scores,
    fmt_acc,
    follows_by_row,
    grid,
    lrs,
    scale_note,
    summarize,
)
from harness.io import atomic_write_text

__all__ = ["CellSummary", "fairness_scores", "fmt_acc", "latex", "lrs", "markdown", "scale_note", "summarize",
           "to_csv", "write_reports"]


def _fairness_rows(spec: TableSpec, group: list[CellSummary]) -> list[str]:
    """Markdown lines with IOR/HLR/LRS for main cells that have fairness siblings."""
    lines = [f"| {f.row} | {f.column} | {f.ior:+.4f} | {'–' if f.hlr is None else f'{f.hlr:+.4f}'} | "
             f"{'–' if f.lrs is None else f'{f.lrs:.4f}'} |" for f in fairness_scores(spec, group)]
    if not lines:
        return []
    return ["", FAIRNESS_NOTE, "", "| row | column | IOR | HLR | LRS |", "|---|---|---|---|---|", *lines]


def markdown(spec: TableSpec, summaries: list[CellSummary], scale: str) -> str:
    out = [f"# {spec.title or spec.name}", ""]
    if spec.source:
        out += [f"Published numbers: {spec.source.rstrip('.')}. `≈` marks values read off a figure.", ""]
    note = scale_note(spec, scale)
    out += [f"**Scale: `{scale}`**" + (f" ({note})" if note else ""), ""]
    out += ["Each entry: ours (mean ± std over runs, %, final-epoch test accuracy) / paper → difference "
            "(percentage points).", ""]
    for ds, group in by_dataset(summaries).items():
        rows, cols, by_rc = grid(group)
        follows = follows_by_row(group)
        heads = (["follows"] if follows else []) + cols
        out += [f"## {ds}", "", "| |" + "".join(f" {h} |" for h in heads), "|---" * (len(heads) + 1) + "|"]
        for r in rows:
            cells = []
            for c in cols:
                s = by_rc.get((r, c))
                if s is None:
                    cells.append("")
                    continue
                txt = fmt_acc(s)
                if s.published is not None:
                    d = s.diff
                    txt += f" / {s.published.render()}" + (f" → {d:+.2f}" if d is not None else "")
                cells.append(txt)
            out.append("| " + " | ".join([r, *([follows.get(r, "")] if follows else []), *cells]) + " |")
        out += _fairness_rows(spec, group)
        protos = sorted({s.protocol_text for s in group if s.protocol_text})
        out += ["", "Protocol(s):", *[f"- {p}" for p in protos or ["(no finished runs yet)"]]]
        done = sum(s.n for s in group)
        total = sum(s.expected_runs for s in group)
        secs = sum(s.seconds for s in group)
        out += ["", f"Runs finished: {done}/{total}; training time {secs:.0f} s in total.", ""]
    if spec.notes:
        out += ["Notes: " + spec.notes.strip(), ""]
    return "\n".join(out)


def to_csv(summaries: list[CellSummary], scale: str) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["table", "scale", "dataset", "row", "column", "role", "x", "n_runs", "expected_runs",
                "mean_acc", "std_acc", "accuracies", "paper", "paper_std", "paper_approx", "diff_pp", "cell_key",
                "protocol", "follows"])
    for s in summaries:
        p = s.published
        w.writerow([s.cell.table, scale, s.cell.dataset, s.cell.row, s.cell.column, s.cell.role, s.cell.x, s.n,
                    s.expected_runs, "" if s.mean is None else f"{100 * s.mean:.4f}",
                    "" if s.std is None else f"{100 * s.std:.4f}",
                    " ".join(f"{100 * a:.4f}" for a in s.accuracies), "" if p is None else p.value,
                    "" if p is None or p.std is None else p.std, "" if p is None else p.approx,
                    "" if s.diff is None else f"{s.diff:.4f}", s.cell.key, s.protocol_text, s.cell.follows])
    return buf.getvalue()


def _tex(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("→", r"$\to$"), ("≈", r"$\approx$"), ("±", r"$\pm$")):
        s = s.replace(a, b)
    return s


def latex(spec: TableSpec, summaries: list[CellSummary], scale: str) -> str:
    out = []
    for ds, group in by_dataset(summaries).items():
        rows, cols, cells = grid(group)
        out += [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{l" + "c" * len(cols) + "}",
                r"\toprule", " & ".join(["", *(_tex(c) for c in cols)]) + r" \\", r"\midrule"]
        for r in rows:
            ents = []
            for c in cols:
                s = cells.get((r, c))
                if s is None or s.mean is None:
                    ents.append("--")
                    continue
                e = f"{100 * s.mean:.2f}$\\pm${100 * s.std:.2f}"
                if s.published is not None:
                    e += f" ({_tex(s.published.render())})"
                ents.append(e)
            out.append(" & ".join([_tex(r), *ents]) + r" \\")
        protos = "; ".join(sorted({s.protocol_text for s in group if s.protocol_text}))
        fol = "; ".join(f"{r}: {t}" for r, t in follows_by_row(group).items())
        note = scale_note(spec, scale)
        out += [r"\bottomrule", r"\end{tabular}",
                rf"\caption{{{_tex(spec.title or spec.name)} -- {_tex(ds)}, scale \texttt{{{_tex(scale)}}}"
                + (f" ({_tex(note)})" if note else "") + ". "
                + (f"Rows follow: {_tex(fol)}. " if fol else "")
                + rf"Ours (mean$\pm$std); paper in parentheses. Protocol: {_tex(protos)}}}",
                r"\end{table}", ""]
    return "\n".join(out)


def write_reports(spec: TableSpec, results: str | Path, out_dir: str | Path, scale: str = "full",
                  plots: bool = True, html: bool = False) -> dict[str, Path]:
    """Write ``<name>-<scale>.{md,csv,tex}``, the plots (``plots``) and the self-contained HTML page
    ``<name>-<scale>.html`` (``html``; it embeds the plots when ``plots``) to ``out_dir``; returns the paths."""
    summaries = summarize(spec, results, scale)
    out = Path(out_dir)
    stem = f"{spec.name}-{scale}"
    paths = {
        "md": atomic_write_text(out / f"{stem}.md", markdown(spec, summaries, scale)),
        "csv": atomic_write_text(out / f"{stem}.csv", to_csv(summaries, scale)),
        "tex": atomic_write_text(out / f"{stem}.tex", latex(spec, summaries, scale)),
    }
    figures = render_plots(spec, summaries, scale) if plots else {}
    paths.update(write_plots(spec, figures, out, scale))
    if html:
        page = render_html(spec, summaries, scale, {ds: blobs["png"] for ds, blobs in figures.items()})
        paths["html"] = atomic_write_text(out / f"{stem}.html", page)
    return paths
