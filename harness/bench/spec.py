"""Declarative benchmark-table specs (``benchmarks/tables/*.yaml``) and their validation.

A spec is a grid: ``rows`` (recipes or methods) x ``columns`` (IPC, target IPC, pruning rate,
model ...), optionally x ``datasets``. Every cell's config is the merge, later wins, of

    GLOBAL defaults <- spec ``defaults`` <- dataset <- row <- column <- ``cells`` overrides

where ``protocol_overrides``, ``dynamics_overrides`` and ``params`` merge key by key. A row may span only
some columns (``only_columns``). A ``scale`` (``full``, ``smoke`` or one defined under the spec's
``scales``) is applied last: it shrinks epochs, runs and data for a CPU run, may keep only some rows
and columns (``only_rows``, ``only_columns``), remap or skip datasets, and set per-row values
(``row_overrides: {row label: overrides}``, applied after the scale). Its name is part of every cell's
hash and is stated in every report.

Every row says whose protocol it follows: ``follows: "<paper, file / setting>"`` in ``defaults`` or on
a row (a display key like ``published``: it is printed beside the row in every report and does not
change any cell's hash). A scale may carry ``about: "<one line>"``, which the reports print with the
scale's name (e.g. that ``smoke`` is a smoke scale, or what an ``epoch-matched`` alternative changes).

Published numbers travel with the spec: ``published: {<column label>: 93.0 | "~86" | {value,
std, approx, source}}`` on a row, in percent as the papers print them; ``~``/``approx: true`` marks
values read off a figure (fig≈). The spec's ``source`` names the reference-doc section.

Everything is validated before anything runs: every key of every mapping (names against the live
registries: datasets, protocols, models, recipes, condensers, loaders, GoldFromOres criteria, cell
kinds), then every cell of every scale through its kind's typed config
(:meth:`harness.bench.kinds.CellKind.config`). A bad entry raises :class:`ConfigError` naming the file
and the YAML line of the offending key (from ``yaml.compose`` node marks).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import timm
import yaml

from adapters.condense.goldfromores import criterion_names
from adapters.loaders import list_loaders
from condensed.shrink import RULE_ALIASES
from harness.bench.cells import Cell, expand
from harness.bench.kinds import create_cell_kind, list_cell_kinds
from harness.bench.kinds.condense import condenser_names
from harness.bench.schema import (
    CELL_KEYS,
    GLOBAL_DEFAULTS,
    GLOBAL_SCALES,
    SCALE_ONLY_KEYS,
    TOP_KEYS,
    Axis,
    Published,
    TableSpec,
    flat_published,
    merge,
    parse_published,
)
from harness.data import list_datasets
from harness.engine.protocol import TrainProtocol, list_protocols
from harness.errors import ConfigError
from harness.models import VICO_NAMES, list_models
from harness.pruning import list_recipes
from harness.registry import near_matches
from harness.validate import check_values

__all__ = ["CELL_KEYS", "GLOBAL_DEFAULTS", "GLOBAL_SCALES", "Axis", "Published", "TableSpec", "load_spec", "merge",
           "parse_published", "parse_spec", "validate_spec"]


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
    cell_paths: dict[tuple[str, str], tuple[Any, ...]] = {}
    for i, item in enumerate(raw.get("cells") or []):
        if not isinstance(item, dict) or "row" not in item or "column" not in item:
            raise ConfigError(f"{where('cells', i)}: a cell override needs 'row' and 'column' labels")
        rest = {k: v for k, v in item.items() if k not in ("row", "column")}
        cells[(str(item["row"]), str(item["column"]))] = rest
        cell_paths[(str(item["row"]), str(item["column"]))] = ("cells", i)
    scales = raw.get("scales") or {}
    if not isinstance(scales, dict) or not all(isinstance(v, dict) for v in scales.values()):
        raise ConfigError(f"{where('scales')}: scales map a name to a mapping of overrides")
    spec = TableSpec(
        name=str(raw.get("name") or Path(path).stem), title=str(raw.get("title", "")),
        source=str(raw.get("source", "")), path=path, defaults=defaults,
        datasets=tuple(datasets_raw) if datasets_raw else (None,),
        rows=axes("rows", "row"), columns=axes("columns", "column"), cells=cells, scales=scales,
        fairness=bool(raw.get("fairness", False)), full_accuracy=dict(raw.get("full_accuracy") or {}),
        x_label=str(raw.get("x_label", "")), notes=str(raw.get("notes", "")), lines=lines, cell_paths=cell_paths,
    )
    validate_spec(spec)
    return spec


# --- names from the live registries ------------------------------------------------------------------
def recipe_names() -> set[str]:
    """Every recipe name a cell can run: the pruning recipes with YOCO's suffixes, plus the shrink
    aliases (YOCO's ``accumulated_margin``, ``ccs``) with theirs."""
    suffixes = [a + b for a in ("", "_easy", "_hard") for b in ("", "_balance", "_imbalance")]
    return set(list_recipes(expanded=True)) | {n + s for n in RULE_ALIASES for s in suffixes}


NAMES: dict[str, Callable[[], set[str]]] = {
    "dataset": lambda: set(list_datasets()),
    "protocol": lambda: set(list_protocols()),
    "model": lambda: set(list_models()) | set(VICO_NAMES),
    "recipe": recipe_names,
    "method": condenser_names,
    "criterion": lambda: set(criterion_names()) | {"random", "rand"},
    "kind": lambda: set(list_cell_kinds()),
    "format": lambda: set(list_loaders()),
}
# cell key -> the registry its value is a name in
NAME_KEYS = {"dataset": "dataset", "protocol": "protocol", "dynamics_protocol": "protocol", "model": "model",
             "recipe": "recipe", "kind": "kind", "drop_criterion": "criterion", "source_format": "format"}


def _check_name(value: Any, kind: str, where: str) -> None:
    known = NAMES[kind]()
    if isinstance(value, str) and (value in known or (kind == "model" and value in timm.list_models(value))):
        return
    near = near_matches(str(value), sorted(known))
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    raise ConfigError(f"{where}: unknown {kind} {value!r}{hint}")


# integer cell keys and their minimum
_INT_KEYS: dict[str, int] = {"runs": 1, "ipc": 1, "source_ipc": 1, "train_per_class": 1, "test_per_class": 1,
                             "dynamics_epochs": 1, "nproc": 1, "img_size": 1, "num_workers": 0, "seed": 0,
                             "experiment": 0, "upstream_seed": 0}


def _is_int(v: Any, lo: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= 2**31 - 1


def _check_overrides(v: Any, w: str, where_key: Callable[..., str], k: str) -> None:
    if not isinstance(v, Mapping):
        raise ConfigError(f"{w}: {k} must be a mapping")
    proto_fields = set(TrainProtocol.__dataclass_fields__)
    for pk in v:
        if pk not in proto_fields:
            raise ConfigError(f"{where_key(k, pk)}: unknown protocol key {pk!r} "
                              f"(known: {', '.join(sorted(proto_fields))})")
        # type and range of each value (epochs: -2, lr: abc fail here, not in every unit at run time)
        check_values(TrainProtocol, {pk: v[pk]}, f"{where_key(k, pk)}: {k}", exclude=("name",))


def _validate_config(cfg: Mapping[str, Any], where_key: Callable[..., str]) -> None:
    for k, v in cfg.items():
        w = where_key(k)
        if k not in CELL_KEYS:
            raise ConfigError(f"{w}: unknown cell key {k!r} (known: {', '.join(sorted(CELL_KEYS))})")
        if k in NAME_KEYS:
            _check_name(v, NAME_KEYS[k], w)
        if k == "method" and cfg.get("kind") in ("condense", "shrink"):
            _check_name(v, "method", w)
        if k == "dataset_map":
            if not isinstance(v, Mapping):
                raise ConfigError(f"{w}: dataset_map must be a mapping, got {v!r}")
            for a, b in v.items():
                _check_name(b, "dataset", where_key(k, a))
        if k in ("protocol_overrides", "dynamics_overrides"):
            _check_overrides(v, w, where_key, k)
        if k in ("params", "source_options", "row_overrides") and not isinstance(v, Mapping):
            raise ConfigError(f"{w}: {k} must be a mapping, got {v!r}")
        if k in ("only_rows", "only_columns", "skip_datasets") and (
                not isinstance(v, list) or not v or not all(isinstance(s, str) for s in v)):
            raise ConfigError(f"{w}: {k} must be a non-empty list of labels, got {v!r}")
        if k in _INT_KEYS and not _is_int(v, _INT_KEYS[k]):
            what = "a positive integer" if _INT_KEYS[k] == 1 else "a non-negative integer"
            raise ConfigError(f"{w}: {k} must be {what}, got {v!r}")
        if k in ("prune_rate", "drop_ratio") and not (
                isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1):
            raise ConfigError(f"{w}: {k} must be a fraction in [0, 1), got {v!r}")
        if k in ("seeds", "experiments") and (not isinstance(v, list) or not v or not all(_is_int(s, 0) for s in v)):
            raise ConfigError(f"{w}: {k} must be a non-empty list of non-negative integers, got {v!r}")
        if k == "x" and not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)):
            raise ConfigError(f"{w}: x must be a finite number, got {v!r}")
        if k in ("hard_label", "fairness", "streaming") and not isinstance(v, bool):
            raise ConfigError(f"{w}: {k} must be true or false, got {v!r}")


def _check_placement(spec: TableSpec) -> None:
    """``follows`` (text) only in defaults and on rows; ``about`` and the other scale-only keys in scales;
    ``only_columns`` on rows and scales."""
    places: list[tuple[str, Mapping[str, Any], tuple[Any, ...]]] = [("defaults", spec.defaults, ("defaults",))]
    places += [("row", r.config, r.path) for r in spec.rows]
    places += [("column", c.config, c.path) for c in spec.columns]
    places += [("cell override", over, spec.cell_paths.get(rc, ("cells",))) for rc, over in spec.cells.items()]
    places += [("scale", sc, ("scales", name)) for name, sc in spec.scales.items()]
    rules = {"follows": ("defaults", "row"), **{k: ("scale",) for k in SCALE_ONLY_KEYS},
             "only_columns": ("row", "scale")}
    for kind, cfg, path in places:
        for key, allowed in rules.items():
            if key not in cfg:
                continue
            where = spec.where(path + (key,))
            if kind not in allowed:
                raise ConfigError(f"{where}: {key!r} belongs in {' or '.join(allowed)}, not in a {kind}")
            if key in ("follows", "about") and (not isinstance(cfg[key], str) or not cfg[key].strip()):
                raise ConfigError(f"{where}: {key} must be non-empty text, got {cfg[key]!r}")


def _check_labels(spec: TableSpec) -> None:
    """Every row/column label a cell override, ``only_rows``/``only_columns`` or ``row_overrides`` names exists."""
    col_labels = {c.label for c in spec.columns}
    row_labels = {r.label for r in spec.rows}
    for r, c in spec.cells:
        if r not in row_labels or c not in col_labels:
            raise ConfigError(f"{spec.where(spec.cell_paths[(r, c)])}: cell override names row {r!r} / column "
                              f"{c!r}, which is not in the grid")
    named: list[tuple[tuple[Any, ...], list[str], set[str], str]] = []
    for row in spec.rows:
        if "only_columns" in row.config:
            named.append((row.path + ("only_columns",), row.config["only_columns"], col_labels, "column"))
    for name, sc in spec.scales.items():
        p = ("scales", name)
        if "only_columns" in sc:
            named.append((p + ("only_columns",), sc["only_columns"], col_labels, "column"))
        if "only_rows" in sc:
            named.append((p + ("only_rows",), sc["only_rows"], row_labels, "row"))
        if "row_overrides" in sc:
            named.append((p + ("row_overrides",), list(sc["row_overrides"]), row_labels, "row"))
    for path, labels, known, what in named:
        for lab in labels:
            if lab not in known:
                raise ConfigError(f"{spec.where(path)}: no {what} labelled {lab!r} (the {what}s: "
                                  f"{', '.join(sorted(known))})")
    for r in spec.rows:
        for path_, _ in flat_published(r.config.get("published")):
            if path_[-1] not in col_labels:
                raise ConfigError(f"{spec.where(r.path + ('published', *path_))}: published number for column "
                                  f"{path_[-1]!r}, which is not a column (columns: {', '.join(sorted(col_labels))})")


def check_cell(spec: TableSpec, cell: Cell, scale: str) -> None:
    """Build the cell's kind config now (the same the runner builds), so a bad cell fails at load."""
    for req in ("dataset", "protocol"):
        if req not in cell.config:
            raise ConfigError(f"{spec.where(cell.origin)}: cell ({cell.row}, {cell.column}) has no {req!r} "
                              f"(set it in defaults, the row or the column)")
    try:
        create_cell_kind(cell.config.get("kind", "evaluate")).config(cell.config, lambda k: cell.where(spec, k))
    except ConfigError as e:
        raise ConfigError(f"{e} [cell {cell.row} / {cell.column}, scale {scale}]") from None


def validate_spec(spec: TableSpec) -> None:
    """Check every key, name and grid entry; errors carry the YAML line of the offending entry."""
    def wk(prefix: tuple[Any, ...]):
        return lambda *keys: spec.where(prefix + keys)

    _check_placement(spec)
    _validate_config(spec.defaults, wk(("defaults",)))
    for i, d in enumerate(spec.datasets):
        if d is not None:
            _check_name(d, "dataset", spec.where(("datasets", i)))
    for axis in (*spec.rows, *spec.columns):
        cfg = {k: v for k, v in axis.config.items() if k not in ("published", "published_std")}
        _validate_config(cfg, wk(axis.path))
        for label, val in flat_published(axis.config.get("published")):
            parse_published(val, spec.where(axis.path + ("published", *label)))
    for rc, over in spec.cells.items():
        _validate_config(over, wk(spec.cell_paths[rc]))
    for name, sc in spec.scales.items():
        _validate_config(sc, wk(("scales", name)))
        for label, over in (sc.get("row_overrides") or {}).items():
            if not isinstance(over, Mapping):
                raise ConfigError(f"{spec.where(('scales', name, 'row_overrides', label))}: row_overrides map a "
                                  f"row label to a mapping of cell keys")
            _validate_config(over, wk(("scales", name, "row_overrides", label)))
    _check_labels(spec)
    cells = expand(spec, "full")
    if not cells:
        raise ConfigError(f"{spec.path}: the grid is empty")
    for scale in sorted({**GLOBAL_SCALES, **spec.scales}):
        for cell in (cells if scale == "full" else expand(spec, scale)):
            check_cell(spec, cell, scale)
