"""The results page: one self-contained HTML5 file per table and scale.

What a reader sees, top to bottom: the title, the scale (with its ``about`` line) and where the
published numbers come from; where the numbers were made (runs, git revisions, torch, devices, in one
line; the full tally near the end); how to read a cell; then per dataset the grid (each
row with the protocol it ``follows``; each cell with ours as mean ± population std over the finished
runs, the number of runs, the paper's number and the difference in percentage points, the cell's
protocol and scale, and its provenance folded under ``<details>``: git revision, package versions,
device and engine path of its runs, the protocol, one line per run with seed, accuracy and time,
what the runs report beside the accuracy, and the merged config), the fairness scores where the
spec asks for them, the plot, the protocols and the runs finished; then the provenance tallied over
every record; the spec's notes last.

Self-contained: the plots are PNG ``data:`` URIs, the style and the one script are inline, no font,
stylesheet, script or image is fetched, so the file opens from disk offline. A Content-Security-Policy
``<meta>`` allows exactly that (``default-src 'none'``, images from ``data:`` only, the inline style
and script by their sha256), so even a string that escaped escaping could not load or run anything.
Every string from a spec or a record is escaped with :func:`html.escape` (``quote=True``).

The script sets ``data-images-loaded`` / ``data-images-total`` on ``<body>`` once the page has loaded
(images with ``complete && naturalWidth > 0``), so a headless browser can tell that the plots show.
The page holds no timestamp: the same records give the same bytes.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable, Iterable, Mapping
from html import escape
from typing import Any

from harness import __version__
from harness.bench.schema import TableSpec
from harness.bench.summary import (
    FAIRNESS_NOTE,
    CellSummary,
    by_dataset,
    fairness_scores,
    follows_by_row,
    grid,
    scale_note,
)
from harness.io import sha256_base64

__all__ = ["png_size", "render_html"]

_STYLE = """
:root { --fg: #1d2125; --muted: #5b636b; --line: #d5d9de; --bg-alt: #f5f7f9;
  --accent: #1f5fa8; --warn-bg: #fff4d6; --warn-line: #e0b84c; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1280px; padding: 1rem 1.5rem 3rem; color: var(--fg); background: #fff;
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
h1 { font-size: 1.45rem; margin: 0.4rem 0 0.3rem; }
h2 { font-size: 1.2rem; margin: 2rem 0 0.6rem; padding-bottom: 0.2rem; border-bottom: 2px solid var(--line); }
h3 { font-size: 1rem; margin: 1.2rem 0 0.4rem; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 0.85em; }
.sub { color: var(--muted); margin: 0 0 0.8rem; }
.scale { background: var(--warn-bg); border-left: 4px solid var(--warn-line); padding: 0.5rem 0.8rem;
  margin: 0.8rem 0; }
.scale.full { background: var(--bg-alt); border-left-color: var(--accent); }
.legend, .small { color: var(--muted); font-size: 0.85rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; }
table.grid { margin: 0.4rem 0 0.8rem; }
table.grid th, table.grid td { border: 1px solid var(--line); padding: 0.35rem 0.55rem; vertical-align: top; }
table.grid thead th { background: var(--bg-alt); text-align: center; white-space: nowrap; }
table.grid tbody th { text-align: left; font-weight: 600; min-width: 9rem; max-width: 19rem; }
table.grid tbody tr:nth-child(even) { background: #fbfcfd; }
caption { text-align: left; padding-bottom: 0.2rem; }
.follows-all { font-size: 0.9rem; }
.follows { font-weight: 400; color: var(--muted); font-size: 0.78rem; margin-top: 0.2rem; }
td.cell { min-width: 10.5rem; }
.ours { font-size: 1.05rem; font-weight: 600; white-space: nowrap; }
.ours .std { font-weight: 400; color: var(--muted); font-size: 0.9rem; }
.ours.pending { color: var(--muted); font-weight: 400; }
.paper { white-space: nowrap; font-size: 0.88rem; }
.diff { font-variant-numeric: tabular-nums; color: var(--muted); }
.meta { color: var(--muted); font-size: 0.76rem; }
details { margin-top: 0.25rem; font-size: 0.76rem; }
summary { cursor: pointer; color: var(--accent); }
.prov { max-width: 34rem; padding: 0.3rem 0 0.1rem; }
.prov table { margin: 0.3rem 0; }
.prov th, .prov td { border: 1px solid var(--line); padding: 0.1rem 0.4rem; text-align: left; }
.prov pre { white-space: pre-wrap; overflow-wrap: anywhere; background: var(--bg-alt); padding: 0.35rem;
  margin: 0.3rem 0; max-height: 18rem; overflow-y: auto; }
.prov dt { font-weight: 600; }
.prov dd { margin: 0 0 0.3rem 0.8rem; overflow-wrap: anywhere; }
table.plain th, table.plain td { border: 1px solid var(--line); padding: 0.2rem 0.5rem; text-align: left; }
table.plain th { background: var(--bg-alt); }
figure { margin: 0.8rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 0.8rem; }
ul.protocols li { margin-bottom: 0.2rem; }
footer { margin-top: 2.5rem; color: var(--muted); font-size: 0.8rem; border-top: 1px solid var(--line);
  padding-top: 0.5rem; }
""".strip()

_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images-loaded", String(ok));
  document.body.setAttribute("data-images-total", String(imgs.length));
});
""".strip()


def _sha256_source(text: str) -> str:
    return f"'sha256-{sha256_base64(text.encode())}'"


_CSP = (f"default-src 'none'; img-src data:; style-src {_sha256_source(_STYLE)}; "
        f"script-src {_sha256_source(_SCRIPT)}; base-uri 'none'; form-action 'none'")


def _e(x: object) -> str:
    """Escape any text for HTML content or a double-quoted attribute."""
    return escape(str(x), quote=True)


def png_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR chunk (None when ``data`` is no PNG)."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    w, h = struct.unpack(">II", data[16:24])
    return int(w), int(h)


def _signed(x: float) -> str:
    """``+1.23`` / ``−1.23`` (a true minus sign)."""
    return f"{x:+.2f}".replace("-", "\u2212")


def _tally(values: Iterable[str]) -> list[tuple[str, int]]:
    """Distinct values with their counts, in order of first appearance."""
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return list(out.items())


def _engine_text(engine: Mapping[str, Any] | None) -> str:
    """``requested → ran`` for path, precision and compile (older records hold only the requested values)."""
    if not engine:
        return "–"

    def pair(key: str, show: Callable[[Any], str]) -> str:
        asked, ran = engine.get(key), engine.get(f"{key}_run")
        if ran is None or ran == asked:
            return show(asked)
        return f"{show(asked)} → {show(ran)}"

    shown = ("path", "path_run", "precision", "precision_run", "compile", "compile_run", "precision_reason",
             "compile_reason")
    other = [f"{k} {_json(v)}" for k, v in sorted(engine.items()) if k not in shown]
    return ", ".join([pair("path", lambda v: str(v or "?")),
                      pair("precision", lambda v: str(v or "protocol's precision")),
                      "compile " + pair("compile", lambda v: v if isinstance(v, str) else ("on" if v else "off")),
                      *other])


def _versions_text(versions: Mapping[str, Any] | None) -> str:
    if not versions:
        return "–"
    return ", ".join(f"{k} {v}" for k, v in versions.items())


def _protocol_name(s: CellSummary) -> str:
    name = s.cell.config.get("protocol")
    if name:
        return str(name)
    return s.protocol_text.split(":", 1)[0] if s.protocol_text else "–"


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(", ", ": "), default=str)


def _keyed(obj: Mapping[str, Any]) -> str:
    """One line per top-level key (``key: compact JSON``), for a ``<pre>``."""
    return "\n".join(f"{k}: {_json(v)}" for k, v in sorted(obj.items()))


def _one_or_tally(values: Iterable[str]) -> str:
    t = _tally(values)
    return t[0][0] if len(t) == 1 else "; ".join(f"{v} ({n} runs)" for v, n in t)


def _runs_table(s: CellSummary) -> str:
    heads = ["run", "seed", "acc %", "seconds"]
    exps = any(r.get("experiment") is not None for r in s.records)
    if exps:
        heads.insert(1, "exp")
    rows = []
    for r in s.records:
        accs = " ".join(f"{100 * float(a):.2f}" for a in r.get("accuracies", []))
        secs = r.get("timings", {}).get("seconds")
        together = r.get("timings", {}).get("trained_together")
        t = "–" if secs is None else f"{float(secs):.1f}" + (f" (×{together})" if together and together > 1 else "")
        cells = [r.get("run", "?"), r.get("seed", "?"), accs, t]
        if exps:
            cells.insert(1, r.get("experiment"))
        rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    head = "<tr>" + "".join(f'<th scope="col">{_e(h)}</th>' for h in heads) + "</tr>"
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _provenance(s: CellSummary) -> str:
    """The folded provenance of one cell."""
    parts = ['<details><summary>provenance</summary><div class="prov">']
    items: list[tuple[str, str]] = [("cell", f"{s.cell.key} ({s.cell.role}, scale {s.cell.scale})")]
    if s.published is not None and s.published.source:
        items.append(("paper's number from", s.published.source))
    if s.records:
        recs = s.records
        items += [("git revision", _one_or_tally(str(r.get("git_revision") or "unknown") for r in recs)),
                  ("packages", _one_or_tally(_versions_text(r.get("versions")) for r in recs)),
                  ("device", _one_or_tally(str(r.get("device", "–")) for r in recs)),
                  ("engine path (requested → ran), precision, compile",
                   _one_or_tally(_engine_text(r.get("engine")) for r in recs))]
    items.append(("protocol", s.protocol_text or _protocol_name(s)))
    parts.append("<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items) + "</dl>")
    if s.records:
        parts.append(_runs_table(s))
        extra = [(r.get("run"), r.get("extra")) for r in s.records if r.get("extra")]
        if extra:
            text = "\n\n".join(f"run {run}\n{_keyed(x)}" if isinstance(x, Mapping) else f"run {run}: {_json(x)}"
                                for run, x in extra)
            parts.append(f"<div>what the runs report beside the accuracy</div><pre>{_e(text)}</pre>")
    else:
        parts.append("<p>No finished run yet.</p>")
    parts.append(f"<div>config (merged, scale applied)</div><pre>{_e(_keyed(s.cell.config))}</pre>")
    parts.append("</div></details>")
    return "".join(parts)


def _cell(s: CellSummary | None) -> str:
    if s is None:
        return '<td class="cell empty"></td>'
    out = ['<td class="cell">']
    if s.mean is None:
        out.append('<div class="ours pending">–</div>')
    else:
        out.append(f'<div class="ours">{100 * s.mean:.2f} <span class="std">± {100 * s.std:.2f}</span></div>')
    if s.published is not None:
        d = s.diff
        out.append(f'<div class="paper">paper <b>{_e(s.published.render())}</b>'
                   + (f' <span class="diff" title="ours − paper, percentage points">Δ {_e(_signed(d))}</span>'
                      if d is not None else "") + "</div>")
    runs = f"{s.n}/{s.expected_runs} run{'s' if s.expected_runs != 1 else ''}"
    out.append(f'<div class="meta">{_e(runs)} · {_e(_protocol_name(s))} · {_e(s.cell.scale)}</div>')
    out.append(_provenance(s))
    out.append("</td>")
    return "".join(out)


def _grid_table(group: list[CellSummary], caption: str) -> str:
    rows, cols, cells = grid(group)
    follows = follows_by_row(group)
    shared = set(follows.values())
    common = ""
    if len(shared) == 1 and len(follows) == len(rows):  # every row follows the same: say it once
        common = f'<p class="follows-all"><b>Every row follows:</b> {_e(shared.pop())}</p>'
        follows = {}
    head = '<tr><th scope="col">row</th>' + "".join(f'<th scope="col">{_e(c)}</th>' for c in cols) + "</tr>"
    body = []
    for r in rows:
        fol = follows.get(r, "")
        label = f'<div class="label">{_e(r)}</div>' + (f'<div class="follows">follows: {_e(fol)}</div>' if fol else "")
        body.append(f'<tr><th scope="row">{label}</th>' + "".join(_cell(cells.get((r, c))) for c in cols) + "</tr>")
    return (f'{common}<div class="scroll"><table class="grid"><caption class="small">{_e(caption)}</caption>'
            f"<thead>{head}</thead><tbody>{''.join(body)}</tbody></table></div>")


def _fairness(spec: TableSpec, group: list[CellSummary]) -> str:
    scores = fairness_scores(spec, group)
    if not scores:
        return ""
    rows = "".join(
        f"<tr><td>{_e(f.row)}</td><td>{_e(f.column)}</td><td>{_e(_signed_frac(f.ior))}</td>"
        f"<td>{'–' if f.hlr is None else _e(_signed_frac(f.hlr))}</td>"
        f"<td>{'–' if f.lrs is None else f'{f.lrs:.4f}'}</td></tr>" for f in scores)
    return (f"<h3>Fairness</h3><p class=\"small\">{_e(FAIRNESS_NOTE)}</p>"
            '<table class="plain"><thead><tr><th scope="col">row</th><th scope="col">column</th>'
            '<th scope="col">IOR</th><th scope="col">HLR</th><th scope="col">LRS</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>")


def _signed_frac(x: float) -> str:
    return f"{x:+.4f}".replace("-", "\u2212")


def _figure(spec: TableSpec, ds: str, scale: str, png: bytes | None) -> str:
    if not png:
        return ""
    size = png_size(png)
    dims = f' width="{size[0]}" height="{size[1]}"' if size else ""
    alt = (f"Plot: test accuracy (%) against {spec.x_label or 'x'} on {ds} at scale {scale}, one line per row; "
           "ours solid with std error bars, the paper's dashed with hollow markers")
    src = "data:image/png;base64," + base64.b64encode(png).decode()
    return (f'<figure><img src="{src}" alt="{_e(alt)}"{dims}>'
            f"<figcaption>Solid: ours (mean ± std over runs); dashed, hollow markers: the paper's numbers. "
            f"Scale {_e(scale)}.</figcaption></figure>")


def _provenance_summary(summaries: list[CellSummary]) -> tuple[str, str]:
    """A one-line summary for the header and the full tally (a table) for the end of the page."""
    recs = [r for s in summaries for r in s.records]
    if not recs:
        none = "No finished run yet."
        return f'<p class="small">{none}</p>', f"<p>{none}</p>"
    cells = sum(1 for s in summaries if s.records)
    revs = _tally(str(r.get("git_revision") or "unknown")[:10] for r in recs)
    torch = _tally(str((r.get("versions") or {}).get("torch", "?")) for r in recs)
    devices = _tally(str(r.get("device", "–")) for r in recs)
    short = (f"{len(recs)} runs in {cells} cells · git {', '.join(v for v, _ in revs)} · torch "
             f"{', '.join(v for v, _ in torch)} · {', '.join(v for v, _ in devices)}")
    seeds = sorted({int(r["seed"]) for r in recs if isinstance(r.get("seed"), int)})
    rows = [("git revision", _tally(str(r.get("git_revision") or "unknown") for r in recs)),
            ("packages", _tally(_versions_text(r.get("versions")) for r in recs)),
            ("device", _tally(str(r.get("device", "–")) for r in recs)),
            ("engine path (requested → ran), precision, compile", _tally(_engine_text(r.get("engine")) for r in recs)),
            ("record format", _tally(str(r.get("format", "–")) for r in recs))]
    body = "".join(
        f"<tr><th scope=\"row\">{_e(label)}</th><td>"
        + "<br>".join(f"{_e(v)} <span class=\"small\">({n} run{'s' if n != 1 else ''})</span>" for v, n in t)
        + "</td></tr>" for label, t in rows)
    body += f"<tr><th scope=\"row\">seeds</th><td>{_e(', '.join(map(str, seeds)) or '–')}</td></tr>"
    body += f"<tr><th scope=\"row\">records</th><td>{len(recs)} runs in {cells} cells</td></tr>"
    return (f'<p class="small">Made by: {_e(short)} (<a href="#provenance">details</a>).</p>',
            f'<table class="plain">{body}</table>')


def render_html(spec: TableSpec, summaries: list[CellSummary], scale: str,
                images: Mapping[str, bytes] | None = None) -> str:
    """The page (a ``str``) for ``summaries`` of ``spec`` at ``scale``; ``images``: dataset -> PNG bytes."""
    images = images or {}
    title = spec.title or spec.name
    note = scale_note(spec, scale)
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f'<meta http-equiv="Content-Security-Policy" content="{_e(_CSP)}">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_e(title)} [{_e(scale)}]</title>", f"<style>{_STYLE}</style>", "</head>", "<body>",
           "<header>", f"<h1>{_e(title)}</h1>",
           f'<p class="sub">table <code>{_e(spec.name)}</code> · spec <code>{_e(spec.path)}</code></p>',
           f'<p class="scale{" full" if scale == "full" else ""}"><strong>Scale: {_e(scale)}</strong>'
           + (f" — {_e(note)}" if note else "") + "</p>"]
    if spec.source:
        out.append(f"<p>Published numbers: {_e(spec.source.rstrip('.'))}. "
                   "<b>≈</b> marks values read off a figure.</p>")
    short, full = _provenance_summary(summaries)
    out += [short, '<p class="legend">Each cell: ours, the mean ± population std over the finished runs (test accuracy '
            "at the final epoch, %); the runs finished out of those planned; the paper's number and Δ = ours − "
            "paper in percentage points; the cell's protocol and scale. <i>provenance</i> unfolds the runs "
            "(seed, accuracy, time, device, engine path, git revision), the package versions, the protocol and "
            "the config.</p>", "</header>", "<main>"]
    groups = by_dataset(summaries)
    if len(groups) > 1:
        out.append("<nav><p>Datasets: " + " · ".join(
            f'<a href="#ds-{i}">{_e(ds)}</a>' for i, ds in enumerate(groups)) + "</p></nav>")
    for i, (ds, group) in enumerate(groups.items()):
        done = sum(s.n for s in group)
        total = sum(s.expected_runs for s in group)
        secs = sum(s.seconds for s in group)
        protos = sorted({s.protocol_text for s in group if s.protocol_text})
        out += [f'<section id="ds-{i}">', f"<h2>{_e(ds)}</h2>",
                _grid_table(group, f"{ds}, scale {scale}: ours (mean ± std over runs, %) beside the paper's"),
                _fairness(spec, group), _figure(spec, ds, scale, images.get(ds)),
                "<h3>Protocols</h3>", '<ul class="protocols">'
                + "".join(f"<li>{_e(p)}</li>" for p in protos or ["(no finished runs yet)"]) + "</ul>",
                f"<p>Runs finished: {done}/{total}; training time {secs:.0f} s in total.</p>", "</section>"]
    out += ['<section id="provenance">', "<h2>Where these numbers were made</h2>",
            '<p class="small">Tallied over every record of this page; each cell\'s <i>provenance</i> has its own runs.'
            "</p>", full, "</section>"]
    if spec.notes:
        out += ["<section>", "<h2>Notes</h2>", f"<p>{_e(spec.notes.strip())}</p>", "</section>"]
    out += ["</main>", f"<footer>Written by ddbench {_e(__version__)} from the result records of table "
            f"<code>{_e(spec.name)}</code>; the Markdown, CSV and LaTeX reports beside this page hold the same "
            "numbers. Self-contained: opens from disk, offline.</footer>",
            f"<script>{_SCRIPT}</script>", "</body>", "</html>", ""]
    return "\n".join(x for x in out if x)
