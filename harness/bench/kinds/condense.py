"""Cell kind ``condense`` (flow 2): (GoldFromOres pre-pruning) -> Condenser -> evaluate.

``method`` (a condenser of :mod:`adapters.condense`) condenses the cell's training split (limited per class
by the scale) to ``ipc`` images per class with ``params`` (its config's fields; ``pre_prune_params`` goes
to the criterion). With ``drop_criterion`` and ``drop_ratio > 0`` the real data is first pruned per class
(:class:`adapters.condense.PrePrune`); ``drop_scores: authors`` uses the authors' released scores (under
``<data root>/goldfromores``), ``drop_scores: <path>`` a .json/.npy file index-aligned with our order
(relative: under the data root); without it the criterion is computed.

Seeds and grouping: the condensation (and the pre-pruning) use the run's seed, so without ``upstream_seed``
each run condenses its own set and is evaluated on its own. With ``upstream_seed`` every run evaluates the
one set condensed from that seed, and those runs train together when the engine can. Condensed sets are
artifacts keyed by what decides the images (dataset, method, IPC, seed, params, pre-pruning): made once
(under a lock other runners wait on) and reused by every cell and run that needs them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import adapters.condense as condense_api
from adapters.condense import PrePrune, list_condensers
from condensed import CondensedSet
from condensed.set import load_condensed, save_condensed
from harness.bench.kinds.base import (
    CellConfig,
    CellKind,
    KindResult,
    Run,
    RunContext,
    Where,
    check_int,
    check_mapping,
    evaluate_condensed,
    experiments_ok,
    groups,
    plain_where,
    register_cell_kind,
    scaled_dataset,
)
from harness.data import load_dataset
from harness.errors import ConfigError
from harness.locks import describe_owner, hold
from harness.progress import IterationPhases
from harness.registry import UnknownNameError
from harness.validate import check_values


def condenser_names() -> set[str]:
    """Condenser names (``dc``, ``dsa``, ``dm``, ``idc``), in any case."""
    names = set(list_condensers())
    return names | {n.upper() for n in names}


def check_condenser(cfg: Mapping[str, Any], where: Where, method_key: str = "method") -> tuple[str, dict[str, Any]]:
    """``(method, params)`` of a cell that condenses: the method registered, ``params`` valid for its config."""
    method = cfg.get(method_key)
    if not isinstance(method, str):
        raise ConfigError(f"{where(method_key)}: this cell condenses and needs a '{method_key}' "
                          f"({', '.join(list_condensers())})")
    try:
        cond = condense_api.create_condenser(method.lower())
    except UnknownNameError as e:
        raise ConfigError(f"{where(method_key)}: {e}") from None
    params = {k: v for k, v in check_mapping(cfg, "params", where).items() if k != "pre_prune_params"}
    params = check_values(cond.config_cls, params, f"{where('params')}: params")
    try:
        cond.default_config(**params)
    except ConfigError as e:
        raise ConfigError(f"{where('params')}: params: {e}") from None
    return method, params


@dataclass(frozen=True)
class CondenseConfig(CellConfig):
    method: str = ""
    ipc: int = 1
    params: dict[str, Any] = field(default_factory=dict)
    drop_criterion: str | None = None
    drop_ratio: float = 0.0
    drop_scores: str | None = None
    pre_prune_params: dict[str, Any] = field(default_factory=dict)

    def pre_prune(self, seed: int, ctx: RunContext | None = None) -> PrePrune | None:
        """The GoldFromOres pre-pruning of a run condensed from ``seed`` (None: condense all the data)."""
        if not self.drop_criterion or self.drop_ratio <= 0:
            return None
        scores = self.drop_scores
        if scores not in (None, "authors") and ctx is not None:
            scores = str(ctx.path(scores))
        root = None if ctx is None or scores != "authors" else str(ctx.path("."))
        return PrePrune(self.drop_criterion, drop_ratio=self.drop_ratio, seed=seed, params=self.pre_prune_params,
                        scores=scores, data_root=root)


def condensed_set(cfg: CellConfig, ctx: RunContext, method: str, ipc: int, params: Mapping[str, Any], seed: int,
                  pre_prune: PrePrune | None = None) -> CondensedSet:
    """Condense (or reuse the cached artifact keyed by the settings that decide the images)."""
    ds = scaled_dataset(cfg, ctx)
    key = {"dataset": ds, "method": method, "ipc": ipc, "seed": seed, "params": dict(params),
           "pre_prune": None if pre_prune is None else pre_prune.as_dict(),
           "engine": ctx.options.as_dict()}  # a set condensed in bf16 is not the --exact one: never reused for it
    art = ctx.artifact("condensed", key)
    final = art / "set"
    if (final / "meta.json").is_file():  # sets appear atomically: a meta.json means a finished set
        ctx.say(f"reusing condensed set {final}")
        return load_condensed(final)

    def waiting(owner: dict | None) -> None:
        ctx.say(f"waiting for {describe_owner(owner)}, which is condensing {art}")

    with hold(art / ".lock", on_wait=waiting):  # one process condenses; the others wait and reuse its set
        if (final / "meta.json").is_file():
            ctx.say(f"reusing condensed set {final} (made while we waited)")
            return load_condensed(final)
        real = load_dataset(ds, "train", data_root=ctx.data_root, cache_dir=ctx.cache_dir)
        cond = condense_api.create_condenser(method.lower())
        config = cond.default_config(**params)
        ctx.say(f"condensing {ds} ipc {ipc} with {method} {dict(params)} pre_prune={pre_prune}")
        with IterationPhases(ctx.progress, f"condense {method}") as progress:
            cs = cond.condense(real, ipc, config, pre_prune=pre_prune, seed=seed, device=ctx.device,
                               score_cache=str(art / "scores"), progress=progress, engine=ctx.options)
        save_condensed(cs, final, overwrite=False)
    return load_condensed(final)


@register_cell_kind("condense")
class Condense(CellKind):
    config_cls = CondenseConfig

    def config(self, cfg: Mapping[str, Any], where: Where = plain_where) -> CondenseConfig:
        common = CellConfig.common(cfg, where)
        experiments_ok(cfg, where, "condense")
        method, params = check_condenser(cfg, where)
        pp = check_mapping(check_mapping(cfg, "params", where), "pre_prune_params", lambda k: where("params"))
        scores = cfg.get("drop_scores")
        if scores is not None and (not isinstance(scores, str) or not scores):
            raise ConfigError(f"{where('drop_scores')}: drop_scores must be 'authors' or a .json/.npy path, "
                              f"got {scores!r}")
        if scores is not None and not cfg.get("drop_criterion"):
            raise ConfigError(f"{where('drop_scores')}: drop_scores needs a drop_criterion (whose scores they are)")
        if scores == "authors" and (common["train_per_class"] or common["test_per_class"]):
            raise ConfigError(f"{where('drop_scores')}: the authors' scores cover the whole training split; this "
                              "scale limits it (train_per_class/test_per_class)")
        out = CondenseConfig(**common, method=method, ipc=check_int(cfg, "ipc", where, required=True), params=params,
                             drop_criterion=cfg.get("drop_criterion"), drop_ratio=float(cfg.get("drop_ratio", 0.0)),
                             drop_scores=scores, pre_prune_params=pp)
        try:
            out.pre_prune(0)
        except (UnknownNameError, ConfigError) as e:
            key = "drop_scores" if scores is not None else "params" if pp else "drop_criterion"
            raise ConfigError(f"{where(key)}: {e}") from None
        return out

    def run(self, config: CondenseConfig, runs: Sequence[Run], ctx: RunContext) -> Iterator[tuple[Run, KindResult]]:
        for seed, batch in groups(runs, config.upstream):
            cs = condensed_set(config, ctx, config.method, config.ipc, config.params, seed,
                               config.pre_prune(seed, ctx))
            extra = {"condensed_checksum": cs.checksum(), "method": cs.method, "condense_seed": seed,
                     "pre_prune": cs.provenance.get("pre_prune_result")}
            yield from evaluate_condensed(cs, config, ctx, batch, extra)
