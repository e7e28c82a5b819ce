"""Reports: Markdown, CSV and LaTeX tables from the result store, with the paper's numbers beside.

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
import math
from collections import defaultdict
from pathlib import Path

from harness.bench.plots import plot_table
from harness.bench.schema import TableSpec
from harness.bench.summary import CellSummary, fmt_acc, summarize
from harness.io import atomic_write_text

__all__ = ["CellSummary", "fmt_acc", "latex", "lrs", "markdown", "scale_note", "summarize", "to_csv",
           "write_reports"]


def lrs(acc_set: float, acc_random: float, acc_full: float, acc_hard: float, w: float = 0.5) -> float:
    """DD-Ranking-style label-robust score from fractions (see the module docstring)."""
    ior, hlr = acc_set - acc_random, acc_full - acc_hard
    return (math.exp(w * ior - (1 - w) * hlr) - math.exp(-1)) / (math.exp(1) - math.exp(-1))


def _grid(summaries: list[CellSummary]) -> tuple[list[str], list[str], dict[tuple[str, str], CellSummary]]:
    rows, cols, grid = [], [], {}
    for s in summaries:
        if s.cell.row not in rows:
            rows.append(s.cell.row)
        if s.cell.column not in cols:
            cols.append(s.cell.column)
        grid[(s.cell.row, s.cell.column)] = s
    return rows, cols, grid


def _by_dataset(summaries: list[CellSummary]) -> dict[str, list[CellSummary]]:
    out: dict[str, list[CellSummary]] = defaultdict(list)
    for s in summaries:
        out[s.cell.dataset].append(s)
    return dict(out)


def _fairness_rows(spec: TableSpec, group: list[CellSummary]) -> list[str]:
    """Markdown lines with IOR/HLR/LRS for main cells that have fairness siblings."""
    lines = []
    full = spec.full_accuracy
    idx = {(s.cell.row, s.cell.column): s for s in group}
    for s in group:
        if s.cell.role != "main" or s.mean is None or "ipc" not in s.cell.config:
            continue
        rnd = idx.get((f"random real (IPC {s.cell.config['ipc']})", s.cell.column))
        hard = idx.get((f"{s.cell.row} [hard label]", s.cell.column))
        if rnd is None or hard is None or rnd.mean is None or hard.mean is None:
            continue
        ds_full = full.get(s.cell.dataset)
        ior = s.mean - rnd.mean
        hlr = (ds_full / 100 - hard.mean) if ds_full is not None else None
        score = lrs(s.mean, rnd.mean, ds_full / 100, hard.mean) if ds_full is not None else None
        lines.append(f"| {s.cell.row} | {s.cell.column} | {ior:+.4f} | "
                     f"{'–' if hlr is None else f'{hlr:+.4f}'} | {'–' if score is None else f'{score:.4f}'} |")
    if not lines:
        return []
    return ["", "Fairness (fractions): IOR = acc(set) − acc(random real, same IPC); HLR = acc(full) − "
            "acc(set, hard labels); LRS = (exp(0.5·IOR − 0.5·HLR) − e⁻¹)/(e − e⁻¹).", "",
            "| row | column | IOR | HLR | LRS |", "|---|---|---|---|---|", *lines]


def scale_note(spec: TableSpec, scale: str) -> str:
    """The scale's ``about`` line, else a generic warning for any scale but ``full``."""
    about = str(spec.scale(scale).get("about", "")).strip()
    if about:
        return about
    return ("scaled down: epochs, runs and data are reduced; numbers are not comparable with the paper's"
            if scale != "full" else "")


def _follows(group: list[CellSummary]) -> dict[str, str]:
    """Row label -> the protocol it follows (the first non-empty text among its cells)."""
    out: dict[str, str] = {}
    for s in group:
        if s.cell.follows and not out.get(s.cell.row):
            out[s.cell.row] = s.cell.follows
    return out


def markdown(spec: TableSpec, summaries: list[CellSummary], scale: str) -> str:
    out = [f"# {spec.title or spec.name}", ""]
    if spec.source:
        out += [f"Published numbers: {spec.source.rstrip('.')}. `≈` marks values read off a figure.", ""]
    note = scale_note(spec, scale)
    out += [f"**Scale: `{scale}`**" + (f" ({note})" if note else ""), ""]
    out += ["Each entry: ours (mean ± std over runs, %, final-epoch test accuracy) / paper → difference "
            "(percentage points).", ""]
    for ds, group in _by_dataset(summaries).items():
        rows, cols, grid = _grid(group)
        follows = _follows(group)
        heads = (["follows"] if follows else []) + cols
        out += [f"## {ds}", "", "| |" + "".join(f" {h} |" for h in heads), "|---" * (len(heads) + 1) + "|"]
        for r in rows:
            cells = []
            for c in cols:
                s = grid.get((r, c))
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
    for ds, group in _by_dataset(summaries).items():
        rows, cols, grid = _grid(group)
        out += [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{l" + "c" * len(cols) + "}",
                r"\toprule", " & ".join(["", *(_tex(c) for c in cols)]) + r" \\", r"\midrule"]
        for r in rows:
            ents = []
            for c in cols:
                s = grid.get((r, c))
                if s is None or s.mean is None:
                    ents.append("--")
                    continue
                e = f"{100 * s.mean:.2f}$\\pm${100 * s.std:.2f}"
                if s.published is not None:
                    e += f" ({_tex(s.published.render())})"
                ents.append(e)
            out.append(" & ".join([_tex(r), *ents]) + r" \\")
        protos = "; ".join(sorted({s.protocol_text for s in group if s.protocol_text}))
        fol = "; ".join(f"{r}: {t}" for r, t in _follows(group).items())
        note = scale_note(spec, scale)
        out += [r"\bottomrule", r"\end{tabular}",
                rf"\caption{{{_tex(spec.title or spec.name)} -- {_tex(ds)}, scale \texttt{{{_tex(scale)}}}"
                + (f" ({_tex(note)})" if note else "") + ". "
                + (f"Rows follow: {_tex(fol)}. " if fol else "")
                + rf"Ours (mean$\pm$std); paper in parentheses. Protocol: {_tex(protos)}}}",
                r"\end{table}", ""]
    return "\n".join(out)


def write_reports(spec: TableSpec, results: str | Path, out_dir: str | Path, scale: str = "full",
                  plots: bool = True) -> dict[str, Path]:
    """Write ``<name>-<scale>.{md,csv,tex}`` (and plots) to ``out_dir``; returns the paths."""
    summaries = summarize(spec, results, scale)
    out = Path(out_dir)
    stem = f"{spec.name}-{scale}"
    paths = {
        "md": atomic_write_text(out / f"{stem}.md", markdown(spec, summaries, scale)),
        "csv": atomic_write_text(out / f"{stem}.csv", to_csv(summaries, scale)),
        "tex": atomic_write_text(out / f"{stem}.tex", latex(spec, summaries, scale)),
    }
    if plots:
        paths.update(plot_table(spec, summaries, out, scale))
    return paths
