"""Cell kind ``coreset`` (flow 1): dynamics -> score -> select -> train on the subset -> evaluate.

Runs :func:`harness.pruning.coreset.run_coreset` (in memory) or, for a streaming dataset (ImageNet at full
scale), :func:`harness.pruning.stream_coreset.run_coreset_streaming` under DDP (``nproc`` / ``num_workers`` /
``img_size``). Budget: ``prune_rate`` or ``ipc``. ``dynamics_protocol`` (default: ``protocol``) records the
dynamics, cut to ``dynamics_epochs`` and changed by ``dynamics_overrides``; the subset is trained under
``protocol`` with ``protocol_overrides``; ``model`` sets both models. ``params``: ``score_params`` and
``rule_opts`` of the recipe (``iterations``, a condenser setting a global scale may add, is ignored).

Seeds and grouping: the dynamics run and the selection use the run's seed, so without ``upstream_seed``
every run is its own flow (one ``run_coreset`` per run; its dynamics are cached under the artifacts, keyed
by their config, and shared with every recipe of the same seed). With ``upstream_seed`` all runs share one
dynamics run and one subset, and the subset's models train together in one call when the engine can.
Streamed cells always run one flow per run (the DDP trainer has no ensemble path).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.bench.kinds.base import (
    CellConfig,
    CellKind,
    KindResult,
    Run,
    RunContext,
    Where,
    check_dynamics_protocol,
    check_int,
    check_mapping,
    engine_record,
    groups,
    plain_where,
    register_cell_kind,
    scaled_dataset,
)
from harness.data import get_spec
from harness.errors import ConfigError
from harness.pruning.coreset import resolve_flow, run_coreset
from harness.pruning.recipes import parse_recipe
from harness.pruning.select import Budget
from harness.pruning.stream_coreset import run_coreset_streaming
from harness.registry import UnknownNameError

PARAMS = ("score_params", "rule_opts")
IGNORED_PARAMS = ("iterations",)
REPORT_EXTRA = ("n_train", "n_kept", "class_counts", "protocol_dynamics", "dynamics_dir")


@dataclass(frozen=True)
class CoresetConfig(CellConfig):
    recipe: str = ""
    budget: Budget | None = None
    dynamics_protocol: str = ""
    dynamics_epochs: int | None = None
    dynamics_overrides: dict[str, Any] = field(default_factory=dict)
    score_params: dict[str, Any] | None = None
    rule_opts: dict[str, Any] | None = None
    streaming: bool = False
    nproc: int | None = None
    num_workers: int = 4
    img_size: int | None = None

    def flow(self):
        """``(recipe, dynamics protocol, training protocol)`` as the flow will run them."""
        return resolve_flow(self.dataset, self.recipe, self.dynamics_protocol, self.protocol, model=self.model,
                            epochs_dynamics=self.dynamics_epochs, dynamics_overrides=self.dynamics_overrides,
                            train_overrides=self.protocol_overrides, score_params=self.score_params,
                            rule_opts=self.rule_opts)


def _budget(cfg: Mapping[str, Any], where: Where) -> Budget:
    if "prune_rate" in cfg:
        return Budget.prune_rate(float(cfg["prune_rate"]))
    if "ipc" in cfg:
        return Budget.ipc(int(cfg["ipc"]))
    raise ConfigError(f"{where('kind')}: a coreset cell needs prune_rate or ipc")


@register_cell_kind("coreset")
class Coreset(CellKind):
    config_cls = CoresetConfig

    def config(self, cfg: Mapping[str, Any], where: Where = plain_where) -> CoresetConfig:
        common = CellConfig.common(cfg, where)
        if not isinstance(cfg.get("recipe"), str):
            raise ConfigError(f"{where('recipe')}: a coreset cell needs a 'recipe'")
        try:
            parse_recipe(cfg["recipe"])
        except (UnknownNameError, ConfigError) as e:
            raise ConfigError(f"{where('recipe')}: {e}") from None
        dyn = check_dynamics_protocol(cfg, where)
        params = check_mapping(cfg, "params", where)
        unknown = sorted(set(params) - set(PARAMS) - set(IGNORED_PARAMS))
        if unknown:
            raise ConfigError(f"{where('params')}: a coreset cell takes params {', '.join(PARAMS)}; not {unknown}")
        streaming = get_spec(cfg["dataset"]).streaming
        if streaming and cfg.get("upstream_seed") is not None:
            raise ConfigError(f"{where('upstream_seed')}: a streamed coreset cell runs one flow per run; "
                              "upstream_seed is not supported there")
        workers = check_int(cfg, "num_workers", where, lo=0)
        out = CoresetConfig(
            **common, recipe=cfg["recipe"], budget=_budget(cfg, where), dynamics_protocol=dyn,
            dynamics_epochs=check_int(cfg, "dynamics_epochs", where),
            dynamics_overrides=check_mapping(cfg, "dynamics_overrides", where),
            score_params=params.get("score_params"), rule_opts=params.get("rule_opts"), streaming=streaming,
            nproc=check_int(cfg, "nproc", where), num_workers=4 if workers is None else workers,
            img_size=check_int(cfg, "img_size", where))
        try:
            out.flow()
        except (UnknownNameError, ConfigError) as e:
            key = "params" if params else "dynamics_overrides" if out.dynamics_overrides else "protocol_overrides"
            raise ConfigError(f"{where(key)}: {e}") from None
        return out

    def run(self, config: CoresetConfig, runs: Sequence[Run], ctx: RunContext) -> Iterator[tuple[Run, KindResult]]:
        ds = scaled_dataset(config, ctx)
        _, _, p_train = config.flow()
        workdir = str(Path(ctx.artifacts_dir or ".") / "coreset")
        common = dict(data_root=ctx.data_root, protocol_dynamics=config.dynamics_protocol,
                      protocol_train=config.protocol, workdir=workdir, model=config.model,
                      epochs_dynamics=config.dynamics_epochs, dynamics_overrides=config.dynamics_overrides or None,
                      train_overrides=config.protocol_overrides, score_params=config.score_params,
                      rule_opts=config.rule_opts, progress=ctx.progress)
        if config.streaming:
            for r in runs:
                report = run_coreset_streaming(ds, config.recipe, config.budget, seed=r.seed, runs=1,
                                               nproc=config.nproc, num_workers=config.num_workers,
                                               img_size=config.img_size, **common)
                yield r, self._result(report, 0, p_train, ctx, 1)
            return
        for up, batch in groups(runs, config.upstream):
            for b in ([batch] if ctx.together else [[r] for r in batch]):
                report = run_coreset(ds, config.recipe, config.budget, seed=up, seeds=[r.seed for r in b],
                                     device=ctx.device, cache_dir=ctx.cache_dir, options=ctx.options, **common)
                for i, r in enumerate(b):
                    yield r, self._result(report, i, p_train, ctx, len(b))

    @staticmethod
    def _result(report: Mapping[str, Any], i: int, p_train: Any, ctx: RunContext, together: int) -> KindResult:
        extra = {k: report[k] for k in REPORT_EXTRA if k in report}
        return KindResult((float(report["accuracies"][i]),), extra, p_train.with_(runs=1).as_dict(),
                          str(report.get("protocol_train", p_train.describe())),
                          engine_record(ctx.options, report.get("ran")), together)
