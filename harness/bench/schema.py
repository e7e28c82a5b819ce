"""The shape of a table spec: the keys a cell config may carry, the global defaults and scales, and the
parsed spec itself (:class:`TableSpec`, its rows and columns as :class:`Axis`, published numbers).

Pure data and merging; nothing here reads a registry (that is :mod:`harness.bench.spec`'s validation)
or runs anything. Every other module of the bench builds on it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.errors import ConfigError

# --- keys a cell config may carry --------------------------------------------------------------
CELL_KEYS: dict[str, str] = {
    "kind": "cell kind: evaluate | coreset | condense | shrink (harness.bench.kinds)",
    "dataset": "dataset registry name",
    "protocol": "evaluation/training protocol preset name",
    "protocol_overrides": "mapping of TrainProtocol fields to override",
    "model": "evaluation model (overrides the protocol's)",
    "runs": "number of runs (fresh models) per cell (per experiment with 'experiments')",
    "seeds": "list of seeds, one per run (default: seed, seed+1, ...)",
    "seed": "base seed when seeds is not given",
    "upstream_seed": "seed of the work upstream of training (random subset, dynamics and selection, condensation, "
                     "shrinking), shared by every run of the cell; default: each run's own seed",
    "recipe": "pruning/selection recipe name (coreset, shrink)",
    "method": "condensation method (condense; shrink with source condense) or label for evaluate rows",
    "source": "evaluate: random_real | full | published; shrink: condense | published",
    "source_format": "published-set format name (adapters.loaders)",
    "source_path": "path to a published/condensed set (relative: under the data root)",
    "source_options": "published sets: options of the format's loader (e.g. {zca: true}; {method: KIP} for krr)",
    "experiment": "index of the experiment inside a published file",
    "experiments": "published sets: experiments of the file to evaluate, each with the cell's runs; experiment e's "
                   "seeds are the cell's seeds + 1000 * e",
    "ipc": "images per class (target IPC)",
    "source_ipc": "IPC of the condensed source set (shrink)",
    "prune_rate": "fraction of the training data removed (coreset)",
    "drop_criterion": "GoldFromOres drop criterion, e.g. LossInit_large",
    "drop_ratio": "GoldFromOres fraction dropped per class",
    "drop_scores": "GoldFromOres scores: 'authors' (the released file under <data root>/goldfromores) or a "
                   ".json/.npy path index-aligned with our dataset order; default: computed",
    "dynamics_protocol": "protocol of the dynamics (score) training run",
    "dynamics_epochs": "epochs of the dynamics run",
    "dynamics_overrides": "mapping of TrainProtocol fields for the dynamics run (coreset)",
    "train_per_class": "limit the real training split to this many images per class (scales)",
    "test_per_class": "limit the test split to this many images per class (scales)",
    "streaming": "documents that the dataset streams (set by the dataset spec, e.g. imagenet): DDP under torchrun",
    "nproc": "streamed coreset cells: DDP processes (default: the GPUs, else 1 CPU process)",
    "num_workers": "streamed coreset cells: DataLoader workers per process (default 4)",
    "img_size": "streamed coreset cells: training resolution (default: the dataset's, 224 for imagenet)",
    "hard_label": "evaluate with hard labels even when the set has soft labels",
    "params": "free-form mapping passed to the cell kind's library function",
    "label": "display label (rows/columns)",
    "published": "paper numbers per column label (percent); '~x' marks fig≈",
    "published_std": "paper std per column label (percent)",
    "follows": "defaults / rows only: whose protocol the row follows (paper, file, setting); display only",
    "about": "scales only: one line the reports print about the scale (display only)",
    "x": "numeric x value used by plots (IPC, pruning rate)",
    "only_columns": "rows and scales: run just these column labels",
    "only_rows": "scales only: run just these row labels",
    "row_overrides": "scales only: {row label: overrides} applied after the scale (per-row settings of a scale)",
    "dataset_map": "scales only: run a dataset's cells on another (e.g. cifar10 -> cifar10-jpeg75)",
    "skip_datasets": "scales only: datasets whose cells this scale leaves out (e.g. not available offline)",
    "fairness": "add DD-Ranking-style fairness cells (random real same IPC; hard-label accuracy)",
}
TOP_KEYS = {"name", "title", "source", "notes", "defaults", "datasets", "rows", "columns", "cells", "scales",
            "fairness", "full_accuracy", "plot", "x_label"}
# keys that shape the grid or the reports and never enter a cell's config (or its hash)
DISPLAY_KEYS = ("label", "published", "published_std", "x", "fairness", "follows", "only_columns")
SCALE_ONLY_KEYS = ("about", "only_columns", "only_rows", "row_overrides", "dataset_map", "skip_datasets")
# the seed offset between experiments of a multi-experiment published file (scripts/eval_vico_mnist.py's
# convention: experiment e, run r -> seed 1000 * e + r)
EXPERIMENT_SEED_STRIDE = 1000

GLOBAL_DEFAULTS: dict[str, Any] = {"kind": "evaluate", "runs": 1, "seed": 0}

GLOBAL_SCALES: dict[str, dict[str, Any]] = {
    "full": {},
    "smoke": {"runs": 1, "protocol_overrides": {"epochs": 2, "runs": 1}, "train_per_class": 20,
              "test_per_class": 20, "dynamics_epochs": 2, "params": {"iterations": 2}},
}


@dataclass(frozen=True)
class Published:
    """One published number (percent), with whether it was read off a figure."""

    value: float
    std: float | None = None
    approx: bool = False
    source: str = ""

    def render(self) -> str:
        s = f"{'≈' if self.approx else ''}{self.value:.2f}"
        return s + (f" ± {self.std:.2f}" if self.std is not None else "")


@dataclass(frozen=True)
class Axis:
    """A row or column: its label, its overrides and where it sits in the YAML."""

    label: str
    config: dict[str, Any]
    path: tuple[Any, ...]


@dataclass(frozen=True)
class TableSpec:
    name: str
    title: str
    source: str
    path: str
    defaults: dict[str, Any]
    datasets: tuple[str | None, ...]
    rows: tuple[Axis, ...]
    columns: tuple[Axis, ...]
    cells: dict[tuple[str, str], dict[str, Any]]
    scales: dict[str, dict[str, Any]]
    fairness: bool = False
    full_accuracy: dict[str, float] = field(default_factory=dict)
    x_label: str = ""
    notes: str = ""
    lines: dict[tuple[Any, ...], int] = field(default_factory=dict, repr=False, compare=False)
    cell_paths: dict[tuple[str, str], tuple[Any, ...]] = field(default_factory=dict, repr=False, compare=False)

    def line_of(self, path: tuple[Any, ...]) -> int | None:
        """The 1-based YAML line of ``path`` (or of its nearest ancestor)."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None

    def where(self, path: tuple[Any, ...]) -> str:
        line = self.line_of(path)
        return f"{self.path}:{line}" if line else self.path

    def scale(self, name: str) -> dict[str, Any]:
        scales = {**GLOBAL_SCALES, **self.scales}
        if name not in scales:
            raise ConfigError(f"{self.path}: unknown scale {name!r} (known: {', '.join(sorted(scales))})")
        return scales[name]


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` wins; nested ``protocol_overrides``/``dynamics_overrides``/``params`` mappings merge key by key."""
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if k in MERGED_KEYS and isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = {**out[k], **copy.deepcopy(dict(v))}
        else:
            out[k] = copy.deepcopy(v)
    return out


MERGED_KEYS = ("protocol_overrides", "dynamics_overrides", "params")


def parse_published(value: Any, where: str) -> Published:
    if isinstance(value, Published):
        return value
    if isinstance(value, bool) or value is None:
        raise ConfigError(f"{where}: published value {value!r} is not a number")
    if isinstance(value, (int, float)):
        return Published(float(value))
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([~≈])?\s*([0-9.]+)\s*(?:(?:±|\+-)\s*([0-9.]+))?\s*", value)
        if not m:
            raise ConfigError(f"{where}: published value {value!r}: expected 12.3, '~12.3' or '12.3 ± 0.4'")
        return Published(float(m.group(2)), float(m.group(3)) if m.group(3) else None, bool(m.group(1)))
    if isinstance(value, Mapping):
        try:
            return Published(float(value["value"]), None if value.get("std") is None else float(value["std"]),
                             bool(value.get("approx", False)), str(value.get("source", "")))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{where}: published entry {dict(value)!r}: {e}") from None
    raise ConfigError(f"{where}: published value {value!r} has an unknown form")


def flat_published(pub: Any) -> list[tuple[tuple[str, ...], Any]]:
    """``{label: v}`` or ``{dataset: {label: v}}`` as ((dataset?, label), v) pairs."""
    out = []
    for k, v in (pub or {}).items():
        if isinstance(v, Mapping) and "value" not in v:
            out.extend(((k, lab), val) for lab, val in v.items())
        else:
            out.append(((k,), v))
    return out
