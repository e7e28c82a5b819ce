"""``ddbench quickstart`` (issue 15): the tour of the three flows, at ``--scale test`` (embedded ``digits``, a few
iterations and epochs): every flow runs and shows its rows, the printed numbers are the recorded ones, the
full-scale commands are real commands, the sets and the page are written under ``--out`` only, and a rerun
reuses the finished steps."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import shlex
from contextlib import redirect_stderr, redirect_stdout
from html.parser import HTMLParser

import pytest

from condensed import load_condensed
from harness.cli import build_parser, main
from harness.cli.quickstart import SCALES, Row, showed
from harness.data import load_dataset

FLOWS = ["condense", "condense", "shrink", "shrink", "coreset", "coreset"]
ACC = r"\d+\.\d\d ± \d+\.\d\d"


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def tour(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("qs") / "tour"
    rc, stdout, stderr = _run(["quickstart", "--scale", "test", "--out", str(out), "--progress", "lines"])
    assert rc == 0, stderr[-3000:]
    return out, stdout, stderr


def _closing_rows(stdout: str) -> list[list[str]]:
    part = stdout.split("## What the tour showed", 1)[1]
    rows = [ln for ln in part.splitlines() if re.match(r"\| \d+ \|", ln)]
    return [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in rows]


def test_three_flows_with_numbers(tour):
    out, stdout, stderr = tour
    for head in ("## 1. Condense with DM at IPC 10", "## 2. Shrink the DM set from IPC 10 to 2",
                 "## 3. Coreset: 10 real images per class by random and el2n"):
        assert head in stdout
    assert stdout.count("At full scale:") == 3
    rows = _closing_rows(stdout)
    assert [r[1] for r in rows] == FLOWS
    assert [r[0] for r in rows] == [str(i) for i in range(1, 7)]
    assert all(re.fullmatch(ACC, r[5]) for r in rows)
    # the printed numbers are the recorded ones, in the same order
    rec = json.loads((out / "quickstart.json").read_text())
    recorded = [r for s in rec["steps"] for r in s["rows"]]
    assert [f"{100 * r['mean']:.2f} ± {100 * r['std']:.2f}" for r in recorded] == [r[5] for r in rows]
    assert [r["images"] for r in recorded] == [100, 100, 20, 20, 100, 100] == [int(r[4]) for r in rows]
    assert all(len(r["accuracies"]) == SCALES["test"].eval_runs for r in recorded)
    # each row is compared with its reference, by the numbers recorded for both
    by_key = {r["key"]: r for r in recorded}
    gfo = by_key["dm-gfo"]
    diff = 100 * (gfo["mean"] - by_key["dm"]["mean"])
    assert rows[1][6].startswith(f"{diff:+.2f} pts vs DM without pre-pruning")
    assert rows[4][6] == "the baseline: random real images"
    # the progress lines went to stderr, not into the results
    assert "[1/3] condense" in stderr and "[1/3]" not in stdout
    assert (out / "quickstart.md").read_text().startswith("# ddbench quickstart on digits")


def test_full_scale_commands_are_ddbench_commands(tour):
    out, stdout, _ = tour
    cmds = [ln.strip() for ln in stdout.splitlines() if ln.startswith("    ddbench ")]
    assert len(cmds) == 3 + 3 + 2
    parser = build_parser()
    for cmd in cmds:
        argv = shlex.split(cmd)[1:]
        args = parser.parse_args(argv)  # a bad option would exit 2 here
        assert callable(args.func)
        assert getattr(args, "dataset", None) in (None, "mnist")
    assert {shlex.split(c)[1] for c in cmds} == {"condense", "evaluate", "shrink", "coreset"}


def test_sets_under_out(tour):
    out, _, _ = tour
    assert sorted(p.name for p in out.iterdir()) == ["coreset", "quickstart.html", "quickstart.json",
                                                      "quickstart.md", "sets", "steps"]
    dm, gfo = load_condensed(out / "sets" / "dm"), load_condensed(out / "sets" / "dm-gfo")
    assert dm.class_counts() == gfo.class_counts() == [10] * 10
    counts = load_dataset("digits", "train").class_counts()
    pruned = gfo.provenance["pre_prune_result"]
    assert pruned["dropped_per_class"] == [int(0.5 * c) for c in counts]  # drop 50% per class, as the scale says
    assert gfo.provenance["n_real_used"] == pruned["n_after"] == sum(counts) - sum(pruned["dropped_per_class"])
    assert dm.provenance["n_real_used"] == sum(counts)
    assert gfo.provenance["pre_prune"]["criterion"] == SCALES["test"].drop_criterion == "LossInit_large"
    yoco, rnd = load_condensed(out / "sets" / "shrink-yoco"), load_condensed(out / "sets" / "shrink-random")
    assert yoco.class_counts() == [2] * 10  # balanced
    assert sum(rnd.class_counts()) == 20 and yoco.ipc == rnd.ipc == 2
    assert yoco.provenance["shrunk_from"]["checksum"] == rnd.provenance["shrunk_from"]["checksum"] == dm.checksum()
    assert yoco.provenance["params"]["stop_epoch"] == SCALES["test"].shrink_stop_epoch


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.style = ""
        self._in_style = False
        self.rows = 0
        self._in_tbody = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"
        self._in_tbody = self._in_tbody or tag == "tbody"
        self.rows += tag == "tr" and self._in_tbody

    def handle_endtag(self, tag):
        self._in_style = False if tag == "style" else self._in_style
        self._in_tbody = False if tag == "tbody" else self._in_tbody

    def handle_data(self, data):
        if self._in_style:
            self.style += data


def test_page_is_self_contained(tour):
    out, stdout, _ = tour
    html = (out / "quickstart.html").read_text()
    page = _Page()
    page.feed(html)
    assert page.rows == 6
    assert not [t for t, a in page.tags if "style" in a]  # the CSP allows no inline style attribute
    assert not [t for t, a in page.tags if t in ("script", "link", "img", "iframe")]
    csp = next(a["content"] for t, a in page.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    digest = base64.b64encode(hashlib.sha256(page.style.encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in csp and "default-src 'none'" in csp
    for r in _closing_rows(stdout):
        assert r[5] in html
    assert "ddbench condense --method dm --dataset mnist" in html


def test_rerun_reuses_the_finished_steps(tour):
    out, stdout, _ = tour
    rc, again, err = _run(["quickstart", "--scale", "test", "--out", str(out), "--progress", "lines"])
    assert rc == 0
    assert err.count("reused") == 6 and "condense DM:" not in err  # nothing trained again
    assert _closing_rows(again) == _closing_rows(stdout)


def test_out_refuses_a_folder_with_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    rc, _, err = _run(["quickstart", "--scale", "test", "--out", str(tmp_path), "--quiet"])
    assert rc == 2 and "notes.txt" in err and "--out" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def _row(key: str, accs: tuple[float, ...], ref: str | None = None) -> Row:
    return Row(key, "condense", key, "10", 100, accs, tuple(range(len(accs))), "", ref, "the reference")


def test_showed_compares_with_the_spread():
    ref = _row("ref", (0.85, 0.86))  # 85.50 ± 0.50
    rows = {"ref": ref}
    # +5.50 points, spread max(1.00, 0.50) = 1.00
    assert showed(_row("a", (0.90, 0.92), "ref"), rows) == "+5.50 pts vs the reference: ahead"
    # -0.30 points, within a spread of 0.50
    assert showed(_row("b", (0.852, 0.852), "ref"), rows) == "-0.30 pts vs the reference: within the spread of the runs"
    assert showed(_row("c", (0.80, 0.80), "ref"), rows) == "-5.50 pts vs the reference: behind"
    assert showed(_row("d", (0.8,)), rows) == "the reference"
