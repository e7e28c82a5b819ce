"""Cell kind ``evaluate``: train fresh models on a random real subset, the full split or a published set.

Sources (``source``):

- ``random_real``: ``ipc`` images per class drawn (:func:`harness.evaluate.random_per_class`) from the
  whole training split with the run's seed, or with ``upstream_seed`` for every run;
- ``full``: the training split (limited per class by the scale);
- ``published``: a published condensed set (``source_format``, ``source_path`` under the data root,
  ``source_options`` for its loader, ``experiment`` or ``experiments``), decoded, ZCA refitted where the
  set is whitened (:func:`condensed.prepare.prepare_for_eval`).

Grouping: runs train together (one ``evaluate`` call, when the engine can) when their trained set is the
same: every run of a ``full`` cell; the runs of one experiment of a ``published`` cell; the runs of a
``random_real`` cell with ``upstream_seed`` (without it each run draws its own subset, so runs are separate).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from harness.bench.kinds.base import (
    CellConfig,
    CellKind,
    KindResult,
    PublishedSource,
    Run,
    RunContext,
    Where,
    check_choice,
    check_int,
    evaluate_condensed,
    evaluate_runs,
    experiments_ok,
    groups,
    load_split,
    plain_where,
    register_cell_kind,
    test_split,
    train_test,
)
from harness.errors import ConfigError
from harness.evaluate import random_per_class
from harness.io import config_hash


@dataclass(frozen=True)
class EvaluateConfig(CellConfig):
    source: str = "random_real"
    ipc: int | None = None
    published: PublishedSource | None = None


Source = Callable[[EvaluateConfig, Sequence[Run], RunContext], Iterator[tuple[Run, KindResult]]]


def _random_real(cfg: EvaluateConfig, runs: Sequence[Run], ctx: RunContext) -> Iterator[tuple[Run, KindResult]]:
    test = test_split(cfg, ctx)
    full = load_split(cfg.dataset, "train", ctx)  # the subset is drawn from the whole split
    for seed, batch in groups(runs, cfg.upstream):
        idx = random_per_class(full.labels, int(cfg.ipc or 0), seed, full.num_classes)
        yield from evaluate_runs(full.subset(idx), test, cfg, ctx, batch,
                                 extra={"indices_sha": config_hash(idx.tolist()), "subset_seed": seed})


def _full(cfg: EvaluateConfig, runs: Sequence[Run], ctx: RunContext) -> Iterator[tuple[Run, KindResult]]:
    train, test = train_test(cfg, ctx)
    yield from evaluate_runs(train, test, cfg, ctx, runs)


def _published(cfg: EvaluateConfig, runs: Sequence[Run], ctx: RunContext) -> Iterator[tuple[Run, KindResult]]:
    assert cfg.published is not None
    for exp, batch in groups(runs, lambda r: cfg.published.experiment if r.experiment is None else r.experiment):
        cs = cfg.published.load(ctx, exp)
        extra = {"n_set": len(cs.labels), "ipc": int(torch.bincount(cs.labels).max()), "experiment": exp,
                 "set_checksum": cs.checksum()}
        yield from evaluate_condensed(cs, cfg, ctx, batch, extra)


SOURCES: dict[str, Source] = {"random_real": _random_real, "full": _full, "published": _published}


@register_cell_kind("evaluate")
class Evaluate(CellKind):
    config_cls = EvaluateConfig

    def config(self, cfg: Mapping[str, Any], where: Where = plain_where) -> EvaluateConfig:
        source = check_choice(cfg, "source", where, tuple(SOURCES), "random_real")
        experiments_ok(cfg, where, source)
        ipc = check_int(cfg, "ipc", where, required=source == "random_real")
        pub = PublishedSource.from_cell(cfg, where) if source == "published" else None
        return EvaluateConfig(**CellConfig.common(cfg, where), source=source, ipc=ipc, published=pub)

    def run(self, config: EvaluateConfig, runs: Sequence[Run], ctx: RunContext) -> Iterator[tuple[Run, KindResult]]:
        if config.source not in SOURCES:
            raise ConfigError(f"evaluate: unknown source {config.source!r}")
        yield from SOURCES[config.source](config, runs, ctx)
