"""Fuzzing the ``ddbench`` command in process: malformed files and option values at every command.

The contract checked for each input: either exit 2 with exactly one line on stderr that names the
problem (no traceback, nothing on stdout, nothing outside ``--out`` touched, ``--out`` not created),
or exit 0 with the right result. Values that pass validation are checked at the parser (they reach
the handler unchanged) or with tiny settings, so nothing here trains for long.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
import re
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from condensed import CondensedSet
from harness.cli import build_parser, main

FUZZ = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                derandomize=True, database=None)  # the same examples every run; no .hypothesis/ folder
N, C, E = 60, 3, 12  # the dynamics fixture: samples, classes, epochs
_counter = itertools.count()


# --- running the command ------------------------------------------------------------------------------
def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if p.is_file()}


def assert_one_line_error(rc: int, out: str, err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert rc == 2, (rc, out, err)
    assert len(lines) == 1, err
    assert "Traceback" not in err and ": error: " in lines[0], err
    assert out == "", out
    for n in needles:
        assert n in lines[0], (n, lines[0])


def fresh(world: Path, name: str = "out") -> Path:
    return world.parent / "outs" / f"{name}{next(_counter)}"


def expect_error(world: Path, argv: list[str], *needles: str, out: Path | None = None) -> str:
    before = tree(world)
    rc, o, e = run(argv)
    assert_one_line_error(rc, o, e, *needles)
    assert tree(world) == before, "a failing command changed files outside --out"
    if out is not None:
        assert not out.exists(), f"{out} was created by a failing command"
    return e


# --- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Inputs every test reads (never written by a command): dynamics, scores, labels, sets, files."""
    from harness.data import load_dataset
    from harness.dynamics import Dynamics
    from harness.evaluate import random_per_class
    from harness.pruning.scores import compute_score

    base = tmp_path_factory.mktemp("fuzz")
    w = base / "world"
    w.mkdir()
    (base / "outs").mkdir()
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(C), N // C)
    logits = rng.normal(size=(E, N, C)).astype(np.float32)
    logits[np.arange(E)[:, None], np.arange(N)[None, :], labels[None, :]] += np.linspace(0, 3, E)[:, None]
    Dynamics.from_logits(logits, labels, C, out_dir=w / "dyn")
    np.save(w / "labels.npy", labels)
    np.save(w / "aum.npy", compute_score("aum", Dynamics.open(w / "dyn")))
    np.save(w / "feat.npy", rng.normal(size=(N, 4)))
    train = load_dataset("digits", "train")
    sub = train.subset(random_per_class(train.labels, 2, seed=0))
    CondensedSet(images=sub.normalized(), labels=sub.labels, num_classes=10, dataset="digits", method="random",
                 space="normalized", mean=sub.mean, std=sub.std).save(w / "set")
    torch.save({"data": [[torch.randn(10, 1, 28, 28), torch.arange(10)]], "accs_all_exps": {"ConvNet": [0.5]}},
               w / "res_DC_MNIST_ConvNet_1ipc.pt")
    (w / "spec.yaml").write_text("name: t\ndefaults: {dataset: digits, protocol: vico-dc}\n"
                                 "rows: [{source: random_real}]\ncolumns: [{ipc: 1}]\n")
    return w


# --- numeric options: every command, every numeric option ---------------------------------------------
def _int_value(text: str) -> int | None:
    t = text.strip(" \t\n\r\x0b\x0c")
    body = t[1:] if t[:1] in ("+", "-") else t
    return int(t) if body and all(c in "0123456789" for c in body) else None


def _float_value(text: str) -> float | None:
    t = text.strip(" \t\n\r\x0b\x0c")
    if not t or any(c not in "0123456789+-.eE" for c in t):
        return None
    try:
        v = float(t)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


INT_MAX = 2**31 - 1
KINDS = {  # kind -> (parse text, valid?)
    "pos": (_int_value, lambda v: 1 <= v <= INT_MAX),
    "nonneg": (_int_value, lambda v: 0 <= v <= INT_MAX),
    "seed": (_int_value, lambda v: 0 <= v <= INT_MAX),
    "keep": (_float_value, lambda v: 0 < v <= 1),
    "prune": (_float_value, lambda v: 0 <= v < 1),
}
BASE = {  # the smallest argv each command parses with
    "evaluate": ["evaluate", "--dataset", "digits"],
    "quickstart": ["quickstart"],
    "dynamics": ["dynamics", "--dataset", "digits", "--out", "D"],
    "score": ["score", "--dynamics", "D", "--method", "aum", "--out", "S"],
    "select": ["select", "--recipe", "random", "--out", "K"],
    "coreset": ["coreset", "--dataset", "digits", "--recipe", "random"],
    "import": ["import", "vico", "F", "--out", "O"],
    "shrink": ["shrink", "DIR", "--out", "O"],
    "condense": ["condense", "--method", "dm", "--dataset", "digits", "--out", "O"],
    "table run": ["table", "run", "SPEC", "--results", "R"],
}
BUDGET = ["--keep=0.5"]
NUMERIC = [  # (command, option, kind, extra argv that makes the rest valid)
    ("evaluate", "--ipc", "pos", []), ("evaluate", "--experiment", "nonneg", ["--ipc=1"]),
    ("evaluate", "--runs", "pos", ["--ipc=1"]), ("evaluate", "--epochs", "pos", ["--ipc=1"]),
    ("evaluate", "--seed", "seed", ["--ipc=1"]), ("evaluate", "--threads", "pos", ["--ipc=1"]),
    ("quickstart", "--runs", "pos", []), ("quickstart", "--epochs", "pos", []),
    ("dynamics", "--epochs", "pos", []), ("dynamics", "--seed", "seed", []),
    ("score", "--num-classes", "pos", []),
    ("select", "--keep", "keep", []), ("select", "--prune", "prune", []), ("select", "--count", "pos", []),
    ("select", "--ipc", "pos", []), ("select", "--seed", "seed", BUDGET),
    ("coreset", "--keep", "keep", []), ("coreset", "--prune", "prune", []), ("coreset", "--count", "pos", []),
    ("coreset", "--ipc", "pos", []), ("coreset", "--epochs-dynamics", "pos", BUDGET),
    ("coreset", "--epochs-train", "pos", BUDGET), ("coreset", "--runs", "pos", BUDGET),
    ("coreset", "--seed", "seed", BUDGET), ("coreset", "--nproc", "pos", BUDGET),
    ("coreset", "--num-workers", "nonneg", BUDGET), ("coreset", "--img-size", "pos", BUDGET),
    ("import", "--experiment", "nonneg", []), ("import", "--factor", "pos", []),
    ("shrink", "--to-ipc", "pos", []), ("shrink", "--runs-dynamics", "pos", ["--to-ipc=1"]),
    ("shrink", "--stop-epoch", "pos", ["--to-ipc=1"]), ("shrink", "--topk", "pos", ["--to-ipc=1"]),
    ("shrink", "--epochs", "pos", ["--to-ipc=1"]), ("shrink", "--seed", "seed", ["--to-ipc=1"]),
    ("condense", "--ipc", "pos", []), ("condense", "--iterations", "nonneg", ["--ipc=1"]),
    ("condense", "--drop-ratio", "prune", ["--ipc=1"]), ("condense", "--keep-ratio", "keep", ["--ipc=1"]),
    ("condense", "--seed", "seed", ["--ipc=1"]),
    ("table run", "--workers", "pos", []), ("table run", "--timeout-min", "pos", []),
]
NUMBER_TEXT = st.one_of(
    st.integers(-10**12, 10**12).map(str),
    st.sampled_from(["0", "-0", "-1", "1", "2147483647", "2147483648", "1e3", "0.5", "1.0", "1.", ".5", "-0.5",
                     "nan", "NaN", "inf", "-inf", "1e400", "0x10", "1_000", "", " ", "abc", "5abc", "٣", "1e-400",
                     "+3", " 7 ", "0.999999", "1.0000001"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=6),
)


@pytest.mark.parametrize("command, option, kind, extra", NUMERIC, ids=[f"{c}{o}" for c, o, _, _ in NUMERIC])
@FUZZ
@given(text=NUMBER_TEXT)
def test_numeric_options_are_typed(world: Path, command: str, option: str, kind: str, extra: list[str],
                                   text: str) -> None:
    assume("\x00" not in text)
    argv = BASE[command] + extra + [f"{option}={text}"]
    parse, ok = KINDS[kind]
    value = parse(text)
    if value is not None and ok(value):  # valid: reaches the handler unchanged (never replaced by a default)
        args = build_parser().parse_args(argv)
        assert getattr(args, option.lstrip("-").replace("-", "_")) == value
    else:  # invalid: the full command stops at the parser with one line naming the option
        expect_error(world, argv, option)


@pytest.mark.parametrize("command", sorted(BASE))
def test_unknown_option_and_missing_value_one_line(world: Path, command: str) -> None:
    required = {"condense": ["--ipc=1"], "select": BUDGET, "coreset": BUDGET, "shrink": ["--to-ipc=1"]}
    argv = BASE[command] + required.get(command, [])
    expect_error(world, argv + ["--no-such-option"], "--no-such-option")
    valued = {"import": "--experiment", "quickstart": "--runs", "score": "--num-classes", "table run": "--workers"}
    expect_error(world, argv + [valued.get(command, "--seed")], "expected one argument")


@pytest.mark.parametrize("command", ["evaluate", "dynamics", "coreset", "shrink", "condense"])
def test_device_not_available_is_refused_at_parse(world: Path, command: str) -> None:
    extra = {"evaluate": ["--ipc=1"], "coreset": BUDGET, "shrink": ["--to-ipc=1"], "condense": ["--ipc=1"]}
    bad = ["cuda:99", "tpu", "", "cpu:x", "gpu"] + ([] if torch.cuda.is_available() else ["cuda", "cuda:0"])
    for dev in bad:
        expect_error(world, BASE[command] + extra.get(command, []) + [f"--device={dev}"], "--device")
    args = build_parser().parse_args(BASE[command] + extra.get(command, []) + ["--device=cpu"])
    assert args.device == "cpu"


def test_table_run_device_checked_for_local_runs(world: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    res = fresh(world, "results")
    expect_error(world, ["table", "run", world / "spec.yaml", "--results", res, "--device", "cuda"], "--device")
    assert not res.exists()


# --- explicit values are never replaced by defaults; the record says what ran ---------------------------
def test_evaluate_records_the_runs_and_epochs_that_ran(world: Path) -> None:
    out = fresh(world, "res").with_suffix(".json")
    rc, o, e = run(["evaluate", "--dataset", "digits", "--ipc", "1", "--model", "convnet_d2", "--runs", "1",
                    "--epochs", "1", "--out", out])
    assert rc == 0, e
    res = json.loads(out.read_text())
    assert res["protocol"]["runs"] == 1 and res["protocol"]["epochs"] == 1
    assert len(res["accuracies"]) == 1 and all(r["protocol"]["runs"] == 1 for r in res["runs"])


@pytest.mark.parametrize("argv, option", [
    (["evaluate", "--dataset", "digits", "--ipc", "1", "--epochs", "0"], "--epochs"),
    (["evaluate", "--dataset", "digits", "--ipc", "1", "--runs", "0"], "--runs"),
    (["shrink", "SET", "--to-ipc", "1", "--epochs", "0"], "--epochs"),
    (["shrink", "SET", "--to-ipc", "1", "--topk", "0"], "--topk"),
    (["shrink", "SET", "--to-ipc", "1", "--stop-epoch", "0"], "--stop-epoch"),
    (["condense", "--method", "dm", "--dataset", "digits", "--ipc", "0"], "--ipc"),
])
def test_zero_is_refused_not_read_as_default(world: Path, argv: list[str], option: str) -> None:
    out = fresh(world)
    argv = [world / "set" if a == "SET" else a for a in argv]
    expect_error(world, argv + (["--out", out] if argv[0] != "evaluate" else []), option, out=out)


def test_shrink_passes_explicit_values_through(world: Path) -> None:
    seen = {}

    def fake_shrink(src, to_ipc, **kw):
        seen.update(kw, to_ipc=to_ipc)
        raise KeyboardInterrupt  # stop here: no training

    out = fresh(world)
    with mock.patch("harness.cli.sets.shrink", fake_shrink):
        rc, _, _ = run(["shrink", world / "set", "--to-ipc", "1", "--topk", "1", "--stop-epoch", "1",
                        "--epochs", "1", "--runs-dynamics", "2", "--precision", "bf16", "--compile", "--out", out])
    assert rc == 130
    assert (seen["topk"], seen["stop_epoch"], seen["epochs"], seen["runs_dynamics"], seen["to_ipc"]) == (1, 1, 1, 2, 1)
    assert seen["options"].as_dict() == {"path": "auto", "precision": "bf16", "compile": True}


def test_coreset_and_evaluate_pass_engine_options_through(world: Path) -> None:
    seen = {}

    def fake(*a, **kw):
        seen.update(kw)
        raise KeyboardInterrupt  # stop here: no training

    with mock.patch("harness.cli.pruning.run_coreset", fake):
        rc, _, _ = run(["coreset", "--dataset", "digits", "--recipe", "el2n", "--keep", "0.5", "--path", "ensemble",
                        "--precision", "bf16", "--workdir", world / "wd"])
    assert rc == 130 and seen["options"].as_dict() == {"path": "ensemble", "precision": "bf16", "compile": "auto"}
    seen.clear()
    with mock.patch("harness.cli.evaluate.evaluate", fake):
        rc, _, _ = run(["evaluate", "--dataset", "digits", "--ipc", "1", "--compile", "--path", "sequential"])
    assert rc == 130 and seen["options"].as_dict() == {"path": "sequential", "precision": "auto", "compile": True}
    seen.clear()
    with mock.patch("harness.cli.evaluate.evaluate", fake):
        rc, _, _ = run(["evaluate", "--dataset", "digits", "--ipc", "1", "--exact"])
    assert rc == 130 and seen["options"].as_dict() == {"path": "sequential", "precision": "fp32", "compile": False}
    rc, _, e = run(["evaluate", "--dataset", "digits", "--ipc", "1", "--exact", "--compile", "on"])
    assert rc == 2 and "--exact" in e and "--compile" in e
    rc, _, e = run(["evaluate", "--dataset", "digits", "--ipc", "1", "--path", "vmap"])
    assert rc == 2 and "--path" in e


@pytest.mark.parametrize("option", ["--topk=3", "--stop-epoch=3", "--epochs=3", "--runs-dynamics=2", "--precision=bf16",
                                    "--path=sequential", "--compile"])
def test_shrink_refuses_options_the_rule_ignores(world: Path, option: str) -> None:
    out = fresh(world)
    expect_error(world, ["shrink", world / "set", "--to-ipc", "1", "--rule", "random", option, "--out", out],
                 option.split("=")[0], out=out)


# --- select: given scores are used or refused, never ignored --------------------------------------------
def _hard_top(scores: np.ndarray, k: int) -> np.ndarray:
    """Independent oracle for a high-hard 'keep hard' global rank: the k largest, ties to the lower index."""
    order = sorted(range(scores.size), key=lambda i: (-scores[i], i))
    return np.sort(np.array(order[:k], dtype=np.int64))


def test_select_uses_given_scores_over_dynamics(world: Path) -> None:
    from harness.dynamics import Dynamics
    from harness.pruning.scores import compute_score

    x = np.random.default_rng(1).normal(size=N)
    np.save(world.parent / "outs" / "x.npy", x)
    out = fresh(world).with_suffix(".npy")
    rc, o, e = run(["select", "--scores", world.parent / "outs" / "x.npy", "--dynamics", world / "dyn",
                    "--recipe", "el2n", "--count", "10", "--out", out])
    assert rc == 0, e
    kept = np.load(out)
    np.testing.assert_array_equal(kept, _hard_top(x, 10))
    from_dyn = _hard_top(compute_score("el2n", Dynamics.open(world / "dyn")), 10)
    assert not np.array_equal(kept, from_dyn)  # the old behaviour (recomputed from dynamics) differs
    assert "scores from" in o and "x.npy" in o


def test_score_then_select_flow_keeps_score_parameters(world: Path) -> None:
    s = fresh(world).with_suffix(".npy")
    rc, _, e = run(["score", "--dynamics", world / "dyn", "--method", "el2n", "--param", "end=3", "--out", s])
    assert rc == 0, e
    out = fresh(world).with_suffix(".npy")
    rc, _, e = run(["select", "--scores", s, "--dynamics", world / "dyn", "--recipe", "el2n", "--count", "7",
                    "--out", out])
    assert rc == 0, e
    np.testing.assert_array_equal(np.load(out), _hard_top(np.load(s), 7))


@pytest.mark.parametrize("make, needle", [
    (lambda d: d / "missing.npy", "missing.npy"),
    (lambda d: (np.save(d / "nan.npy", np.full(N, np.nan)), d / "nan.npy")[1], "NaN"),
    (lambda d: (np.save(d / "short.npy", np.zeros(N - 1)), d / "short.npy")[1], "short.npy"),
    (lambda d: (np.save(d / "twod.npy", np.zeros((N, 2))), d / "twod.npy")[1], "twod.npy"),
    (lambda d: ((d / "junk.npy").write_bytes(b"\x93NUMPY garbage"), d / "junk.npy")[1], "junk.npy"),
])
def test_select_bad_scores_file_refused_even_with_dynamics(world: Path, make, needle: str) -> None:
    scratch = world.parent / "outs"
    path = make(scratch)
    out = fresh(world).with_suffix(".npy")
    expect_error(world, ["select", "--scores", path, "--dynamics", world / "dyn", "--recipe", "aum", "--keep", "0.5",
                         "--out", out], needle, out=out)


def test_select_scores_with_scoreless_recipe_refused(world: Path) -> None:
    out = fresh(world).with_suffix(".npy")
    expect_error(world, ["select", "--scores", world / "aum.npy", "--labels", world / "labels.npy", "--recipe",
                         "random", "--keep", "0.5", "--out", out], "--scores", out=out)


def test_select_dual_takes_mu_from_dynamics_and_says_so(world: Path) -> None:
    from harness.dynamics import Dynamics
    from harness.pruning.scores import mean_target_prob
    from harness.pruning.select import Budget, select

    x = np.abs(np.random.default_rng(2).normal(size=N)) + 0.1
    xs = world.parent / "outs" / "dual_x.npy"
    np.save(xs, x)
    out = fresh(world).with_suffix(".npy")
    rc, o, e = run(["select", "--scores", xs, "--dynamics", world / "dyn", "--recipe", "dual", "--prune", "0.5",
                    "--seed", "3", "--out", out])
    assert rc == 0, e
    dyn = Dynamics.open(world / "dyn")
    want = select("beta", x, dyn.labels, Budget.prune_rate(0.5), seed=3, mu=mean_target_prob(dyn, epochs=30), c_d=4.0)
    np.testing.assert_array_equal(np.load(out), want)
    assert "mu (mean target probability" in o
    out2 = fresh(world).with_suffix(".npy")
    expect_error(world, ["select", "--scores", xs, "--labels", world / "labels.npy", "--recipe", "dual", "--prune",
                         "0.5", "--out", out2], "--dynamics", out=out2)


def test_select_ccs_cutoff_key_from_dynamics(world: Path) -> None:
    out = fresh(world).with_suffix(".npy")
    rc, o, e = run(["select", "--scores", world / "aum.npy", "--dynamics", world / "dyn", "--recipe", "ccs",
                    "--prune", "0.9", "--out", out])
    assert rc == 0 and "cut-off on the given scores (aum)" in o, (o, e)
    out = fresh(world).with_suffix(".npy")
    rc, o, e = run(["select", "--scores", world / "aum.npy", "--dynamics", world / "dyn", "--recipe", "ccs",
                    "--prune", "0.9", "--opt", "cutoff_score=el2n", "--out", out])
    assert rc == 0 and "cut-off scores (el2n) from" in o, (o, e)
    out = fresh(world).with_suffix(".npy")
    expect_error(world, ["select", "--scores", world / "aum.npy", "--labels", world / "labels.npy", "--recipe", "ccs",
                         "--prune", "0.9", "--opt", "cutoff_score=el2n", "--out", out], "cutoff_score", out=out)


@pytest.mark.parametrize("opt, needle", [("bogus=1", "bogus"), ("keep=sideways", "keep"), ("balance=3", "balance"),
                                         ("=1", "--opt"), ("nokey", "--opt"), ("direction=NaN", "NaN")])
def test_select_bad_opt(world: Path, opt: str, needle: str) -> None:
    out = fresh(world).with_suffix(".npy")
    expect_error(world, ["select", "--scores", world / "aum.npy", "--labels", world / "labels.npy", "--recipe", "aum",
                         "--keep", "0.5", "--opt", opt, "--out", out], needle, out=out)


# --- malformed .npy inputs to select / score ----------------------------------------------------------
NPY = st.one_of(
    hnp.arrays(st.sampled_from([np.float64, np.float32, np.int64, np.int8, np.bool_, np.complex64]),
               st.sampled_from([(N,), (N - 1,), (N + 1,), (N, 1), (N, 4), (0,), ()]),
               elements=None),
    st.builds(lambda v: np.full(N, v), st.sampled_from([np.nan, np.inf, -np.inf, 1e308, -1e308])),
)


def _save_npy(world: Path, arr: np.ndarray, corrupt: int | None) -> Path:
    p = world.parent / "outs" / f"in{next(_counter)}.npy"
    np.save(p, arr)
    if corrupt is not None:
        b = p.read_bytes()
        p.write_bytes(b[: max(0, len(b) - 1 - corrupt % max(1, len(b)))])
    return p


def _check_select_result(rc: int, o: str, e: str, out: Path, oracle) -> None:
    if rc == 0:
        np.testing.assert_array_equal(np.load(out), oracle())
    else:
        assert_one_line_error(rc, o, e)
        assert not out.exists()


@FUZZ
@given(arr=NPY, corrupt=st.one_of(st.none(), st.integers(0, 10_000)))
def test_fuzz_select_scores_file(world: Path, arr: np.ndarray, corrupt: int | None) -> None:
    p = _save_npy(world, arr, corrupt)
    out = fresh(world).with_suffix(".npy")
    before = tree(world)
    rc, o, e = run(["select", "--scores", p, "--labels", world / "labels.npy", "--recipe", "el2n", "--count", "5",
                    "--out", out])
    ok = corrupt is None and arr.shape == (N,) and arr.dtype.kind in "fiu" and np.isfinite(arr).all()
    assert (rc == 0) == ok, (arr.dtype, arr.shape, corrupt, e)
    _check_select_result(rc, o, e, out, lambda: _hard_top(arr.astype(np.float64), 5))
    assert tree(world) == before
    p.unlink()


@FUZZ
@given(arr=NPY, corrupt=st.one_of(st.none(), st.integers(0, 10_000)))
def test_fuzz_select_labels_and_features(world: Path, arr: np.ndarray, corrupt: int | None) -> None:
    p = _save_npy(world, arr, corrupt)
    out = fresh(world).with_suffix(".npy")
    rc, o, e = run(["select", "--labels", p, "--recipe", "random", "--count", "2", "--out", out])
    with np.errstate(invalid="ignore"):
        ok = (corrupt is None and arr.ndim == 1 and arr.size >= 2 and arr.dtype.kind in "fiu"
              and bool(np.isfinite(arr).all()) and bool((arr == np.round(arr)).all())
              and 0 <= arr.min() and arr.max() < 2**20)
    assert (rc == 0) == ok, (arr.dtype, arr.shape, corrupt, e)
    if rc == 0:
        kept = np.load(out)
        assert kept.size == 2 and len(set(kept.tolist())) == 2 and kept.max() < arr.size
    else:
        assert_one_line_error(rc, o, e)
    out = fresh(world).with_suffix(".npy")
    rc, o, e = run(["select", "--labels", world / "labels.npy", "--recipe", "ssp", "--count", "3", "--features", p,
                    "--out", out])
    with np.errstate(over="ignore", invalid="ignore"):
        ok = (corrupt is None and arr.ndim == 2 and arr.shape[0] == N and arr.dtype.kind in "fiu"
              and bool(np.isfinite((arr.astype(np.float64) ** 2).sum(1)).all()))
    assert (rc == 0) == ok, (arr.dtype, arr.shape, corrupt, e)
    if rc == 0:
        assert np.load(out).size == 3
    else:
        assert_one_line_error(rc, o, e)
        assert not out.exists()
    p.unlink()


def test_select_features_wrong_length(world: Path) -> None:
    f = world.parent / "outs" / "feat5.npy"
    np.save(f, np.zeros((5, 4)))
    out = fresh(world).with_suffix(".npy")
    expect_error(world, ["select", "--labels", world / "labels.npy", "--recipe", "ssp", "--keep", "0.5", "--features",
                         f, "--out", out], "feat5.npy", f"({N}, D)", out=out)


# --- score --from-logits ------------------------------------------------------------------------------
def _dumps(d: Path, logits: np.ndarray) -> Path:
    d.mkdir(parents=True)
    for e in range(logits.shape[0]):
        np.save(d / f"{e}_Output.npy", logits[e])
        np.save(d / f"{e}_Index.npy", np.arange(logits.shape[1]))
    return d


def test_score_from_logits_nan_is_an_error(world: Path) -> None:
    logits = np.random.default_rng(0).normal(size=(3, N, C)).astype(np.float32)
    logits[1, 4, 0] = np.nan
    d = _dumps(world.parent / "outs" / f"dumps{next(_counter)}", logits)
    out = fresh(world).with_suffix(".npy")
    expect_error(world, ["score", "--from-logits", d, "--labels", world / "labels.npy", "--method", "el2n",
                         "--out", out], "NaN", str(d), out=out)


@pytest.mark.parametrize("labels, needle", [
    (np.repeat(np.arange(C), N // C) + 0.5, "whole numbers"),
    (np.repeat(np.arange(C), N // C) - 1, ">= 0"),
    (np.zeros((N, 2), np.int64), "shape"),
    (np.array(["a"] * N), "dtype"),
])
def test_score_from_logits_bad_labels(world: Path, labels: np.ndarray, needle: str) -> None:
    d = world.parent / "outs" / f"dumps{next(_counter)}"
    _dumps(d, np.zeros((2, N, C), np.float32))
    lab = world.parent / "outs" / f"lab{next(_counter)}.npy"
    np.save(lab, labels)
    out = fresh(world).with_suffix(".npy")
    expect_error(world, ["score", "--from-logits", d, "--labels", lab, "--method", "el2n", "--out", out], needle,
                 out=out)


@pytest.mark.parametrize("param, needle", [("T=abc", "T="), ("bogus=1", "bogus"), ("T=1.5", "T="),
                                           ("T=NaN", "NaN"), ("T", "--param")])
def test_score_bad_param(world: Path, param: str, needle: str) -> None:
    out = fresh(world).with_suffix(".npy")
    expect_error(world, ["score", "--dynamics", world / "dyn", "--method", "tdds", "--param", param, "--out", out],
                 needle, out=out)


def test_score_dynamics_with_from_logits_options_refused(world: Path) -> None:
    out = fresh(world).with_suffix(".npy")
    expect_error(world, ["score", "--dynamics", world / "dyn", "--method", "aum", "--num-classes", "3",
                         "--out", out], "--num-classes", out=out)


@FUZZ
@given(meta=st.one_of(st.binary(max_size=40), st.just(b"{}"), st.just(b'{"format": "ddbench.dynamics/1"}')),
       which=st.sampled_from(["meta.json", "labels.npy", "loss.npy"]))
def test_fuzz_corrupt_dynamics_dir(world: Path, meta: bytes, which: str) -> None:
    import shutil

    d = world.parent / "outs" / f"dyn{next(_counter)}"
    shutil.copytree(world / "dyn", d)
    target = d / which if (d / which).exists() else d / "meta.json"
    target.write_bytes(meta)
    out = fresh(world).with_suffix(".npy")
    rc, o, e = run(["score", "--dynamics", d, "--method", "el2n", "--out", out])
    assert rc in (0, 2), e
    if rc == 2:
        assert_one_line_error(rc, o, e)
        assert not out.exists()


# --- protocol and config overrides --------------------------------------------------------------------
class Reached(Exception):
    """Raised by a stub where the real command would start loading data / training."""


def _stop(*a, **k):
    raise Reached


PARAM_VALUES = st.one_of(st.sampled_from(["abc", "-2", "0", "1", "0.5", "1e9", "NaN", "Infinity", "true", "[1, 2]",
                                          "{}", "null", '"x"', "", "-0.1", "2.5"]),
                         st.integers(-5, 5).map(str), st.floats(allow_nan=False).map(repr))


@FUZZ
@given(key=st.sampled_from(["epochs", "lr", "momentum", "batch_size", "weight_decay", "runs", "cutmix_p", "precision",
                            "milestones", "augment", "nesterov", "bogus", "name"]), value=PARAM_VALUES)
def test_fuzz_evaluate_param(world: Path, key: str, value: str) -> None:
    from harness.engine.protocol import TrainProtocol

    seen = {}

    def fake_load(*a, **k):
        raise Reached

    def spy_protocol(name, dataset, **overrides):
        from harness.engine.protocol import create_protocol

        proto = create_protocol(name, dataset, **overrides)
        seen["proto"] = proto
        return proto

    with mock.patch("harness.cli.evaluate.load_dataset", fake_load), mock.patch("harness.cli.evaluate.create_protocol",
                                                                             spy_protocol):
        try:
            rc, o, e = run(["evaluate", "--dataset", "digits", "--ipc", "1", "--param", f"{key}={value}"])
        except Reached:
            proto = seen["proto"]
            assert isinstance(proto, TrainProtocol)
            got = getattr(proto, key)
            assert not isinstance(got, str) or key in ("precision", "augment")
            if isinstance(got, float):
                assert math.isfinite(got)
            return
    assert_one_line_error(rc, o, e, key if key != "name" else "name")


@FUZZ
@given(key=st.sampled_from(["lr_img", "iterations", "batch_real", "init", "model_kwargs", "val_fraction", "bogus"]),
       value=PARAM_VALUES)
def test_fuzz_condense_param(world: Path, key: str, value: str) -> None:
    out = fresh(world)
    with mock.patch("harness.cli.condense.load_dataset", _stop):
        try:
            rc, o, e = run(["condense", "--method", "dm", "--dataset", "digits", "--ipc", "1", "--out", out,
                            "--param", f"{key}={value}"])
        except Reached:
            return
    assert_one_line_error(rc, o, e, key)
    assert not out.exists()


@pytest.mark.parametrize("argv, needle", [
    (["evaluate", "--dataset", "digits", "--ipc", "1", "--param", "lr=abc"], "lr="),
    (["evaluate", "--dataset", "digits", "--ipc", "1", "--param", "epochs=-2"], "epochs="),
    (["evaluate", "--dataset", "digits", "--ipc", "1", "--param", "augment=dsa"], "dsa_strategy"),
    (["evaluate", "--dataset", "digits", "--ipc", "1", "--model", "convnet_nope"], "convnet_nope"),
    (["evaluate", "--dataset", "digits", "--ipc", "1", "--protocol", "nope"], "nope"),
    (["evaluate", "--dataset", "nope", "--ipc", "1"], "nope"),
    (["dynamics", "--dataset", "digits", "--param", "lr=abc", "--out", "OUT"], "lr="),
    (["condense", "--method", "dm", "--dataset", "digits", "--ipc", "1", "--param", "bogus=1", "--out", "OUT"],
     "bogus"),
    (["condense", "--method", "dm", "--dataset", "digits", "--ipc", "1", "--param", "lr_img=abc", "--out", "OUT"],
     "lr_img"),
    (["condense", "--method", "dc", "--dataset", "digits", "--ipc", "1", "--param", "outer_loop=0", "--out", "OUT"],
     "outer_loop"),
    (["condense", "--method", "dm", "--dataset", "digits", "--ipc", "1", "--model", "nope", "--out", "OUT"], "nope"),
    (["coreset", "--dataset", "digits", "--recipe", "el2n", "--keep", "0.5", "--param", "bogus=1"], "bogus"),
    (["coreset", "--dataset", "digits", "--recipe", "el2n", "--keep", "0.5", "--opt", "bogus=1"], "bogus"),
    (["coreset", "--dataset", "digits", "--recipe", "nope", "--keep", "0.5"], "nope"),
    (["shrink", "SET", "--to-ipc", "1", "--rule", "nope", "--out", "OUT"], "nope"),
    (["shrink", "SET", "--to-ipc", "1", "--protocol", "nope", "--out", "OUT"], "nope"),
    (["import", "hfhub", "not a repo id!!", "--dataset", "imagenet", "--out", "OUT"], "not a repo id!!"),
    (["import", "vico", "RES", "--option", "dataset=5", "--out", "OUT"], "5"),
    (["import", "nope", "RES", "--out", "OUT"], "nope"),
])
def test_bad_settings_one_line_before_any_work(world: Path, argv: list[str], needle: str) -> None:
    out = fresh(world)
    subst = {"OUT": out, "SET": world / "set", "RES": world / "res_DC_MNIST_ConvNet_1ipc.pt"}
    argv = [subst.get(a, a) for a in argv]
    loads = ("harness.data", "harness.cli.evaluate", "harness.cli.pruning", "harness.pruning.coreset")
    with contextlib.ExitStack() as stack:
        for where in loads:  # every name the commands load data through: stop before any work
            stack.enter_context(mock.patch(f"{where}.load_dataset", _stop))
        expect_error(world, argv, needle, out=out)


# --- published-set loaders ----------------------------------------------------------------------------
def _vico(path: Path, images: torch.Tensor, labels: torch.Tensor) -> Path:
    torch.save({"data": [[images, labels]], "accs_all_exps": {}}, path)
    return path


@pytest.mark.parametrize("labels, needle", [
    (torch.arange(10).float() + 0.4, "non-integer"),
    (torch.zeros(10, dtype=torch.long), "hold no image"),
    (torch.tensor([0, 0, 1, 2, 3, 4, 5, 6, 7, 8]), "hold no image"),
    (torch.arange(10).reshape(2, 5), "shape"),
    (torch.tensor([float("nan")] * 10), "non-integer"),
])
def test_import_vico_bad_labels(world: Path, labels: torch.Tensor, needle: str) -> None:
    d = world.parent / "outs" / f"v{next(_counter)}"
    d.mkdir()
    f = _vico(d / "res_DC_MNIST_ConvNet_1ipc.pt", torch.randn(10, 1, 28, 28), labels)
    out = fresh(world)
    expect_error(world, ["import", "vico", f, "--out", out], needle, "res_DC_MNIST_ConvNet_1ipc.pt", out=out)


def test_import_vico_integral_float_labels_and_unequal_counts_warn(world: Path) -> None:
    d = world.parent / "outs" / f"v{next(_counter)}"
    d.mkdir()
    labels = torch.tensor([0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]).float()
    f = _vico(d / "res_DC_MNIST_ConvNet_1ipc.pt", torch.randn(11, 1, 28, 28), labels)
    out = fresh(world)
    rc, o, e = run(["import", "vico", f, "--out", out])
    assert rc == 0, e
    from condensed import load_condensed

    cs = load_condensed(out)
    assert cs.labels.tolist() == labels.long().tolist() and cs.labels.dtype == torch.long
    assert any("unequal" in w for w in cs.provenance["warnings"])


PT_CONTENT = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(["list", "nodata", "emptydata", "tensor", "badpair", "wrongshape", "ok", "strlabels"]),
)


@FUZZ
@given(content=PT_CONTENT, cut=st.one_of(st.none(), st.integers(1, 400)))
def test_fuzz_import_vico_file(world: Path, content, cut: int | None) -> None:
    d = world.parent / "outs" / f"v{next(_counter)}"
    d.mkdir()
    f = d / "res_DC_MNIST_ConvNet_1ipc.pt"
    images, labels = torch.randn(10, 1, 28, 28), torch.arange(10)
    objs = {"list": [1, 2], "nodata": {"x": 1}, "emptydata": {"data": []}, "tensor": torch.zeros(3),
            "badpair": {"data": [[images]]}, "wrongshape": {"data": [[torch.randn(10, 3, 32, 32), labels]]},
            "ok": {"data": [[images, labels]]}, "strlabels": {"data": [[images, "abc"]]}}
    if isinstance(content, bytes):
        f.write_bytes(content)
    else:
        torch.save(objs[content], f)
    if cut is not None:
        f.write_bytes(f.read_bytes()[:cut])
    out = fresh(world)
    rc, o, e = run(["import", "vico", f, "--out", out])
    if rc == 0:
        from condensed import load_condensed

        assert content == "ok" and cut is None
        cs = load_condensed(out)
        torch.testing.assert_close(cs.images, images)
        assert cs.labels.tolist() == labels.tolist()
    else:
        assert_one_line_error(rc, o, e)
        assert not out.exists()


def _png(path: Path, value: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, np.uint8), mode="L").save(path)


def test_import_imagefolder_empty_class_refused(world: Path) -> None:
    root = world.parent / "outs" / f"if{next(_counter)}"
    for c in range(10):
        (root / f"c{c}").mkdir(parents=True)
        if c != 7:
            _png(root / f"c{c}" / "a.png", 10 * c)
    out = fresh(world)
    expect_error(world, ["import", "imagefolder", root, "--dataset", "digits", "--out", out], "hold no image", "c7",
                 out=out)
    _png(root / "c7" / "a.png", 70)
    rc, _, e = run(["import", "imagefolder", root, "--dataset", "digits", "--out", out])
    assert rc == 0, e


@pytest.mark.parametrize("shape, needle", [((1, 28, 28), "(1, 28, 28)"), ((3, 8, 8), "(3, 8, 8)")])
def test_inspect_refuses_set_not_matching_its_dataset(world: Path, shape: tuple, needle: str) -> None:
    d = world.parent / "outs" / f"set{next(_counter)}"
    CondensedSet(images=torch.rand(10, *shape), labels=torch.arange(10), num_classes=10, dataset="digits",
                 method="x", space="pixel").save(d)
    e = expect_error(world, ["inspect", d], needle, "digits")
    assert "(1, 8, 8)" in e
    out = fresh(world)
    expect_error(world, ["shrink", d, "--to-ipc", "1", "--rule", "random", "--out", out], needle, out=out)


@FUZZ
@given(which=st.sampled_from(["meta.json", "images.safetensors"]), data=st.binary(max_size=80),
       cut=st.booleans())
def test_fuzz_corrupt_set_dir(world: Path, which: str, data: bytes, cut: bool) -> None:
    import shutil

    d = world.parent / "outs" / f"set{next(_counter)}"
    shutil.copytree(world / "set", d)
    f = d / which
    f.write_bytes(f.read_bytes()[: len(data)] if cut else data)
    for argv in (["inspect", d], ["inspect", d, "--json"],
                 ["shrink", d, "--to-ipc", "1", "--rule", "random", "--out", fresh(world)]):
        expect_error(world, argv)


def test_inspect_broken_pipe_is_quiet(world: Path) -> None:
    class Closed(io.StringIO):
        def write(self, s: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    err = io.StringIO()
    with contextlib.redirect_stdout(Closed()), contextlib.redirect_stderr(err):
        rc = main(["inspect", str(world / "set")])
    assert rc == 141 and err.getvalue() == ""


@pytest.mark.slow
def test_inspect_piped_into_closed_reader_subprocess(world: Path) -> None:
    import os
    import subprocess
    import sys

    r, w = os.pipe()
    os.close(r)  # the reader (`head`) is gone before ddbench writes
    proc = subprocess.run([sys.executable, "-m", "harness", "inspect", str(world / "set")], stdout=w,
                          stderr=subprocess.PIPE, timeout=120, cwd=Path(__file__).resolve().parents[1])
    os.close(w)
    assert proc.returncode == 141 and proc.stderr == b"", proc.stderr.decode()


# --- table specs --------------------------------------------------------------------------------------
SPEC_HEAD = "name: t\ndefaults: {dataset: digits, protocol: vico-dc}\nrows: [{source: random_real}]\n"


@pytest.mark.parametrize("extra, needle", [
    ("columns: [{ipc: 1, protocol_overrides: {epochs: -2}}]\n", "epochs"),
    ("columns: [{ipc: 1, protocol_overrides: {lr: abc}}]\n", "lr"),
    ("columns: [{ipc: 1, protocol_overrides: {augment: dsa}}]\n", "dsa_strategy"),
    ("columns: [{ipc: 1, seed: -1}]\n", "seed"),
    ("columns: [{ipc: 1, seeds: [1.5]}]\n", "seeds"),
    ("columns: [{ipc: 1, dynamics_epochs: 0}]\n", "dynamics_epochs"),
    ("columns: [{ipc: 1, x: .nan}]\n", "x"),
    ("columns: [{ipc: 1}]\nscales: {tiny: {protocol_overrides: {runs: 0}}}\n", "runs"),
    ("columns: [{ipc: 1, kind: condense, method: dm, params: {lr_img: abc}}]\n", "lr_img"),
    ("columns: [{ipc: 1, kind: condense, method: dm, params: {bogus: 1}}]\n", "bogus"),
])
def test_table_spec_numeric_fields_fail_at_load(world: Path, extra: str, needle: str) -> None:
    spec = world.parent / "outs" / f"spec{next(_counter)}.yaml"
    spec.write_text(SPEC_HEAD + extra)
    res = fresh(world, "results")
    e = expect_error(world, ["table", "status", spec, "--results", res], needle)
    assert re.search(r"spec\d+\.yaml:\d+", e), e  # names the file and line


YAML_TEXT = st.one_of(
    st.text(max_size=80),
    st.sampled_from([SPEC_HEAD + "columns: [{ipc: 1}]\n", SPEC_HEAD, "rows: [", "- 1\n- 2", "name: [\n", "{}",
                     SPEC_HEAD + "columns: [{ipc: 1, runs: 1e9}]\n", SPEC_HEAD + "columns: [{ipc: true}]\n",
                     SPEC_HEAD + "columns: [{ipc: 1, protocol_overrides: [1]}]\n"]),
)


@FUZZ
@given(text=YAML_TEXT)
def test_fuzz_table_spec_text(world: Path, text: str) -> None:
    assume("\x00" not in text)
    spec = world.parent / "outs" / f"spec{next(_counter)}.yaml"
    spec.write_text(text)
    res = fresh(world, "results")
    rc, o, e = run(["table", "status", spec, "--results", res])
    if rc == 0:
        assert text == SPEC_HEAD + "columns: [{ipc: 1}]\n" and "t [full]" in o
    else:
        assert_one_line_error(rc, o, e, str(spec.name))
