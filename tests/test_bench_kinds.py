"""Issue 13 (table system): cell kinds with typed configs validated from the live registries (file:line),
seed grouping (a cell's pending runs go to its kind together; K seeds trained together agree with K
separate runs), loader options / GoldFromOres scores reach the flows, and no import cycle in the bench."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from harness.bench.cells import expand
from harness.bench.kinds import CELL_KINDS, KindResult, Run, RunContext, create_cell_kind, register_cell_kind
from harness.bench.kinds.base import CellConfig, CellKind, plain_where
from harness.bench.runner import RunOptions, run_table, table_units
from harness.bench.spec import parse_spec
from harness.bench.store import ResultStore
from harness.engine import EngineOptions
from harness.errors import ConfigError

BASE = textwrap.dedent("""\
    name: k
    defaults:
      dataset: digits
      protocol: vico-dc
      runs: 2
    rows:
      - label: a
        source: random_real
      - label: b
        kind: condense
        method: dm
        params: {iterations: 1}
    columns:
      - ipc: 1
    """)


# --- typed configs, validated from the live registries, errors at the offending key's line ----------------
@pytest.mark.parametrize("old,new,line,msg", [
    # a published source's loader options are checked against the loader's own keyword parameters
    ("    source: random_real\n",
     "    source: published\n    source_path: x.pt\n    source_options: {zcaa: true}\n", 10,
     "vico loader option 'zcaa': unknown key"),
    # condenser params against the condenser's config dataclass
    ("    params: {iterations: 1}\n", "    params: {iterations: 1, lr_imgg: 2}\n", 12, "'lr_imgg': unknown key"),
    ("    params: {iterations: 1}\n", "    params: {iterations: 1, init: rael}\n", 12, "init 'rael'"),
    # GoldFromOres: scores without a criterion, criterion parameters its scorer does not take
    ("    method: dm\n", "    method: dm\n    drop_scores: authors\n", 12, "needs a drop_criterion"),
    ("    params: {iterations: 1}\n", "    drop_criterion: LossInit_large\n    drop_ratio: 0.5\n"
     "    drop_scores: s.npy\n    params: {pre_prune_params: {epochs: 3}}\n", 14, "replaces"),
    ("    params: {iterations: 1}\n", "    drop_criterion: LossInit_large\n    drop_ratio: 0.5\n"
     "    params: {pre_prune_params: {epochz: 3}}\n", 14, "unknown parameters ['epochz']"),
    # the source of an evaluate cell, and what it needs
    ("    source: random_real\n", "    source: randomreal\n", 8, "expected one of random_real, full"),
    ("  - ipc: 1\n", "  - label: c\n", 14, "needs 'ipc'"),
    ("    source: random_real\n", "    source: random_real\n    experiments: [0, 1]\n", 9,
     "experiments index a published file"),
    # a scale's grid keys name real rows / columns; its per-row values are checked like any other
    ("rows:\n", "scales:\n  s: {only_rows: [a, zz]}\nrows:\n", 7, "no row labelled 'zz'"),
    ("rows:\n", "scales:\n  s: {row_overrides: {q: {runs: 1}}}\nrows:\n", 7, "no row labelled 'q'"),
    ("    source: random_real\n", "    source: random_real\n    only_columns: [IPC 9]\n", 9,
     "no column labelled 'IPC 9'"),
    ("rows:\n", "scales:\n  s: {row_overrides: {b: {params: {iterations: -1}}}}\nrows:\n", 7, "iterations=-1"),
])
def test_kind_configs_fail_at_the_line_that_set_the_bad_value(old, new, line, msg):
    assert old in BASE
    with pytest.raises(ConfigError) as e:
        parse_spec(BASE.replace(old, new), "bad.yaml")
    assert msg in str(e.value) and f"bad.yaml:{line}:" in str(e.value), str(e.value)


def test_kind_configs_are_typed_and_follow_the_live_registries(monkeypatch):
    from adapters.loaders import LOADERS

    spec = parse_spec(BASE, "k.yaml")
    cells = {c.row: c for c in expand(spec)}
    cfg = create_cell_kind("condense").config(cells["b"].config)
    assert (type(cfg).__name__, cfg.method, cfg.ipc, cfg.params, cfg.pre_prune(0)) == \
        ("CondenseConfig", "dm", 1, {"iterations": 1}, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.ipc = 2
    # a loader registered now is known now: its options are checked against its signature
    def tiny_loader(path: Path, *, dataset: str | None = None, flavor: str = "plain") -> list:
        return []

    monkeypatch.setitem(LOADERS._items, "tiny", tiny_loader)
    text = BASE.replace("    source: random_real\n",
                        "    source: published\n    source_format: tiny\n    source_path: x\n"
                        "    source_options: {flavor: salty}\n")
    ev = create_cell_kind("evaluate").config(next(c for c in expand(parse_spec(text, "t.yaml")) if c.row == "a").config)
    assert ev.published.format == "tiny" and ev.published.options == {"flavor": "salty"}
    with pytest.raises(ConfigError, match="t.yaml:11: .*'flavour': unknown key"):
        parse_spec(text.replace("flavor: salty", "flavour: salty"), "t.yaml")
    with pytest.raises(ConfigError, match="unknown cell kind 'nope'"):
        create_cell_kind("nope")


def test_drop_scores_reach_preprune_with_paths_under_the_data_root(tmp_path):
    kind = create_cell_kind("condense")
    base = {"kind": "condense", "dataset": "mnist", "protocol": "vico-dc", "method": "dm", "ipc": 1,
            "drop_criterion": "LossConverge_large", "drop_ratio": 0.5}
    ctx = RunContext(data_root=str(tmp_path))
    authors = kind.config({**base, "drop_scores": "authors"}).pre_prune(3, ctx)
    assert (authors.scores, authors.data_root, authors.seed, authors.drop_ratio) == ("authors", str(tmp_path), 3, 0.5)
    own = kind.config({**base, "drop_scores": "scores/mine.npy"}).pre_prune(0, ctx)
    assert own.scores == str(tmp_path / "scores" / "mine.npy") and own.data_root is None
    assert kind.config(base).pre_prune(0, ctx).scores is None  # computed
    with pytest.raises(ConfigError, match="whole training split"):
        kind.config({**base, "drop_scores": "authors", "train_per_class": 10})
    with pytest.raises(ConfigError, match="Random criterion takes no scores"):
        kind.config({**base, "drop_criterion": "Random", "drop_scores": "authors"})


def test_published_cells_pass_source_options_to_the_loader(tmp_path, monkeypatch):
    """A published set is loaded with the cell's loader options; each experiment is evaluated with its own seeds."""
    from adapters.loaders import LOADERS
    from condensed import CondensedSet

    seen: list[dict[str, Any]] = []

    def fake(path: Path, *, dataset: str | None = None, flavor: str = "plain") -> list[CondensedSet]:
        seen.append({"path": str(path), "flavor": flavor})
        g = torch.Generator().manual_seed(0)
        return [CondensedSet(images=torch.rand(10, 1, 8, 8, generator=g), labels=torch.arange(10), num_classes=10,
                             dataset="digits", method="fake", space="pixel", mean=(0.3053,), std=(0.3759,))
                for _ in range(2)]

    monkeypatch.setitem(LOADERS._items, "fake", fake)
    text = textwrap.dedent("""\
        name: pub
        defaults: {dataset: digits, protocol: vico-dc, protocol_overrides: {epochs: 1}, model: convnet_w32,
                   runs: 2, test_per_class: 5}
        rows:
          - {label: set, source: published, source_format: fake, source_path: sets/x.pt,
             source_options: {flavor: salty}, experiments: [0, 1]}
        columns: [{ipc: 1}]
        """)
    spec = parse_spec(text, "pub.yaml")
    (cell,) = expand(spec)
    assert [(u.run, u.seed, u.experiment) for u in cell.units()] == [(0, 0, 0), (1, 1, 0), (2, 1000, 1), (3, 1001, 1)]
    outs = run_table(spec, RunOptions(str(tmp_path / "res"), data_root=str(tmp_path)), progress=False)
    assert sorted(o.status for o in outs) == ["done"] * 4
    assert {s["flavor"] for s in seen} == {"salty"} and seen[0]["path"] == str(tmp_path / "sets" / "x.pt")
    recs = sorted(ResultStore(tmp_path / "res").records("pub"), key=lambda r: r["run"])
    assert [(r["experiment"], r["seed"], r["extra"]["experiment"]) for r in recs] == \
        [(0, 0, 0), (0, 1, 0), (1, 1000, 1), (1, 1001, 1)]
    assert all(r["config"]["experiment"] == r["experiment"] and "experiments" not in r["config"] for r in recs)


# --- the runner hands a kind all pending runs of a cell -------------------------------------------------
@dataclass(frozen=True)
class CountConfig(CellConfig):
    pass


CALLS: list[list[tuple[int, int]]] = []


@register_cell_kind("count_for_tests")
class CountKind(CellKind):
    """No training: accuracy = seed / 1000; records which runs each call got."""

    config_cls = CountConfig

    def config(self, cfg: Mapping[str, Any], where=plain_where) -> CountConfig:
        return CountConfig(**CellConfig.common(cfg, where))

    def run(self, config: CountConfig, runs: Sequence[Run], ctx: RunContext) -> Iterator[tuple[Run, KindResult]]:
        CALLS.append([(r.run, r.seed) for r in runs])
        for r in runs:
            yield r, KindResult((r.seed / 1000,), {"n": len(runs)}, {}, "count", {"path": ctx.options.path},
                                len(runs))


COUNT = textwrap.dedent("""\
    name: count
    defaults: {kind: count_for_tests, dataset: digits, protocol: vico-dc, runs: 4, seed: 10}
    rows: [{label: r}]
    columns: [{ipc: 1}, {ipc: 2}]
    """)


def test_runner_hands_a_kind_every_pending_run_of_a_cell_once(tmp_path):
    assert "count_for_tests" in CELL_KINDS
    spec = parse_spec(COUNT, "count.yaml")
    res = tmp_path / "res"
    store = ResultStore(res)
    units = table_units(spec, "full")
    first = units[0]  # recorded already: skipped
    store.write(spec.name, first.cell.key, first.key, {"cell": first.cell.key, "run": 0, "accuracies": [0.01]})
    held = units[2]  # held by a live process (us, through a lock we keep): busy
    lock = store.claim(held.key)
    CALLS.clear()
    try:
        outs = {o.unit_key: o.status for o in run_table(spec, RunOptions(str(res)), progress=False)}
    finally:
        lock.release()
    assert CALLS == [[(1, 11), (3, 13)], [(0, 10), (1, 11), (2, 12), (3, 13)]]  # one call per cell
    assert outs[held.key] == "busy" and first.key not in outs
    assert sorted(outs.values()) == ["busy"] + ["done"] * 6
    recs = list(store.records("count"))
    assert len(recs) == 7 and len({r["unit"] for r in recs if "unit" in r}) == 6
    for r in (r for r in recs if "unit" in r):
        assert r["accuracies"] == [r["seed"] / 1000] and r["timings"]["trained_together"] == r["extra"]["n"]
        assert r["engine"] == {"path": "auto"}
    CALLS.clear()
    outs = run_table(spec, RunOptions(str(res)), progress=False)  # resume: only the held unit is left
    assert CALLS == [[(2, 12)]] and [o.status for o in outs] == ["done"]


# --- K seeds trained together agree with K separate runs (CPU ensemble path) -------------------------------
ENS = textwrap.dedent("""\
    name: ens
    defaults: {dataset: digits, protocol: vico-dc, model: convnet_w32, runs: 3, seed: 11,
               protocol_overrides: {epochs: 4, batch_size: 64}, train_per_class: 16}
    rows:
      - {label: full, source: full}
      - {label: random, source: random_real, ipc: 5, upstream_seed: 0}
      - {label: random per seed, source: random_real, ipc: 5}
    columns: [{label: c}]
    """)


def _records(res: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in (res / "records").rglob("*.json")}


FP32 = {p: EngineOptions(path=p, precision="fp32", compile=False) for p in ("ensemble", "sequential")}


def test_seeds_trained_together_agree_with_separate_runs_and_write_the_same_records(tmp_path):
    """path=ensemble on the CPU: a cell's 3 seeds in one vmapped program; path=sequential: one model at a time.
    Same inits and batch orders, so accuracies agree within one test image (tests/test_ensemble.py's bound)."""
    torch.set_num_threads(1)
    spec = parse_spec(ENS, "ens.yaml")
    runs = {}
    for path in ("ensemble", "sequential"):
        outs = run_table(spec, RunOptions(str(tmp_path / path), engine=FP32[path]), progress=False)
        assert [o.status for o in outs] == ["done"] * 9, outs
        runs[path] = _records(tmp_path / path)
    ens, seq = runs["ensemble"], runs["sequential"]
    assert ens.keys() == seq.keys() and len(ens) == 9  # the same unit keys: the engine is not in any key
    n_test = 360  # digits test split
    for key, e in ens.items():
        s = seq[key]
        assert e.keys() == s.keys()  # grouped and ungrouped runs write the same record fields
        assert (e["row"], e["seed"], e["config"]) == (s["row"], s["seed"], s["config"])
        assert abs(e["accuracies"][0] - s["accuracies"][0]) <= 1 / n_test + 1e-9, (e["row"], e["seed"])
        assert e["engine"]["path"] == "ensemble" and s["engine"]["path"] == "sequential"
        assert s["engine"]["path_run"] == "sequential" and s["timings"]["trained_together"] == 1
        # runs share a trained set (full split; random subset from upstream_seed) -> trained together
        shared = e["row"] in ("full", "random")
        assert (e["engine"]["path_run"], e["timings"]["trained_together"]) == ("ensemble", 3 if shared else 1)
    subsets = {(r["row"], r["extra"]["indices_sha"]) for r in ens.values() if r["row"] != "full"}
    assert len([s for s in subsets if s[0] == "random"]) == 1  # one subset for every run (upstream_seed)
    assert len([s for s in subsets if s[0] == "random per seed"]) == 3  # one per run's seed


# --- imports ---------------------------------------------------------------------------------------------
def test_no_import_cycle_in_the_bench_and_the_core_never_imports_it():
    import grimp

    graph = grimp.build_graph("harness", "adapters", "condensed")  # counts function-level imports too
    bench = sorted(m for m in graph.modules if m.startswith("harness.bench"))
    cycles = [(a, b) for i, a in enumerate(bench) for b in bench[i + 1:]
              if graph.chain_exists(a, b) and graph.chain_exists(b, a)]
    assert not cycles, cycles
    above = ("harness.bench", "harness.cli", "harness.__main__")
    core = [m for m in graph.modules if not m.startswith(above) and m != "harness"]
    offenders = [(m, b) for m in core for b in bench if graph.direct_import_exists(importer=m, imported=b)]
    assert not offenders, offenders
    assert "harness.bench.adapters" not in graph.modules  # bridges live in the kinds


def test_no_function_level_imports_of_bench_or_core_modules_in_the_bench():
    """Imports sit at module top in harness.bench (no cycle forces them into functions)."""
    import ast

    root = Path(__file__).resolve().parents[1] / "harness" / "bench"
    late = []
    for f in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for sub in ast.walk(node):
                    if isinstance(sub, ast.ImportFrom) and (sub.module or "").split(".")[0] in (
                            "harness", "adapters", "condensed"):
                        late.append(f"{f.name}:{sub.lineno} {sub.module}")
    assert not late, late


def test_one_config_hash_and_one_data_root_helper():
    import harness.bench.cells as cells
    import harness.io as hio

    assert cells.config_hash is hio.config_hash and cells.stable_json is hio.stable_json
    root = Path(__file__).resolve().parents[1] / "harness" / "bench"
    text = "\n".join(f.read_text() for f in root.rglob("*.py"))
    assert "DDBENCH_DATA" not in text and "hashlib" not in text


def test_table_run_engine_flags_reach_every_record(tmp_path, capsys):
    from harness.cli import main

    spec = tmp_path / "e.yaml"
    spec.write_text(textwrap.dedent("""\
        name: e
        defaults: {dataset: digits, protocol: vico-dc, model: convnet_w32, runs: 2, source: full,
                   protocol_overrides: {epochs: 1}, train_per_class: 5, test_per_class: 5}
        rows: [{label: full}]
        columns: [{label: c}]
        """))
    res = tmp_path / "res"
    argv = ["table", "run", str(spec), "--results", str(res), "--no-progress", "--path", "ensemble",
            "--precision", "fp32"]
    assert main(argv) == 0, capsys.readouterr().err
    recs = list(ResultStore(res).records("e"))
    assert len(recs) == 2
    for r in recs:
        eng = r["engine"]
        assert {k: eng[k] for k in ("path", "precision", "compile", "path_run", "precision_run", "compile_run")} == {
            "path": "ensemble", "precision": "fp32", "compile": "auto", "path_run": "ensemble",
            "precision_run": "fp32", "compile_run": False}  # requested, and what ran (resolved)
        assert eng["compile_reason"].startswith("auto: short run")
        assert r["timings"]["trained_together"] == 2 and r["protocol"]["precision"] == "fp32"
    assert main(argv) == 0 and "nothing to do" in capsys.readouterr().out  # the same cells: nothing left
    assert main([*argv[:-4], "--path", "fast"]) == 2
    assert "invalid choice: 'fast'" in capsys.readouterr().err


def test_condense_cells_condense_with_the_run_engine_and_cache_per_engine(tmp_path):
    """``table run --exact`` reaches the condensation too: the set is the exact engine's bits (as ``condense
    --exact``), recorded as such, and a set condensed by another engine is never reused for it."""
    from adapters.condense import create_condenser
    from harness.bench.kinds.condense import condensed_set
    from harness.data import load_dataset

    kind = create_cell_kind("condense")
    params = {"iterations": 2, "batch_real": 16, "model_kwargs": {"width": 8}}
    cfg = kind.config({"kind": "condense", "dataset": "digits", "protocol": "vico-dc", "method": "dm", "ipc": 1,
                       "params": params})
    exact_ctx = RunContext(artifacts_dir=str(tmp_path / "a"), options=EngineOptions.exact())
    fast_ctx = RunContext(artifacts_dir=str(tmp_path / "a"), options=EngineOptions(precision="bf16"))
    exact = condensed_set(cfg, exact_ctx, "dm", 1, params, 3)
    fast = condensed_set(cfg, fast_ctx, "dm", 1, params, 3)
    assert exact.provenance["engine"]["precision"] == "fp32" and exact.provenance["engine"]["path"] == "sequential"
    assert fast.provenance["engine"]["precision"] == "bf16"  # not the exact set handed back from the cache
    assert len(list((tmp_path / "a" / "condensed").iterdir())) == 2
    cond = create_condenser("dm")
    direct = cond.condense(load_dataset("digits"), 1, cond.default_config(**params), seed=3,
                           engine=EngineOptions.exact())
    assert torch.equal(exact.images, direct.images)
