"""Declarative benchmark-table specs (``benchmarks/tables/*.yaml``) and their validation.

A spec is a grid: ``rows`` (recipes or methods) x ``columns`` (IPC, target IPC, pruning rate,
model ...), optionally x ``datasets``. Every cell's config is the merge, later wins, of

    GLOBAL defaults <- spec ``defaults`` <- dataset <- row <- column <- ``cells`` overrides

where ``protocol_overrides`` and ``params`` merge key by key. A ``scale`` (``full``, ``smoke`` or
one defined under the spec's ``scales``) is applied last: it shrinks epochs, runs and data for a
CPU smoke run, and its name is part of every cell's hash and is stated in every report.

Every row says whose protocol it follows: ``follows: "<paper, file / setting>"`` in ``defaults`` or on
a row (a display key like ``published``: it is printed beside the row in every report and does not
change any cell's hash). A scale may carry ``about: "<one line>"``, which the reports print with the
scale's name (e.g. that ``smoke`` is a smoke scale, or what an ``epoch-matched`` alternative changes).

Published numbers travel with the spec: ``published: {<column label>: 93.0 | "~86" | {value,
std, approx, source}}`` on a row, in percent as the papers print them; ``~``/``approx: true`` marks
values read off a figure (fig≈). The spec's ``source`` names the reference-doc section.

Everything is validated before anything runs; a bad entry raises :class:`ConfigError` naming the
file and the YAML line of the offending key (from ``yaml.compose`` node marks).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError
from harness.validate import check_values

# --- keys a cell config may carry --------------------------------------------------------------
CELL_KEYS: dict[str, str] = {
    "kind": "cell kind: evaluate | coreset | condense | shrink (see harness.bench.cells)",
    "dataset": "dataset registry name",
    "protocol": "evaluation/training protocol preset name",
    "protocol_overrides": "mapping of TrainProtocol fields to override",
    "model": "evaluation model (overrides the protocol's)",
    "runs": "number of runs (fresh models) per cell",
    "seeds": "list of seeds, one per run (default: seed, seed+1, ...)",
    "seed": "base seed when seeds is not given",
    "recipe": "pruning/selection recipe name (coreset, shrink)",
    "method": "condensation method (condense) or label for evaluate rows",
    "source": "evaluate: random_real | full | published; shrink: the condensed source",
    "source_format": "published-set format name (adapters.loaders)",
    "source_path": "path to a published/condensed set",
    "experiment": "index of the experiment inside a published file",
    "ipc": "images per class (target IPC)",
    "source_ipc": "IPC of the condensed source set (shrink)",
    "prune_rate": "fraction of the training data removed (coreset)",
    "drop_criterion": "GoldFromOres drop criterion, e.g. LossInit_large",
    "drop_ratio": "GoldFromOres fraction dropped per class",
    "dynamics_protocol": "protocol of the dynamics (score) training run",
    "dynamics_epochs": "epochs of the dynamics run",
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
    "only_columns": "scales only: run just these column labels",
    "dataset_map": "scales only: run a dataset's cells on another (e.g. cifar10 -> cifar10-jpeg75)",
    "skip_datasets": "scales only: datasets whose cells this scale leaves out (e.g. not available offline)",
    "fairness": "add DD-Ranking-style fairness cells (random real same IPC; hard-label accuracy)",
}
TOP_KEYS = {"name", "title", "source", "notes", "defaults", "datasets", "rows", "columns", "cells", "scales",
            "fairness", "full_accuracy", "plot", "x_label"}

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


# --- YAML with line numbers -------------------------------------------------------------------
def _line_map(node: yaml.Node, path: tuple[Any, ...] = (), out: dict | None = None) -> dict[tuple[Any, ...], int]:
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = yaml.safe_load(yaml.serialize(k)) if not isinstance(k, yaml.ScalarNode) else k.value
            out[path + (key,)] = k.start_mark.line + 1
            _line_map(v, path + (key,), out)
            out[path + (key,)] = k.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _line_map(v, path + (i,), out)
    return out


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` wins; nested ``protocol_overrides``/``params`` mappings merge key by key."""
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if k in ("protocol_overrides", "params") and isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = {**out[k], **copy.deepcopy(dict(v))}
        else:
            out[k] = copy.deepcopy(v)
    return out


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


def _axis_label(cfg: Mapping[str, Any], kind: str) -> str:
    if "label" in cfg:
        return str(cfg["label"])
    if kind == "row":
        for k in ("recipe", "method", "source", "drop_criterion"):
            if k in cfg:
                return str(cfg[k])
    parts = []
    if "dataset" in cfg:
        parts.append(str(cfg["dataset"]))
    if "source_ipc" in cfg and "ipc" in cfg:
        parts.append(f"{cfg['source_ipc']}→{cfg['ipc']}")
    elif "ipc" in cfg:
        parts.append(f"IPC {cfg['ipc']}")
    if "prune_rate" in cfg:
        parts.append(f"{round(100 * float(cfg['prune_rate']))}%")
    if "drop_ratio" in cfg:
        parts.append(f"drop {cfg['drop_ratio']}")
    if "model" in cfg and kind == "column":
        parts.append(str(cfg["model"]))
    return " ".join(parts) or "all"


def load_spec(path: str | Path) -> TableSpec:
    """Parse and validate a spec file (raises :class:`ConfigError` with file:line)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the table spec ({e.strerror})") from None
    return parse_spec(text, str(p))


def parse_spec(text: str, path: str = "<spec>") -> TableSpec:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(raw, dict) or node is None:
        raise ConfigError(f"{path}: a table spec is a mapping with rows and columns")
    lines = _line_map(node)

    def where(*keys: Any) -> str:
        cur = tuple(keys)
        while cur and cur not in lines:
            cur = cur[:-1]
        return f"{path}:{lines.get(cur, 1)}"

    for k in raw:
        if k not in TOP_KEYS:
            raise ConfigError(f"{where(k)}: unknown top-level key {k!r} (known: {', '.join(sorted(TOP_KEYS))})")
    for key in ("rows", "columns"):
        if not isinstance(raw.get(key), list) or not raw[key]:
            raise ConfigError(f"{where(key)}: {key!r} must be a non-empty list (the grid is empty)")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(f"{where('defaults')}: defaults must be a mapping")

    def axes(key: str, kind: str) -> tuple[Axis, ...]:
        out, seen = [], set()
        for i, item in enumerate(raw[key]):
            if not isinstance(item, dict):
                raise ConfigError(f"{where(key, i)}: each {kind} is a mapping of cell keys")
            label = _axis_label(item, kind)
            if label in seen:
                raise ConfigError(f"{where(key, i)}: duplicate {kind} label {label!r}; give it a distinct 'label'")
            seen.add(label)
            out.append(Axis(label, dict(item), (key, i)))
        return tuple(out)

    datasets_raw = raw.get("datasets")
    if datasets_raw is not None and (not isinstance(datasets_raw, list) or not datasets_raw):
        raise ConfigError(f"{where('datasets')}: datasets must be a non-empty list")
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for i, item in enumerate(raw.get("cells") or []):
        if not isinstance(item, dict) or "row" not in item or "column" not in item:
            raise ConfigError(f"{where('cells', i)}: a cell override needs 'row' and 'column' labels")
        rest = {k: v for k, v in item.items() if k not in ("row", "column")}
        cells[(str(item["row"]), str(item["column"]))] = rest
    scales = raw.get("scales") or {}
    if not isinstance(scales, dict) or not all(isinstance(v, dict) for v in scales.values()):
        raise ConfigError(f"{where('scales')}: scales map a name to a mapping of overrides")
    spec = TableSpec(
        name=str(raw.get("name") or Path(path).stem), title=str(raw.get("title", "")),
        source=str(raw.get("source", "")), path=path, defaults=defaults,
        datasets=tuple(datasets_raw) if datasets_raw else (None,),
        rows=axes("rows", "row"), columns=axes("columns", "column"), cells=cells, scales=scales,
        fairness=bool(raw.get("fairness", False)), full_accuracy=dict(raw.get("full_accuracy") or {}),
        x_label=str(raw.get("x_label", "")), notes=str(raw.get("notes", "")), lines=lines,
    )
    validate_spec(spec)
    return spec


# --- validation --------------------------------------------------------------------------------
def _known(kind: str) -> set[str] | None:
    """Registered names of ``kind`` from the owning modules, or None when a module is not there yet."""
    try:
        if kind == "dataset":
            from harness.data import list_datasets

            return set(list_datasets())
        if kind == "protocol":
            from harness.engine.protocol import list_protocols

            return set(list_protocols())
        if kind == "model":
            from harness.models import VICO_NAMES, list_models

            return set(list_models()) | set(VICO_NAMES)
        if kind == "recipe":
            from harness.bench.cells import known_recipes

            return known_recipes()
        if kind == "method":
            from harness.bench.cells import known_methods

            return known_methods()
        if kind == "criterion":
            from adapters.condense.goldfromores import criterion_names

            return set(criterion_names()) | {"random", "rand"}
        if kind == "kind":
            from harness.bench.cells import list_cell_kinds

            return set(list_cell_kinds())
    except ImportError:
        return None
    return None


def _check_name(value: Any, kind: str, where: str) -> None:
    known = _known(kind)
    if known is None:
        return
    if kind == "model" and isinstance(value, str):
        import timm

        if value in known or value in timm.list_models(value):
            return
    if not isinstance(value, str) or value not in known:
        from harness.registry import near_matches

        near = near_matches(str(value), sorted(known))
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise ConfigError(f"{where}: unknown {kind} {value!r}{hint}")


def _validate_config(cfg: Mapping[str, Any], where_key) -> None:
    from harness.engine.protocol import TrainProtocol

    proto_fields = set(TrainProtocol.__dataclass_fields__)
    for k, v in cfg.items():
        w = where_key(k)
        if k not in CELL_KEYS:
            raise ConfigError(f"{w}: unknown cell key {k!r} (known: {', '.join(sorted(CELL_KEYS))})")
        if k in ("dataset", "protocol", "model", "recipe", "kind", "dynamics_protocol"):
            _check_name(v, "protocol" if k == "dynamics_protocol" else k, w)
        if k == "method" and cfg.get("kind") in ("condense", "shrink"):
            _check_name(v, "method", w)
        if k == "drop_criterion":
            _check_name(v, "criterion", w)
        if k == "dataset_map" and isinstance(v, Mapping):
            for a, b in v.items():
                _check_name(b, "dataset", where_key(k, a))
        if k == "protocol_overrides":
            if not isinstance(v, Mapping):
                raise ConfigError(f"{w}: protocol_overrides must be a mapping")
            for pk in v:
                if pk not in proto_fields:
                    raise ConfigError(f"{where_key(k, pk)}: unknown protocol key {pk!r} "
                                      f"(known: {', '.join(sorted(proto_fields))})")
                # type and range of each value (epochs: -2, lr: abc fail here, not in every unit at run time)
                check_values(TrainProtocol, {pk: v[pk]}, f"{where_key(k, pk)}: protocol_overrides", exclude=("name",))
        if k in ("params", "dataset_map") and not isinstance(v, Mapping):
            raise ConfigError(f"{w}: {k} must be a mapping, got {v!r}")
        if k in _INT_KEYS and not _is_int(v, _INT_KEYS[k]):
            what = "a positive integer" if _INT_KEYS[k] == 1 else "a non-negative integer"
            raise ConfigError(f"{w}: {k} must be {what}, got {v!r}")
        if k in ("prune_rate", "drop_ratio") and not (
                isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1):
            raise ConfigError(f"{w}: {k} must be a fraction in [0, 1), got {v!r}")
        if k == "seeds" and (not isinstance(v, list) or not v or not all(_is_int(s, 0) for s in v)):
            raise ConfigError(f"{w}: seeds must be a non-empty list of non-negative integers, got {v!r}")
        if k == "x" and not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)):
            raise ConfigError(f"{w}: x must be a finite number, got {v!r}")
        if k in ("hard_label", "fairness", "streaming") and not isinstance(v, bool):
            raise ConfigError(f"{w}: {k} must be true or false, got {v!r}")


# integer cell keys and their minimum
_INT_KEYS: dict[str, int] = {"runs": 1, "ipc": 1, "source_ipc": 1, "train_per_class": 1, "test_per_class": 1,
                             "dynamics_epochs": 1, "nproc": 1, "img_size": 1, "num_workers": 0, "seed": 0,
                             "experiment": 0}


def _is_int(v: Any, lo: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= 2**31 - 1


def _check_cell_settings(spec: TableSpec, cell: Any, scale: str) -> None:
    """Build the cell's protocol (and a condense cell's config) now, so a bad combination fails at load."""
    from harness.bench.cells import resolve_protocol

    where = f"{spec.where(cell.origin)} (cell {cell.row} / {cell.column}, scale {scale})"
    try:
        resolve_protocol(cell.config)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    if cell.config.get("kind") == "condense" and isinstance(cell.config.get("method"), str):
        try:
            from adapters.condense import create_condenser
        except ImportError:
            return
        from harness.registry import UnknownNameError

        params = {k: v for k, v in (cell.config.get("params") or {}).items() if k != "pre_prune_params"}
        try:
            cond = create_condenser(cell.config["method"].lower())
        except UnknownNameError:  # the method name itself is checked (with its line) by _check_name
            return
        params = check_values(cond.config_cls, params, f"{where}: params")
        try:
            cond.default_config(**params)
        except ConfigError as e:
            raise ConfigError(f"{where}: params: {e}") from None


def _flat_published(pub: Any) -> list[tuple[tuple[str, ...], Any]]:
    """``{label: v}`` or ``{dataset: {label: v}}`` as ((dataset?, label), v) pairs."""
    out = []
    for k, v in (pub or {}).items():
        if isinstance(v, Mapping) and "value" not in v:
            out.extend(((k, lab), val) for lab, val in v.items())
        else:
            out.append(((k,), v))
    return out


def _check_placement(spec: TableSpec) -> None:
    """``follows`` (text) only in defaults and on rows; ``about`` (text) only in scales."""
    places: list[tuple[str, Mapping[str, Any], tuple[Any, ...]]] = [("defaults", spec.defaults, ("defaults",))]
    places += [("row", r.config, r.path) for r in spec.rows]
    places += [("column", c.config, c.path) for c in spec.columns]
    places += [("cell override", over, ("cells", i)) for i, over in enumerate(spec.cells.values())]
    places += [("scale", sc, ("scales", name)) for name, sc in spec.scales.items()]
    for kind, cfg, path in places:
        for key, allowed in (("follows", ("defaults", "row")), ("about", ("scale",))):
            if key not in cfg:
                continue
            where = spec.where(path + (key,))
            if kind not in allowed:
                raise ConfigError(f"{where}: {key!r} belongs in {' or '.join(allowed)}, not in a {kind}")
            if not isinstance(cfg[key], str) or not cfg[key].strip():
                raise ConfigError(f"{where}: {key} must be non-empty text, got {cfg[key]!r}")


def validate_spec(spec: TableSpec) -> None:
    """Check every key, name and grid entry; errors carry the YAML line of the offending entry."""
    def wk(prefix: tuple[Any, ...]):
        return lambda *keys: spec.where(prefix + keys)

    _validate_config(spec.defaults, wk(("defaults",)))
    _check_placement(spec)
    for i, d in enumerate(spec.datasets):
        if d is not None:
            _check_name(d, "dataset", spec.where(("datasets", i)))
    for axis in (*spec.rows, *spec.columns):
        cfg = {k: v for k, v in axis.config.items() if k not in ("published", "published_std")}
        _validate_config(cfg, wk(axis.path))
        for label, val in _flat_published(axis.config.get("published")):
            parse_published(val, spec.where(axis.path + ("published", *label)))
    col_labels = {c.label for c in spec.columns}
    row_labels = {r.label for r in spec.rows}
    for i, ((r, c), over) in enumerate(spec.cells.items()):
        if r not in row_labels or c not in col_labels:
            raise ConfigError(f"{spec.where(('cells', i))}: cell override names row {r!r} / column {c!r}, "
                              f"which is not in the grid")
        _validate_config(over, wk(("cells", i)))
    for name, sc in spec.scales.items():
        _validate_config(sc, wk(("scales", name)))
    for r in spec.rows:
        for path_, _ in _flat_published(r.config.get("published")):
            label = path_[-1]
            if label not in col_labels:
                raise ConfigError(f"{spec.where(r.path + ('published', *path_))}: published number for column "
                                  f"{label!r}, which is not a column (columns: {', '.join(sorted(col_labels))})")
    # every merged cell must have a dataset and a protocol
    from harness.bench.cells import expand

    cells = expand(spec, "full")
    if not cells:
        raise ConfigError(f"{spec.path}: the grid is empty")
    for cell in cells:
        if cell.config.get("kind") in ("condense", "shrink") and "method" in cell.config:
            row = next(r for r in spec.rows if r.label == cell.row) if cell.role == "main" else None
            _check_name(cell.config["method"], "method", spec.where(row.path if row else cell.origin))
        for req in ("dataset", "protocol"):
            if req not in cell.config:
                raise ConfigError(f"{spec.where(cell.origin)}: cell ({cell.row}, {cell.column}) has no {req!r} "
                                  f"(set it in defaults, the row or the column)")
    for scale in sorted({**GLOBAL_SCALES, **spec.scales}):
        for cell in (cells if scale == "full" else expand(spec, scale)):
            _check_cell_settings(spec, cell, scale)
