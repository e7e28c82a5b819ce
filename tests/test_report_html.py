"""The HTML results page: numbers, escaping, self-containedness, and what a person sees in Chromium.

A tiny table (one evaluate row on the embedded ``digits`` data, two IPC columns, two runs, one epoch)
is run for real once per module; its spec puts markup into the title, a row label, the ``follows`` text,
the source and the notes. Every expectation about numbers is recomputed here from the raw record files.
The browser tests render the page in headless Chromium (skipped where it is not installed).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from harness.bench.cells import expand
from harness.bench.htmlpage import png_size
from harness.bench.report import write_reports
from harness.bench.runner import RunOptions, run_table
from harness.bench.spec import parse_spec
from harness.bench.store import ResultStore
from harness.cli import main as cli_main

PWN = "document.body.setAttribute('data-pwned','{}')"
TITLE = f"digits <script>{PWN.format(1)}</script> & co"
ROW = f"random <img src=x onerror=\"{PWN.format(2)}\">"
FOLLOWS = 'VICO "DC" <i>utils.py</i> & evaluate_synset'
NOTES = f"a note </p><script>{PWN.format(3)}</script> ends"
SPEC = {
    "name": "htmlpage",
    "title": TITLE,
    "source": "test §0 <b>not bold</b>",
    "x_label": "IPC",
    "defaults": {"dataset": "digits", "protocol": "vico-dc",
                 "protocol_overrides": {"epochs": 1, "batch_size": 64, "test_batch": 500},
                 "model": "convnet_w32", "kind": "evaluate", "source": "random_real", "runs": 2},
    "rows": [{"label": ROW, "follows": FOLLOWS, "published": {"IPC 1": 30.0, "IPC 2": "~40"}}],
    "columns": [{"ipc": 1}, {"ipc": 2}],
    "notes": NOTES,
}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: Node | None) -> None:
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def find_all(self, tag: str, **attrs: str) -> list[Node]:
        out = []
        for c in self.children:
            if isinstance(c, Node):
                if c.tag == tag and all(attrs[k] in (c.attrs.get(k.rstrip("_")) or "").split() for k in attrs):
                    out.append(c)
                out += c.find_all(tag, **attrs)
        return out


class Tree(HTMLParser):
    """A strict little DOM: a mismatched or unclosed tag is an error (our page must be well formed)."""

    def __init__(self, strict: bool = True) -> None:
        super().__init__(convert_charrefs=True)
        self.root = self.cur = Node("#document", {}, None)
        self.strict, self.doctype = strict, None

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, dict(attrs), self.cur))

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if self.strict:
            assert self.cur.tag == tag, f"</{tag}> closes <{self.cur.tag}>"
        while self.cur.tag != tag and self.cur.parent is not None:
            self.cur = self.cur.parent
        self.cur = self.cur.parent or self.root

    def handle_data(self, data):
        self.cur.children.append(data)


def parse(html: str, strict: bool = True) -> Tree:
    t = Tree(strict)
    t.feed(html)
    t.close()
    if strict:
        assert t.cur is t.root, f"<{t.cur.tag}> never closed"
    return t


def squash(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip()


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """The tiny table, run for real (2 cells x 2 runs, 1 epoch on digits), and its reports with the page."""
    tmp = tmp_path_factory.mktemp("html")
    spec_path = tmp / "htmlpage.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC, allow_unicode=True, sort_keys=False))
    spec = parse_spec(spec_path.read_text(), str(spec_path))
    results = tmp / "res"
    outs = run_table(spec, RunOptions(str(results)), progress=False)
    assert [o.status for o in outs] == ["done"] * 4
    paths = write_reports(spec, results, tmp / "out", "full", html=True)
    return spec, spec_path, results, paths


def kids(node: Node, tag: str) -> list[Node]:
    return [c for c in node.children if isinstance(c, Node) and c.tag == tag]


def cell_of(tree: Tree, row: str, col: str) -> Node:
    grid = tree.root.find_all("table", class_="grid")[0]
    cols = [squash(th.text()) for th in grid.find_all("thead")[0].find_all("th")]
    for tr in kids(grid.find_all("tbody")[0], "tr"):  # the grid's rows, not those of the provenance tables
        if kids(tr, "th")[0].find_all("div", class_="label")[0].text() == row:
            return kids(tr, "td")[cols.index(col) - 1]
    raise AssertionError(f"row {row!r} not in the page")


def test_page_numbers_are_the_records(table):
    spec, _, results, paths = table
    html = paths["html"].read_text()
    tree = parse(html)
    assert tree.doctype == "DOCTYPE html" and tree.root.find_all("html")[0].attrs["lang"] == "en"
    recs = [json.loads(p.read_text()) for p in sorted((results / "records").rglob("*.json"))]
    assert len(recs) == 4
    for col, published in (("IPC 1", "30.00"), ("IPC 2", "≈40.00")):
        accs = [100 * r["accuracies"][0] for r in sorted(recs, key=lambda r: r["run"]) if r["column"] == col]
        mean = sum(accs) / 2
        std = math.sqrt(sum((a - mean) ** 2 for a in accs) / 2)  # population std over the two runs
        diff = mean - float(published.lstrip("≈"))
        cell = cell_of(tree, ROW, col)
        ours = squash(cell.find_all("div", class_="ours")[0].text())
        assert ours == f"{mean:.2f} ± {std:.2f}"
        paper = squash(cell.find_all("div", class_="paper")[0].text())
        assert paper == f"paper {published} Δ {diff:+.2f}".replace("-", "\u2212")
        assert squash(cell.find_all("div", class_="meta")[0].text()) == "2/2 runs · vico-dc · full"
        prov = cell.find_all("details")[0]
        rows = prov.find_all("tbody")[0].find_all("tr")
        for tr, rec in zip(rows, sorted((r for r in recs if r["column"] == col), key=lambda r: r["run"]), strict=True):
            tds = [squash(td.text()) for td in tr.find_all("td")]
            assert tds[:3] == [str(rec["run"]), str(rec["seed"]), f"{100 * rec['accuracies'][0]:.2f}"]
            assert tds[3] == f"{rec['timings']['seconds']:.1f}" + ("" if rec["timings"]["trained_together"] == 1
                                                                   else f" (×{rec['timings']['trained_together']})")
        dl = prov.find_all("dl")[0]
        facts = dict(zip([squash(d.text()) for d in dl.find_all("dt")], [squash(d.text()) for d in dl.find_all("dd")],
                         strict=True))
        assert facts["git revision"] == str(rec["git_revision"] or "unknown")
        assert facts["device"] == "cpu" and f"torch {rec['versions']['torch']}" in facts["packages"]
        assert facts["engine path (requested → ran), precision, compile"].startswith(rec["engine"]["path"])
        assert facts["protocol"] == rec["protocol_text"]
    # the row says whose protocol it follows; the scale is printed
    assert FOLLOWS in squash(tree.root.find_all("p", class_="follows-all")[0].text())
    assert "Scale: full" in squash(tree.root.find_all("p", class_="scale")[0].text())


def test_page_is_self_contained_and_escaped(table):
    spec, _, _, paths = table
    html = paths["html"].read_text()
    tree = parse(html)
    # every string from the spec shows as text, none as markup
    for s in (TITLE, ROW, FOLLOWS, NOTES, "<b>not bold</b>"):
        assert s not in html
    assert squash(tree.root.find_all("h1")[0].text()) == TITLE
    assert squash(tree.root.find_all("title")[0].text()) == f"{TITLE} [full]"
    assert "data-pwned" not in tree.root.find_all("body")[0].attrs
    scripts = tree.root.find_all("script")
    assert len(scripts) == 1 and "data-pwned" not in scripts[0].text() and "src" not in scripts[0].attrs
    assert all(b.text() != "not bold" for b in tree.root.find_all("b"))
    # nothing fetched: one image, a data URI holding exactly the PNG written beside the page
    assert not tree.root.find_all("link") and "url(" not in html and "@import" not in html
    imgs = tree.root.find_all("img")
    assert len(imgs) == 1
    src = imgs[0].attrs["src"]
    assert src.startswith("data:image/png;base64,")
    png = base64.b64decode(src.split(",", 1)[1])
    assert png == paths["digits.png"].read_bytes()
    assert (imgs[0].attrs["width"], imgs[0].attrs["height"]) == tuple(map(str, png_size(png)))
    for n in tree.root.find_all("a"):
        assert n.attrs["href"].startswith("#")
    # the Content-Security-Policy lets exactly the inline style and script run (by their sha256)
    csp = [m.attrs["content"] for m in tree.root.find_all("meta") if m.attrs.get("http-equiv")][0]
    for tag in ("style", "script"):
        body = tree.root.find_all(tag)[0].text()
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"{tag}-src 'sha256-{digest}'" in csp
    assert csp.startswith("default-src 'none'; img-src data:;")


def test_cli_html_flag_writes_the_same_page(table, tmp_path, capsys):
    spec, spec_path, results, paths = table
    assert cli_main(["table", "report", str(spec_path), "--results", str(results), "--out", str(tmp_path)]) == 0
    assert not list(tmp_path.glob("*.html"))  # only on request
    assert cli_main(["table", "report", str(spec_path), "--results", str(results), "--out", str(tmp_path),
                     "--html"]) == 0
    page = tmp_path / "htmlpage-full.html"
    assert f"wrote {page}" in capsys.readouterr().out
    assert page.read_bytes() == paths["html"].read_bytes()  # same records, same bytes: no clock in the page


def _fake(spec, results, accs: dict[str, list[float]]) -> None:
    store = ResultStore(results)
    for cell in expand(spec, "full"):
        for u, a in zip(cell.units(), accs.get(cell.row, []), strict=False):
            store.write(spec.name, cell.key, u.key, {"cell": cell.key, "run": u.run, "seed": u.seed, "accuracies": [a],
                                                    "protocol_text": "vico-dc: test", "timings": {"seconds": 1.0}})


def test_fairness_partial_and_pending_cells(tmp_path):
    doc = {**SPEC, "title": "fair", "fairness": True, "full_accuracy": {"digits": 80.0},
           "rows": [{"label": "set", "kind": "condense", "method": "dc", "published": {"IPC 1": 30.0}}],
           "columns": [{"ipc": 1}]}  # fairness siblings come with condensed sets; the records are made up here
    spec = parse_spec(yaml.safe_dump(doc), str(tmp_path / "fair.yaml"))
    assert sorted(c.row for c in expand(spec, "full")) == ["random real (IPC 1)", "set", "set [hard label]"]
    # main cell: both runs; random real: one of two; hard label: none yet
    _fake(spec, tmp_path / "res", {"set": [0.5, 0.5], "random real (IPC 1)": [0.3]})
    page = write_reports(spec, tmp_path / "res", tmp_path / "out", "full", plots=False, html=True)["html"]
    tree = parse(page.read_text())
    assert not tree.root.find_all("img")
    assert squash(cell_of(tree, "random real (IPC 1)", "IPC 1").find_all("div", class_="meta")[0].text()) \
        == "1/2 runs · vico-dc · full"
    pending = cell_of(tree, "set [hard label]", "IPC 1")
    assert squash(pending.find_all("div", class_="ours")[0].text()) == "–"
    assert "No finished run yet." in pending.text()
    assert not tree.root.find_all("h3") or "Fairness" not in [h.text() for h in tree.root.find_all("h3")]
    # with the hard-label runs in, the fairness table appears with hand-computed scores
    _fake(spec, tmp_path / "res2", {"set": [0.5, 0.5], "random real (IPC 1)": [0.3, 0.3],
                                    "set [hard label]": [0.4, 0.4]})
    tree = parse(write_reports(spec, tmp_path / "res2", tmp_path / "out2", "full", plots=False, html=True)["html"]
                 .read_text())
    fair = [t for t in tree.root.find_all("table", class_="plain") if "IOR" in t.text()][0]
    ior, hlr = 0.5 - 0.3, 0.8 - 0.4
    score = (math.exp(0.5 * ior - 0.5 * hlr) - math.exp(-1)) / (math.exp(1) - math.exp(-1))
    assert [squash(td.text()) for td in fair.find_all("tbody")[0].find_all("td")] == \
        ["set", "IPC 1", "+0.2000", "+0.4000", f"{score:.4f}"]


# --- in a real browser ------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install "
                                                             "chromium; .ci/run installs it)")


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
           "--run-all-compositor-stages-before-draw", f"--user-data-dir={tmp / 'profile'}",
           "--virtual-time-budget=5000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp)


@needs_chromium
def test_chromium_shows_the_rows_and_the_plot(table, tmp_path):
    _, _, _, paths = table
    proc = chromium(tmp_path, "--dump-dom", paths["html"].resolve().as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = parse(proc.stdout, strict=False)
    body = dom.root.find_all("body")[0]
    # the inline script ran (so the CSP let it) and found the one plot decoded with a real width
    assert body.attrs.get("data-images-total") == "1"
    assert body.attrs.get("data-images-loaded") == "1"
    assert "data-pwned" not in body.attrs  # no string from the spec ran as script
    assert len(dom.root.find_all("img")) == 1 and len(dom.root.find_all("script")) == 1
    # the grid as rendered: the row (as text, markup and all), both columns, the numbers
    assert [squash(th.text()) for th in dom.root.find_all("thead")[0].find_all("th")] == ["row", "IPC 1", "IPC 2"]
    labels = [squash(d.text()) for d in dom.root.find_all("div", class_="label")]
    assert labels == [ROW]
    assert squash(dom.root.find_all("h1")[0].text()) == TITLE
    assert re.fullmatch(r"\d+\.\d\d ± \d+\.\d\d", squash(cell_of(dom, ROW, "IPC 2")
                                                           .find_all("div", class_="ours")[0].text()))


@needs_chromium
def test_chromium_screenshot_is_a_page(table, tmp_path):
    from PIL import Image

    _, _, _, paths = table
    shot = tmp_path / "page.png"
    proc = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1600", paths["html"].resolve().as_uri())
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    with Image.open(io.BytesIO(shot.read_bytes())) as im:
        assert im.format == "PNG" and im.size == (1280, 1600)
        gray = im.convert("L")
        hist = gray.histogram()
    dark = sum(hist[:128]) / sum(hist)  # text, borders and the plot's lines
    assert 0.005 < dark < 0.5, dark  # neither blank nor a black/failed render
    assert sum(1 for h in hist if h) > 32  # antialiased text and the plot: many grey levels
