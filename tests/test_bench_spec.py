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
