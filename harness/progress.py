"""One progress display for every long step: condensation iterations, training epochs, each run of an
evaluation, score computation, the phases of shrink and coreset.

Library functions take ``progress: Progress | None`` and report **phases**::

    with progress.phase("train", total=epochs, unit="epoch", run=(k, runs)) as ph:
        for epoch in ...:
            ...
            ph.update(1, loss=0.31)
    progress.note("resumed dynamics from epoch 12 (checkpoint.pt)")

Three displays share that interface (:func:`create_progress` picks one):

- ``bar``: a tqdm bar per phase on stderr (phase, run k of K, done/total, rate and ETA), for a terminal;
- ``lines``: one line per *finished* phase (and every note) on stderr, for logs and pipes;
- ``quiet``: nothing (``--quiet``).

``auto`` is ``bar`` when stderr is a terminal, else ``lines``. Output never goes to stdout, so a command's
printed results stay clean when piped. The display reads the clock for rates and ETAs only; no result
depends on it.
"""

from __future__ import annotations

import sys
import time
from contextlib import AbstractContextManager
from typing import IO, Any

from tqdm.auto import tqdm

from harness.errors import ConfigError

MODES = ("auto", "bar", "lines", "quiet")


class Phase(AbstractContextManager):
    """A running phase; :meth:`update` advances it, leaving the ``with`` block finishes it."""

    def __init__(self, name: str, total: int | None, unit: str, run: tuple[int, int] | None) -> None:
        self.name, self.total, self.unit, self.run = name, total, unit, run
        self.done = 0
        self.postfix: dict[str, Any] = {}

    @property
    def label(self) -> str:
        return self.name + (f" (run {self.run[0] + 1}/{self.run[1]})" if self.run and self.run[1] > 1 else "")

    def update(self, n: int = 1, **postfix: Any) -> None:
        self.done += n
        self.postfix.update(postfix)

    def set(self, done: int, **postfix: Any) -> None:
        """Jump to ``done`` (e.g. a resumed run starts at its checkpoint's epoch)."""
        self.update(done - self.done, **postfix)

    def __exit__(self, *exc: object) -> None:
        return None


class Progress:
    """The quiet display, and the interface of the others."""

    mode = "quiet"

    def phase(self, name: str, total: int | None = None, unit: str = "it", *,
              run: tuple[int, int] | None = None) -> Phase:
        return Phase(name, total, unit, run)

    def note(self, message: str) -> None:
        """A one-off message (what a resumed run resumed from, a fallback that was taken)."""


def _fmt_postfix(postfix: dict[str, Any]) -> str:
    out = []
    for k, v in postfix.items():
        out.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return ", ".join(out)


class _LinePhase(Phase):
    def __init__(self, owner: LineProgress, *args: Any) -> None:
        super().__init__(*args)
        self.owner, self.start = owner, time.perf_counter()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:
            return None
        took = time.perf_counter() - self.start
        size = f"{self.done}/{self.total} {self.unit}" if self.total is not None else f"{self.done} {self.unit}"
        extra = _fmt_postfix(self.postfix)
        self.owner.write(f"{self.label}: done, {size} in {took:.1f} s" + (f" ({extra})" if extra else ""))
        return None


class LineProgress(Progress):
    """One line per finished phase and per note (for logs and pipes)."""

    mode = "lines"

    def __init__(self, stream: IO[str] | None = None, prefix: str = "") -> None:
        self.stream, self.prefix = stream, prefix

    def write(self, line: str) -> None:
        s = self.stream or sys.stderr
        print(f"{self.prefix}{line}", file=s, flush=True)

    def phase(self, name: str, total: int | None = None, unit: str = "it", *,
              run: tuple[int, int] | None = None) -> Phase:
        return _LinePhase(self, name, total, unit, run)

    def note(self, message: str) -> None:
        self.write(message)


class _BarPhase(Phase):
    def __init__(self, owner: BarProgress, *args: Any) -> None:
        super().__init__(*args)
        self.bar = tqdm(total=self.total, desc=self.label, unit=self.unit, file=owner.stream or sys.stderr,
                        leave=True, dynamic_ncols=True, mininterval=0.5)

    def update(self, n: int = 1, **postfix: Any) -> None:
        super().update(n, **postfix)
        if postfix:
            self.bar.set_postfix_str(_fmt_postfix(self.postfix), refresh=False)
        self.bar.update(n)

    def __exit__(self, *exc: object) -> None:
        self.bar.close()
        return None


class BarProgress(Progress):
    """A tqdm bar per phase (for a terminal)."""

    mode = "bar"

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream

    def phase(self, name: str, total: int | None = None, unit: str = "it", *,
              run: tuple[int, int] | None = None) -> Phase:
        return _BarPhase(self, name, total, unit, run)

    def note(self, message: str) -> None:
        tqdm.write(message, file=self.stream or sys.stderr)


def create_progress(mode: str = "auto", stream: IO[str] | None = None) -> Progress:
    """The display for ``mode`` (:data:`MODES`); ``auto``: a bar on a terminal, else one line per phase."""
    if mode not in MODES:
        raise ConfigError(f"progress mode {mode!r}, expected one of {', '.join(MODES)}")
    s = stream or sys.stderr
    if mode == "auto":
        mode = "bar" if getattr(s, "isatty", lambda: False)() else "lines"
    return {"bar": BarProgress, "lines": LineProgress}.get(mode, lambda _s=None: Progress())(stream)


QUIET = Progress()


class _OnePhaseAtATime(AbstractContextManager):
    """A callback adapter holding at most one open phase; leaving the ``with`` block (or :meth:`close`)
    finishes it (a run cut short ends there)."""

    _phase: Phase | None = None

    def close(self) -> None:
        if self._phase is not None:
            self._phase.__exit__(None, None, None)
            self._phase = None

    def __exit__(self, *exc: object) -> None:
        self.close()
        return None


class EpochPhases(_OnePhaseAtATime):
    """The library's epoch callbacks as phases: ``cb(run, epoch, epochs)`` (:func:`harness.evaluate.evaluate`;
    run -1 = the K runs trained together) and ``cb.epochs(epoch, epochs)`` (:func:`harness.dynamics.record_dynamics`,
    a trainer's ``progress``). One phase per run, finished at its last epoch or when the ``with`` block ends (a
    run cut short). A run whose first report is past epoch 1 resumed from a checkpoint, and says so."""

    def __init__(self, progress: Progress | None, name: str, runs: int = 1) -> None:
        self.progress, self.name, self.runs = or_quiet(progress), name, int(runs)
        self._run: int | None = None
        self._phase: Phase | None = None

    def __call__(self, run: int, epoch: int, total: int) -> None:
        if self._phase is None or run != self._run:
            self.close()
            self._run = run
            label = self.name if run >= 0 else f"{self.name} ({self.runs} runs together)"
            self._phase = self.progress.phase(label, total, "epoch", run=(run, self.runs) if run >= 0 else None)
            self._phase.__enter__()
            if epoch > 1:
                self.progress.note(f"{self._phase.label}: resumed after epoch {epoch - 1} of {total} (checkpoint)")
                self._phase.set(epoch - 1)
        self._phase.set(epoch)
        if epoch >= total:
            self.close()

    def epochs(self, epoch: int, total: int) -> None:
        self(0 if self._run is None else self._run, epoch, total)

    def next_run(self, run: int) -> EpochPhases:
        """Start counting run ``run`` (for callers that train the runs one call each)."""
        self.close()
        self._run = run
        return self



class IterationPhases(_OnePhaseAtATime):
    """A step callback ``cb(done, total, info)`` (:meth:`adapters.condense.base.Condenser.condense`'s ``progress``)
    as one phase: ``done`` of ``total`` iterations, the latest ``loss`` and ``val_acc`` of ``info`` beside it.
    A run whose first report is past iteration 1 resumed from a checkpoint, and says so. The phase finishes at
    its last iteration or when the ``with`` block ends."""

    def __init__(self, progress: Progress | None, name: str, unit: str = "iteration") -> None:
        self.progress, self.name, self.unit = or_quiet(progress), name, unit
        self._phase: Phase | None = None

    def __call__(self, done: int, total: int, info: dict[str, Any]) -> None:
        postfix = {k: info[k] for k in ("loss", "val_acc") if k in info}
        if self._phase is None:
            self._phase = self.progress.phase(self.name, total, self.unit)
            self._phase.__enter__()
            if done > 1:
                self.progress.note(f"{self.name}: resumed after {self.unit} {done - 1} of {total} (checkpoint)")
                self._phase.set(done - 1)
        self._phase.set(done, **postfix)
        if done >= total:
            self.close()



def or_quiet(progress: Progress | None) -> Progress:
    return QUIET if progress is None else progress
