"""Cell kind ``shrink`` (flow 3, YOCO): condensed source at ``source_ipc`` -> ``shrink(rule=recipe)`` to
``ipc`` -> evaluate.

The source (``source``): ``condense`` (default) condenses the cell's training split with ``method``
(default ``idc``) and ``params``, seed 0, once for every run and rule (a cached artifact, as in the
condense kind); ``published`` loads ``source_path`` (``source_format``, ``source_options``, ``experiment``
or ``experiments``). The dynamics of the shrink run under ``dynamics_protocol`` (default: ``protocol``),
cut to ``dynamics_epochs``; the smaller set is evaluated under ``protocol`` with ``protocol_overrides``.

Seeds and grouping: the shrink (its dynamics run and the selection) uses the run's seed, so without
``upstream_seed`` each run shrinks its own set and is evaluated alone. With ``upstream_seed`` the runs of one
source experiment share one shrunk set and train together when the engine can.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from condensed import CondensedSet
from condensed.shrink import resolve_rule, shrink
from harness.bench.kinds.base import (
    CellConfig,
    CellKind,
    KindResult,
    PublishedSource,
    Run,
    RunContext,
    Where,
    check_choice,
    check_dynamics_protocol,
    check_int,
    evaluate_condensed,
    experiments_ok,
    groups,
    plain_where,
    register_cell_kind,
)
from harness.bench.kinds.condense import check_condenser, condensed_set
from harness.errors import ConfigError
from harness.registry import UnknownNameError

SOURCES = ("condense", "published")
SOURCE_SEED = 0  # the seed of a source set this kind condenses (one set shared by every run and rule)


@dataclass(frozen=True)
class ShrinkConfig(CellConfig):
    recipe: str = "yoco"
    ipc: int = 1
    source: str = "condense"
    source_ipc: int | None = None
    method: str = "idc"
    params: dict[str, Any] = field(default_factory=dict)
    published: PublishedSource | None = None
    dynamics_protocol: str = ""
    dynamics_epochs: int | None = None


@register_cell_kind("shrink")
class Shrink(CellKind):
    config_cls = ShrinkConfig

    def config(self, cfg: Mapping[str, Any], where: Where = plain_where) -> ShrinkConfig:
        common = CellConfig.common(cfg, where)
        source = check_choice(cfg, "source", where, SOURCES, "condense")
        experiments_ok(cfg, where, source)
        recipe = cfg.get("recipe", "yoco")
        try:
            resolve_rule(recipe)
        except (UnknownNameError, ConfigError) as e:
            raise ConfigError(f"{where('recipe')}: {e}") from None
        dyn = check_dynamics_protocol(cfg, where)
        method, params, pub = str(cfg.get("method", "idc")), {}, None
        if source == "condense":
            method, params = check_condenser({**cfg, "method": method}, where)
        else:
            pub = PublishedSource.from_cell(cfg, where)
        ipc = check_int(cfg, "ipc", where, required=True)
        src_ipc = check_int(cfg, "source_ipc", where, required=source == "condense")
        if src_ipc is not None and ipc > src_ipc:
            raise ConfigError(f"{where('ipc')}: target IPC {ipc} exceeds the source's IPC {src_ipc}")
        return ShrinkConfig(**common, recipe=str(recipe), ipc=ipc, source=source, source_ipc=src_ipc,
                            method=method, params=params, published=pub, dynamics_protocol=dyn,
                            dynamics_epochs=check_int(cfg, "dynamics_epochs", where))

    def source_set(self, config: ShrinkConfig, ctx: RunContext, experiment: int | None) -> CondensedSet:
        if config.published is not None:
            return config.published.load(ctx, experiment)
        return condensed_set(config, ctx, config.method, int(config.source_ipc or 0), config.params, SOURCE_SEED)

    def run(self, config: ShrinkConfig, runs: Sequence[Run], ctx: RunContext) -> Iterator[tuple[Run, KindResult]]:
        for (exp, seed), batch in groups(runs, lambda r: (r.experiment, config.upstream(r))):
            cs = self.source_set(config, ctx, exp)
            if cs.ipc != (config.source_ipc or cs.ipc):
                raise ConfigError(f"shrink: the source set has IPC {cs.ipc}, the cell says source_ipc "
                                  f"{config.source_ipc}")
            small = shrink(cs, config.ipc, rule=config.recipe, seed=seed, epochs=config.dynamics_epochs,
                           device=ctx.device, protocol=config.dynamics_protocol, data_root=ctx.data_root,
                           cache_dir=ctx.cache_dir, options=ctx.options)
            extra = {"source_checksum": cs.checksum(), "source_ipc": cs.ipc, "n_set": int(small.images.shape[0]),
                     "shrink_seed": seed}
            yield from evaluate_condensed(small, config, ctx, batch, extra)
