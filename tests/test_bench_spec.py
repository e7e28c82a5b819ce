"""Spec parsing, inheritance, scales, validation with YAML line numbers, and config hashing."""

from __future__ import annotations

import textwrap

import pytest

from harness.bench.cells import config_hash, expand, stable_json
from harness.bench.spec import load_spec, parse_spec
from harness.errors import ConfigError

BASE = textwrap.dedent("""\
    name: t
    source: pruning-scores.md §5
    defaults:
      dataset: digits
      protocol: vico-dc
      protocol_overrides: {epochs: 3}
      runs: 3
    scales:
      tiny: {runs: 1, protocol_overrides: {epochs: 1}}
    rows:
      - label: a
        source: random_real
        published: {"IPC 1": "~50", "IPC 2": 60.5}
      - label: b
        source: full
        protocol_overrides: {batch_size: 32}
    columns:
      - ipc: 1
      - ipc: 2
        runs: 2
    cells:
      - {row: b, column: "IPC 2", seed: 7}
    """)


def test_inheritance_overrides_and_published():
    spec = parse_spec(BASE, "t.yaml")
    cells = {(c.row, c.column): c for c in expand(spec, "full")}
    assert len(cells) == 4
    a1, b2 = cells[("a", "IPC 1")], cells[("b", "IPC 2")]
    assert a1.config["runs"] == 3 and a1.config["protocol_overrides"] == {"epochs": 3}
    assert b2.config["runs"] == 2 and b2.seeds == [7, 8]
    assert b2.config["protocol_overrides"] == {"epochs": 3, "batch_size": 32}  # merged key by key
    assert a1.published.value == 50 and a1.published.approx
    assert cells[("a", "IPC 2")].published.value == 60.5 and not cells[("a", "IPC 2")].published.approx
    assert cells[("b", "IPC 1")].published is None


def test_scales_shrink_and_change_hashes():
    spec = parse_spec(BASE, "t.yaml")
    full = {(c.row, c.column): c for c in expand(spec, "full")}
    tiny = {(c.row, c.column): c for c in expand(spec, "tiny")}
    smoke = {(c.row, c.column): c for c in expand(spec, "smoke")}  # the global scale
    assert tiny[("b", "IPC 2")].config["protocol_overrides"] == {"epochs": 1, "batch_size": 32}
    assert tiny[("a", "IPC 1")].seeds == [0]
    assert smoke[("a", "IPC 1")].config["train_per_class"] == 20
    assert full[("a", "IPC 1")].key != tiny[("a", "IPC 1")].key != smoke[("a", "IPC 1")].key
    with pytest.raises(ConfigError, match="unknown scale 'huge'"):
        expand(spec, "huge")


def test_hash_is_stable_across_key_order_and_files(tmp_path):
    assert stable_json({"b": 1, "a": [1, 2.5]}) == '{"a":[1,2.5],"b":1}'
    assert config_hash({"b": 1, "a": {"y": 2, "x": 1}}) == config_hash({"a": {"x": 1, "y": 2}, "b": 1})
    # a pinned value: changing the hashing scheme would orphan every stored result
    assert config_hash({"a": 1}) == "015abd7f5cc57a2d"
    reordered = BASE.replace("  dataset: digits\n  protocol: vico-dc\n", "  protocol: vico-dc\n  dataset: digits\n")
    assert reordered != BASE
    k1 = [c.key for c in expand(parse_spec(BASE, "x.yaml"), "full")]
    k2 = [c.key for c in expand(parse_spec(reordered, "y.yaml"), "full")]
    assert k1 == k2
    units = [u.key for c in expand(parse_spec(BASE, "x.yaml"), "full") for u in c.units()]
    assert len(units) == len(set(units)) == 3 + 2 + 3 + 2


@pytest.mark.parametrize("old,new,line,msg", [
    ("    source: full\n", "    recipe: el2nn\n", 15, "unknown recipe 'el2nn'"),
    ("  dataset: digits\n", "  dataset: cifar11\n", 4, "unknown dataset 'cifar11'"),
    ("  protocol: vico-dc\n", "  protocol: vico-xx\n", 5, "unknown protocol 'vico-xx'"),
    ("  - ipc: 2\n", "  - model: convnet_nope\n", 19, "unknown model 'convnet_nope'"),
    ("    protocol_overrides: {batch_size: 32}\n", "    protocol_overrides: {batchsize: 32}\n", 16,
     "unknown protocol key 'batchsize'"),
    ("    source: full\n", "    sauce: full\n", 15, "unknown cell key 'sauce'"),
    ("  - ipc: 1\n", "  - ipc: 0\n", 18, "positive integer"),
    ('"IPC 2": 60.5', '"IPC 9": 60.5', 13, "not a column"),
    ("  - {row: b,", "  - {row: zz,", 22, "not in the grid"),
])
def test_validation_errors_carry_line_numbers(old, new, line, msg):
    assert old in BASE
    text = BASE.replace(old, new)
    with pytest.raises(ConfigError) as e:
        parse_spec(text, "bad.yaml")
    assert msg in str(e.value)
    assert f"bad.yaml:{line}:" in str(e.value), str(e.value)


def test_empty_grid_and_missing_dataset(tmp_path):
    with pytest.raises(ConfigError, match=r"e.yaml:\d+: 'columns' must be a non-empty list"):
        parse_spec("name: e\ndefaults: {dataset: digits, protocol: dm}\nrows: [{label: a}]\ncolumns: []\n", "e.yaml")
    with pytest.raises(ConfigError, match="has no 'dataset'"):
        parse_spec("name: e\ndefaults: {protocol: dm}\nrows: [{label: a}]\ncolumns: [{ipc: 1}]\n", "e.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")


def test_shipped_specs_parse():
    from pathlib import Path

    specs = sorted((Path(__file__).resolve().parents[1] / "benchmarks" / "tables").glob("*.yaml"))
    assert len(specs) >= 5
    for p in specs:
        spec = load_spec(p)
        assert expand(spec, "full") and expand(spec, "smoke")


# --- issue 11: who each row follows, and the coreset specs' authors' settings -------------------------
FOLLOWS = BASE.replace("  runs: 3\n", "  runs: 3\n  follows: paper A, train.py\n", 1).replace(
    "    source: full\n", "    source: full\n    follows: paper B, README\n", 1)


def test_follows_round_trip_is_display_only(tmp_path):
    from harness.bench.report import write_reports
    from harness.bench.store import ResultStore

    spec = parse_spec(FOLLOWS, "f.yaml")
    cells = expand(spec, "full")
    assert {(c.row, c.follows) for c in cells} == {("a", "paper A, train.py"), ("b", "paper B, README")}
    assert all("follows" not in c.config for c in cells)
    plain = expand(parse_spec(BASE, "t.yaml"), "full")
    assert [c.key for c in cells] == [c.key for c in plain]  # display only: no cell hash changes
    store = ResultStore(tmp_path / "res")
    for c in cells:
        for u in c.units():
            store.write(spec.name, c.key, u.key, {"cell": c.key, "run": u.run, "accuracies": [0.5],
                                                  "protocol_text": "p", "timings": {"seconds": 1.0}})
    paths = write_reports(spec, tmp_path / "res", tmp_path / "out", "full", plots=False)
    md = paths["md"].read_text()
    assert "| | follows | IPC 1 | IPC 2 |" in md
    assert "| a | paper A, train.py | 50.00 ± 0.00 / ≈50.00 → +0.00 |" in md
    assert "| b | paper B, README | 50.00 ± 0.00 |" in md
    rows = paths["csv"].read_text().splitlines()
    assert rows[0].endswith(",follows") and rows[1].endswith(",\"paper A, train.py\"")
    assert "Rows follow: a: paper A, train.py; b: paper B, README." in paths["tex"].read_text()


def test_scale_about_is_printed_and_percent_records_are_refused(tmp_path):
    from harness.bench.report import write_reports
    from harness.bench.store import ResultStore
    from harness.errors import FormatError

    text = BASE.replace("  tiny: {runs: 1, protocol_overrides: {epochs: 1}}\n",
                        "  tiny: {runs: 1, protocol_overrides: {epochs: 1}, about: \"tiny: one epoch only\"}\n")
    spec = parse_spec(text, "s.yaml")
    assert [c.key for c in expand(spec, "tiny")] == [c.key for c in expand(parse_spec(BASE, "t.yaml"), "tiny")]
    store = ResultStore(tmp_path / "res")
    cell = expand(spec, "tiny")[0]
    unit = cell.units()[0]
    store.write(spec.name, cell.key, unit.key, {"cell": cell.key, "run": 0, "accuracies": [0.3], "protocol_text": "p"})
    md = write_reports(spec, tmp_path / "res", tmp_path / "out", "tiny", plots=False)["md"].read_text()
    assert "**Scale: `tiny`** (tiny: one epoch only)" in md
    store.write(spec.name, cell.key, "other", {"cell": cell.key, "run": 1, "accuracies": [30.0], "unit": "other"})
    with pytest.raises(FormatError, match=r"outside \[0, 1\]"):  # a percent-valued record
        write_reports(spec, tmp_path / "res", tmp_path / "out2", "tiny", plots=False)


@pytest.mark.parametrize("old,new,line,msg", [
    ("  - ipc: 2\n", "  - ipc: 2\n    follows: x\n", 20, "'follows' belongs in defaults or row, not in a column"),
    ("  runs: 3\n", "  runs: 3\n  about: x\n", 8, "'about' belongs in scale"),
    ("    source: full\n", "    source: full\n    follows: 3\n", 16, "follows must be non-empty text"),
    ("  - {row: b, column: \"IPC 2\", seed: 7}", "  - {row: b, column: \"IPC 2\", follows: z}", 22, "cell override"),
])
def test_follows_and_about_are_placed_where_they_mean_something(old, new, line, msg):
    assert old in BASE
    with pytest.raises(ConfigError) as e:
        parse_spec(BASE.replace(old, new), "bad.yaml")
    assert msg in str(e.value) and f"bad.yaml:{line}:" in str(e.value), str(e.value)


def _shipped(name: str):
    from pathlib import Path

    return load_spec(Path(__file__).resolve().parents[1] / "benchmarks" / "tables" / f"{name}.yaml")


def test_every_shipped_spec_row_says_whose_protocol_it_follows():
    from pathlib import Path

    for p in sorted((Path(__file__).resolve().parents[1] / "benchmarks" / "tables").glob("*.yaml")):
        spec = load_spec(p)
        missing = sorted({c.row for c in expand(spec, "full") if c.role == "main" and not c.follows.strip()})
        assert not missing, f"{p.name}: rows without 'follows': {missing}"


def test_pruning_rate_spec_uses_each_papers_subset_training():
    from harness.bench.cells import resolve_protocol
    from harness.engine.protocol import create_protocol

    spec = _shipped("pruning-rate")
    cells = expand(spec, "full")
    assert {c.dataset for c in cells} == {"cifar10", "cifar100"}
    batch = {"30%": 128, "50%": 128, "70%": 128, "80%": 64, "90%": 32}  # DUAL exp_cifar README
    for c in cells:
        p = resolve_protocol(c.config)
        dyn = create_protocol(c.config["dynamics_protocol"], c.dataset)
        if c.row in ("dual", "random (DUAL protocol)"):
            assert (p.name, p.iterations, p.epochs, p.batch_size) == ("dual", None, 200, batch[c.column])
            assert (dyn.name, dyn.batch_size) == ("dual", 128) and c.follows.startswith("DUAL")
            if c.row == "dual":
                assert c.config["params"]["score_params"] == {"T": 30, "J": 10}
        elif c.row == "tdds":
            assert (p.iterations, p.epochs, p.batch_size, p.loss_weighting, p.eta_min) == \
                (None, 200, 128, "tdds_score_mean", 0.0)
            assert (dyn.name, dyn.batch_size, dyn.epochs) == ("tdds", 100, 200) and c.follows.startswith("TDDS")
        else:  # CCS README: every subset 40 000 iterations at batch 256, cosine to 1e-4
            assert (p.iterations, p.batch_size, p.lr, p.eta_min, p.nesterov, p.model) == \
                (40000, 256, 0.1, 1e-4, True, "resnet18_cifar"), c.row
            assert (dyn.name, dyn.epochs, dyn.batch_size) == ("ccs", 200, 256) and c.follows.startswith("CCS")
    # the epoch-matched alternative is a named, labelled scale; the smoke scale says it is one
    em = {(c.dataset, c.row, c.column): resolve_protocol(c.config) for c in expand(spec, "epoch-matched")}
    assert (em[("cifar10", "ccs", "90%")].iterations, em[("cifar10", "ccs", "90%")].total_epochs) == (None, 200)
    assert em[("cifar10", "dual", "90%")].batch_size == 32
    assert "epoch-matched" in spec.scale("epoch-matched")["about"]
    assert spec.scale("smoke")["about"].startswith("smoke scale")
    for c in expand(spec, "smoke"):
        assert resolve_protocol(c.config).iterations is None and resolve_protocol(c.config).total_epochs == 3


def test_imagenet_spec_uses_ccs_and_dual_imagenet_settings():
    from harness.bench.cells import resolve_protocol
    from harness.engine.protocol import create_protocol

    spec = _shipped("imagenet-coreset")
    for c in expand(spec, "full"):
        p = resolve_protocol(c.config)
        assert (p.model, p.iterations, p.batch_size, p.lr, p.momentum, p.nesterov, p.weight_decay, p.eta_min) == \
            ("resnet34", 300000, 256, 0.1, 0.9, False, 1e-4, 1e-4)
        dyn = create_protocol(c.config["dynamics_protocol"], "imagenet")
        assert (dyn.epochs, dyn.batch_size, dyn.nesterov, dyn.weight_decay) == (60, 256, False, 1e-4)
        assert "dynamics_epochs" not in c.config
        if c.row == "dual":  # DUAL ImageNet: dual(target_probs[:60]); --d_c default 11
            assert c.config["params"] == {"score_params": {"T": 60, "J": 10}, "rule_opts": {"c_d": 11.0}}
            assert "c_d = 11" in c.follows
        else:
            assert c.follows.startswith("CCS")
    smoke = expand(spec, "smoke")
    assert spec.scale("smoke")["about"].startswith("smoke scale")
    assert all(resolve_protocol(c.config).iterations is None for c in smoke)
    assert next(c for c in smoke if c.row == "dual").config["params"]["score_params"] == {"T": 2, "J": 2}
