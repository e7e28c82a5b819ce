"""Plots (matplotlib, Agg): accuracy vs the table's x (pruning rate or IPC) per row, with error
bars (std over runs) and the paper's numbers as hollow markers; one PNG and one PDF per dataset.

:func:`render_plots` draws them in memory (the HTML page embeds the PNG bytes); :func:`plot_table`
writes them as files. Neither reads the clock: the PDF carries no creation date, so the same records
give the same bytes.
"""

from __future__ import annotations

import io
import textwrap
from collections import defaultdict
from pathlib import Path

from harness.bench.schema import TableSpec
from harness.bench.summary import CellSummary
from harness.io import atomic_write_bytes

__all__ = ["plot_table", "render_plots", "write_plots"]

# no timestamps, no software string: the bytes depend on the records alone
_METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Creator": None, "Producer": None}}


def render_plots(spec: TableSpec, summaries: list[CellSummary], scale: str) -> dict[str, dict[str, bytes]]:
    """Dataset -> {"png": bytes, "pdf": bytes} for every dataset with something to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures: dict[str, dict[str, bytes]] = {}
    by_ds: dict[str, list[CellSummary]] = defaultdict(list)
    for s in summaries:
        by_ds[s.cell.dataset].append(s)
    for ds, group in by_ds.items():
        series: dict[str, list[CellSummary]] = defaultdict(list)
        for s in group:
            src = s.cell.config.get("source_ipc")
            series[s.cell.row + (f" (from IPC {src})" if src is not None else "")].append(s)
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        plotted = False
        for i, (name, items) in enumerate(series.items()):
            items = [s for s in items if isinstance(s.cell.x, (int, float))]
            if not items:
                continue
            items.sort(key=lambda s: float(s.cell.x))
            color = f"C{i % 10}"
            ours = [s for s in items if s.mean is not None]
            if ours:
                ax.errorbar([float(s.cell.x) for s in ours], [100 * s.mean for s in ours],
                            yerr=[100 * s.std for s in ours], marker="o", capsize=3, color=color, label=name)
                plotted = True
            pub = [s for s in items if s.published is not None]
            if pub:
                ax.plot([float(s.cell.x) for s in pub], [s.published.value for s in pub], linestyle="--",
                        marker="o", markerfacecolor="none", color=color, alpha=0.7,
                        label=f"{name} (paper)" if not ours else None)
                plotted = True
        if not plotted:
            plt.close(fig)
            continue
        ax.set_xlabel(spec.x_label or "x")
        ax.set_ylabel("test accuracy (%)")
        title = textwrap.fill(f"{spec.title or spec.name} — {ds} [scale: {scale}]", width=80)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.text(0.01, 0.005, "solid: ours (mean ± std); dashed hollow: paper", fontsize=6)
        fig.tight_layout()
        figures[ds] = {}
        for ext in ("png", "pdf"):
            buf = io.BytesIO()
            fig.savefig(buf, format=ext, dpi=120, metadata=_METADATA[ext])
            figures[ds][ext] = buf.getvalue()
        plt.close(fig)
    return figures


def write_plots(spec: TableSpec, figures: dict[str, dict[str, bytes]], out_dir: str | Path,
                scale: str) -> dict[str, Path]:
    """Write ``<name>-<scale>-<dataset>.{png,pdf}`` (atomically); returns ``{"<dataset>.<ext>": path}``."""
    out = Path(out_dir)
    paths: dict[str, Path] = {}
    for ds, blobs in figures.items():
        for ext, data in blobs.items():
            paths[f"{ds}.{ext}"] = atomic_write_bytes(out / f"{spec.name}-{scale}-{ds}.{ext}", data)
    return paths


def plot_table(spec: TableSpec, summaries: list[CellSummary], out_dir: str | Path, scale: str) -> dict[str, Path]:
    """Draw and write the plots of a table (see :func:`render_plots`)."""
    return write_plots(spec, render_plots(spec, summaries, scale), out_dir, scale)
