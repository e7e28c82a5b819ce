"""Bridges from cell configs to the flows' library functions (coreset, condense, shrink).

Kept apart from :mod:`harness.bench.cells` so the signatures of ``run_coreset``, the condensers and
``shrink`` are adapted in one place. Scaled-down cells (``train_per_class`` / ``test_per_class``)
run on a derived dataset ``<name>~<k>x<t>`` registered in process: the first-seeded ``k`` training
and ``t`` test images per class of ``<name>``, so every flow (which loads by name) sees the subset.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

from harness.bench.cells import KindResult, RunContext, limit_per_class, resolve_protocol
from harness.errors import ConfigError


def scaled_dataset(cfg: dict[str, Any], ctx: RunContext) -> str:
    """The dataset name a flow should load: the cell's, or a registered per-class-limited subset."""
    name = cfg["dataset"]
    k, t = cfg.get("train_per_class"), cfg.get("test_per_class")
    if not k and not t:
        return name
    from dataclasses import replace

    from harness.data.specs import DATASETS, get_spec, load_dataset

    derived = f"{name}~{k or 'all'}x{t or 'all'}"
    if derived in DATASETS:
        return derived
    base = get_spec(name)
    root = ctx.data_root or os.environ.get("DDBENCH_DATA")

    def reader(_root: Path, split: str, download: bool):
        data = load_dataset(name, split, data_root=root, cache_dir=ctx.cache_dir)
        lim = k if split == "train" else t
        data = limit_per_class(data, lim, seed=0)
        return data.images, data.labels, data.class_names

    DATASETS.register(derived, replace(base, name=derived, reader=reader, embedded=True,
                                       note=f"{name} limited to {k}/{t} images per class (bench scale)"))
    return derived


def _budget(cfg: dict[str, Any]):
    from harness.pruning.select import Budget

    if "prune_rate" in cfg:
        return Budget.prune_rate(float(cfg["prune_rate"]))
    if "ipc" in cfg:
        return Budget.ipc(int(cfg["ipc"]))
    raise ConfigError("coreset cell needs prune_rate or ipc")


def run_coreset_cell(run_coreset: Any, cfg: dict[str, Any], ctx: RunContext) -> KindResult:
    """Coreset flow for one cell: in memory, or on streamed image folders under DDP when the dataset is
    a streaming one (ImageNet at full scale; ``nproc`` / ``num_workers`` / ``img_size`` from the cell)."""
    from harness.data import get_spec

    ds = scaled_dataset(cfg, ctx)
    params = dict(cfg.get("params") or {})
    params.pop("iterations", None)
    if get_spec(ds).streaming:
        from harness.pruning.stream_coreset import run_coreset_streaming

        run_coreset = partial(run_coreset_streaming, nproc=cfg.get("nproc"), num_workers=int(cfg.get("num_workers", 4)),
                              img_size=cfg.get("img_size"))
    report = run_coreset(
        ds, cfg["recipe"], _budget(cfg), data_root=ctx.data_root, protocol_dynamics=cfg.get("dynamics_protocol",
                                                                                              cfg["protocol"]),
        protocol_train=cfg["protocol"], seed=int(cfg["seed"]), workdir=str(Path(ctx.artifacts_dir or ".") / "coreset"),
        device=ctx.device, model=cfg.get("model"), epochs_dynamics=cfg.get("dynamics_epochs"), runs=1,
        train_overrides=dict(cfg.get("protocol_overrides") or {}), cache_dir=ctx.cache_dir,
        progress=lambda m: ctx.log.info("%s", m), **params)
    proto = resolve_protocol(cfg)
    return KindResult(tuple(report["accuracies"]),
                      {k: report[k] for k in ("n_train", "n_kept", "class_counts", "protocol_dynamics",
                                               "dynamics_dir") if k in report},
                      proto.as_dict(), report.get("protocol_train", proto.describe()))


def _condense(cfg: dict[str, Any], ctx: RunContext, method: str, ipc: int, seed: int, pre_prune: Any = None):
    """Condense (or reuse the cached artifact keyed by the settings that decide the images)."""
    from adapters.condense import create_condenser
    from condensed.set import load_condensed, save_condensed

    ds = scaled_dataset(cfg, ctx)
    params = dict(cfg.get("params") or {})
    key = {"dataset": ds, "method": method, "ipc": ipc, "seed": seed, "params": params,
           "pre_prune": None if pre_prune is None else pre_prune.as_dict()}
    art = ctx.artifact("condensed", key)
    final = art / "set"
    if (final / "meta.json").is_file():  # sets appear atomically: a meta.json means a finished set
        ctx.log.info("reusing condensed set %s", final)
        return load_condensed(final)
    from harness.data import load_dataset
    from harness.locks import describe_owner, hold

    def waiting(owner: dict | None) -> None:
        ctx.log.info("waiting for %s, which is condensing %s", describe_owner(owner), art)

    with hold(art / ".lock", on_wait=waiting):  # one process condenses; the others wait and reuse its set
        if (final / "meta.json").is_file():
            ctx.log.info("reusing condensed set %s (made while we waited)", final)
            return load_condensed(final)
        real = load_dataset(ds, "train", data_root=ctx.data_root, cache_dir=ctx.cache_dir)
        cond = create_condenser(method.lower())
        config = cond.default_config(**params)
        ctx.log.info("condensing %s ipc %d with %s %s pre_prune=%s", ds, ipc, method, params, pre_prune)
        cs = cond.condense(real, ipc, config, pre_prune=pre_prune, seed=seed, device=ctx.device,
                           score_cache=str(art / "scores"),
                           progress=lambda d, t, info: ctx.log.info("iter %d/%d %s", d, t, info) if d == t else None)
        save_condensed(cs, final, overwrite=False)
    return load_condensed(final)


def _eval_condensed(cs: Any, cfg: dict[str, Any], ctx: RunContext, extra: dict[str, Any]) -> KindResult:
    from dataclasses import replace

    from condensed.shrink import prepare_for_eval
    from harness.bench.cells import train_test
    from harness.evaluate import evaluate_set

    li, zca = prepare_for_eval(cs, cfg["dataset"], ctx.data_root, ctx.cache_dir)
    _, test = train_test(cfg, ctx)
    proto = resolve_protocol(cfg)
    if cfg.get("hard_label") and li.soft_labels is not None:
        li = replace(li, soft_labels=None)
        proto = proto.with_(loss="ce")
    res = evaluate_set(li, test, proto, runs=1, seed=int(cfg["seed"]), device=ctx.device, zca=zca)
    return KindResult(res.accuracies, {"n_train": res.n_train, **extra}, res.protocol, proto.describe())


def run_condense_cell(condense_mod: Any, cfg: dict[str, Any], ctx: RunContext) -> KindResult:
    """Condense with ``method`` at ``ipc`` (GoldFromOres ``drop_criterion``/``drop_ratio`` when set),
    then evaluate under the cell's protocol. The condensed set is seeded by the run's seed."""
    pre = None
    if cfg.get("drop_criterion") and float(cfg.get("drop_ratio", 0)) > 0:
        pp = dict((cfg.get("params") or {}).get("pre_prune_params") or {})
        pre = condense_mod.PrePrune(cfg["drop_criterion"], drop_ratio=float(cfg["drop_ratio"]),
                                    seed=int(cfg["seed"]), params=pp)
    cfg = {**cfg, "params": {k: v for k, v in (cfg.get("params") or {}).items() if k != "pre_prune_params"}}
    cs = _condense(cfg, ctx, cfg["method"], int(cfg["ipc"]), int(cfg["seed"]), pre)
    return _eval_condensed(cs, cfg, ctx, {"condensed_checksum": cs.checksum(), "method": cs.method,
                                          "pre_prune": cs.provenance.get("pre_prune_result")})


def _source_set(cfg: dict[str, Any], ctx: RunContext):
    """The shrink cell's source condensed set: published, or condensed by us (cached, seed 0)."""
    src = cfg.get("source", "condense")
    if src == "published":
        from adapters.loaders import load_published

        path = Path(str(cfg["source_path"]))
        if not path.is_absolute():
            path = Path(ctx.data_root or os.environ.get("DDBENCH_DATA") or ".") / path
        return load_published(str(cfg.get("source_format", "vico")), path)[int(cfg.get("experiment", 0))]
    if src == "condense":
        method = cfg.get("method", "idc")
        return _condense(cfg, ctx, method, int(cfg["source_ipc"]), 0)  # one source set shared by every run
    raise ConfigError(f"shrink: unknown source {src!r} (condense | published)")


def run_shrink_cell(shrink_mod: Any, cfg: dict[str, Any], ctx: RunContext) -> KindResult:
    """YOCO flow: source set at ``source_ipc`` -> ``shrink(rule=recipe)`` to ``ipc`` -> evaluate."""
    cs = _source_set(cfg, ctx)
    if cs.ipc != int(cfg.get("source_ipc", cs.ipc)):
        raise ConfigError(f"shrink: the source set has IPC {cs.ipc}, the cell says source_ipc {cfg['source_ipc']}")
    small = shrink_mod.shrink(cs, int(cfg["ipc"]), rule=cfg.get("recipe", "yoco"), seed=int(cfg["seed"]),
                              epochs=cfg.get("dynamics_epochs"), device=ctx.device, protocol=cfg["protocol"],
                              data_root=ctx.data_root, cache_dir=ctx.cache_dir)
    return _eval_condensed(small, cfg, ctx, {"source_checksum": cs.checksum(), "source_ipc": cs.ipc,
                                             "n_set": int(small.images.shape[0])})
