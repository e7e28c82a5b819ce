"""The coreset-baseline flow on streamed image folders (ImageNet scale), data-parallel.

Same steps and report as :func:`harness.pruning.coreset.run_coreset`, but nothing is loaded into memory:

``dynamics: torchrun -m harness.distributed (whole train folder, per-sample stats gathered from every rank)
-> score -> select -> torchrun -m harness.distributed --subset kept.npy --test-root val (per run) -> report``.

One process per GPU (NCCL) when CUDA is present, else ``nproc`` CPU processes (gloo). The protocol's
batch size is the global batch (split evenly over the ranks). Each DDP run checkpoints every epoch and
resumes after a kill; finished runs are reused (their ``result.json`` records the config). The dynamics run
trains only the epochs the recipe reads (:meth:`harness.pruning.recipes.Recipe.epochs_needed`; none for
``random``), on the whole protocol's schedule; a later recipe that reads more resumes the same run.

Layout under ``workdir``::

    dynamics/<hash>/             the DDP dynamics run (docs/dynamics.md) + checkpoint.pt + result.json
    coreset/<hash>/              scores.npy, kept.npy, result.json (the report)
    coreset/<hash>/run<r>/       the r-th model trained on the kept images (seeds[r]; default seed + r)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.data import ImageFolderStream, get_spec, read_classlist
from harness.data.stream import stream_folders
from harness.distributed import DDPConfig, launch
from harness.dynamics import Dynamics, dynamics_lock
from harness.engine.options import DEFAULT, EngineOptions, resolve_precision
from harness.engine.protocol import TrainProtocol
from harness.errors import ConfigError
from harness.evaluate import run_seeds
from harness.io import atomic_write_json, config_hash
from harness.progress import Progress, or_quiet
from harness.pruning.coreset import resolve_flow
from harness.pruning.recipes import recipe_scores, select_with_recipe
from harness.pruning.scores import save_scores
from harness.pruning.select import save_kept


def ddp_config(protocol: TrainProtocol, *, root: Path, out: Path, img_size: int, nproc: int, seed: int,
               backend: str, num_workers: int, classlist: str = "", augment: str | None = None, record: bool = True,
               subset: str = "", test_root: str = "", until_epoch: int = 0) -> DDPConfig:
    """The :class:`harness.distributed.DDPConfig` that runs ``protocol`` on ``nproc`` ranks.

    The protocol's batch size is the global batch (split over the ranks) and an iteration budget counts
    global optimiser steps. Its augmentation is taken in its streamed form, except that ``crop_flip`` (the
    CIFAR recipe) becomes ``rrc_flip`` (the ImageNet recipe) at >= 64 px; ``augment`` names another streamed
    augmentation for a protocol that augments. What the streamed trainer cannot do is refused by
    :class:`DDPConfig` (never ignored).
    """
    p = protocol
    if p.batch_size % nproc:
        raise ConfigError(f"protocol {p.name}: batch_size {p.batch_size} does not split over {nproc} processes")
    if p.augment != "none" and augment is not None:
        p = p.with_(augment=augment)
    elif p.augment == "crop_flip" and img_size >= 64:
        p = p.with_(augment="rrc_flip")
    return DDPConfig(protocol=p, root=str(root), out=str(out), img_size=img_size, num_workers=num_workers,
                     seed=seed, backend=backend, classlist=classlist, record=record, subset=subset,
                     test_root=test_root, until_epoch=until_epoch)


def _key(cfg: DDPConfig, nproc: int) -> dict[str, Any]:
    """What decides a DDP run's numbers (not where it writes, nor how many loader workers it uses)."""
    d = cfg.as_dict()
    for k in ("out", "num_workers", "root", "test_root", "subset", "until_epoch"):
        d.pop(k)
    return {**d, "nproc": nproc}


def run_coreset_streaming(dataset: str, recipe: str, budget: Any, *, data_root: str | Path | None = None,
                          protocol_dynamics: str = "ccs", protocol_train: str = "ccs", seed: int = 0,
                          workdir: str | Path = "runs", model: str | None = None,
                          epochs_dynamics: int | None = None, epochs_train: int | None = None,
                          runs: int | None = None, dynamics_overrides: dict | None = None,
                          train_overrides: dict | None = None, score_params: dict | None = None,
                          rule_opts: dict | None = None, nproc: int | None = None, num_workers: int = 4,
                          img_size: int | None = None, augment: str | None = None,
                          progress: Progress | None = None, seeds: Sequence[int] | None = None,
                          options: EngineOptions | None = None, **_: Any) -> dict[str, Any]:
    """Run the coreset flow on a streamed dataset; returns (and writes) the same report as ``run_coreset``.

    ``nproc``: processes (default: the number of GPUs, else 1). ``img_size``: the training resolution
    (default: the dataset's, 224 for ImageNet). ``seeds``: the subset-training runs' seeds (default
    ``seed .. seed + runs - 1``). ``options``: the precision of both protocols (``auto``: bf16 autocast where the
    device has native bf16, as everywhere else); ``compile=True`` and the vmap ensemble are not available under
    DDP and are refused (``compile="auto"`` runs eager).
    Other keyword arguments of ``run_coreset`` (``device``, ``cache_dir``, ``download``) do not apply.
    """
    say = or_quiet(progress).note
    r, p_dyn, p_train = resolve_flow(dataset, recipe, protocol_dynamics, protocol_train, model=model,
                                     epochs_dynamics=epochs_dynamics, epochs_train=epochs_train,
                                     dynamics_overrides=dynamics_overrides, train_overrides=train_overrides,
                                     score_params=score_params, rule_opts=rule_opts)
    if r.rule == "kmeans":
        raise ConfigError(f"recipe {r.name}: feature-based rules (k-means) are not available on streamed data")
    options = options or DEFAULT
    if options.compile is True or options.path == "ensemble":
        raise ConfigError("streamed datasets train under DDP: --compile on and --path ensemble are not available")
    cuda = torch.cuda.is_available()
    p_dyn = resolve_precision(p_dyn, options, "cuda" if cuda else "cpu")[0]
    p_train = resolve_precision(p_train, options, "cuda" if cuda else "cpu")[0]
    train_seeds = run_seeds(p_train, seeds, runs, seed)
    train_dir, test_dir, classlist = stream_folders(dataset, data_root)
    nproc = int(nproc or (torch.cuda.device_count() if cuda else 1))
    backend = "nccl" if cuda else "gloo"
    size = int(img_size or get_spec(dataset).size[0])
    common = {"img_size": size, "nproc": nproc, "backend": backend, "num_workers": num_workers,
              "classlist": classlist, "augment": augment}
    workdir = Path(workdir)

    probe = ddp_config(p_dyn, root=train_dir, out=Path("."), seed=seed, **common)
    dyn_key = config_hash({"dataset": dataset, **_key(probe, nproc)})
    dyn_dir = workdir / "dynamics" / dyn_key
    until = r.epochs_needed(p_dyn.total_epochs)  # None: the whole run; 0: no dynamics (random)
    dyn = None
    if until == 0:
        stream = ImageFolderStream(train_dir, classes=read_classlist(classlist) if classlist else None)
        labels, k, n_all = stream.targets.numpy(), len(stream.classes), len(stream)
    else:
        say(f"dynamics ({nproc} x {backend}): {p_dyn.describe()} -> {dyn_dir}"
            + (f" (first {until} epochs: all the selection reads)" if until else ""))
        with dynamics_lock(dyn_dir):  # one recorder per dynamics folder; another flow waits, then reuses it
            launch(ddp_config(p_dyn, root=train_dir, out=dyn_dir, seed=seed, until_epoch=until or 0, **common),
                   nproc)
        dyn = Dynamics.open(dyn_dir)
        dyn = dyn.head(until) if until else dyn
        labels, k, n_all = dyn.labels, len(dyn.meta["config"]["classes"]), dyn.n
    scores = recipe_scores(r, dyn) if dyn is not None else None
    kept = select_with_recipe(r, dyn if r.score else None, labels, budget, seed=seed, num_classes=k)

    train_probe = ddp_config(p_train, root=train_dir, out=Path("."), seed=seed, record=False, subset="x", **common)
    run_cfg = {"dynamics": dyn_key, "recipe": r.describe(), "budget": [budget.kind, budget.value], "seed": seed,
               "train": _key(train_probe, nproc), "seeds": list(train_seeds)}
    out_dir = workdir / "coreset" / config_hash(run_cfg)
    if scores is not None:
        save_scores(out_dir / "scores.npy", scores)
    save_kept(out_dir / "kept.npy", kept)
    accs = []
    for i, s in enumerate(train_seeds):
        say(f"train run {i + 1}/{len(train_seeds)} (seed {s}) on {len(kept)}/{n_all}: {p_train.describe()}")
        cfg = ddp_config(p_train, root=train_dir, out=out_dir / f"run{i}", seed=s, record=False,
                         subset=str((out_dir / "kept.npy").resolve()), test_root=str(test_dir), **common)
        accs.append(float(launch(cfg, nproc)["test_accuracy"]))  # a fraction, as every cell records
    a = np.asarray(accs)
    hist = np.bincount(labels[kept], minlength=k).tolist()
    report = {"dataset": dataset, "recipe": r.name, "recipe_detail": r.describe(), "budget": str(budget),
              "n_train": n_all, "n_kept": int(kept.size), "class_counts": hist, "seed": seed,
              "protocol_dynamics": p_dyn.describe(), "protocol_train": p_train.describe(),
              "train_steps": p_train.steps_for(int(kept.size)),
              "dynamics_dir": str(dyn_dir) if dyn is not None else None,
              "dynamics_epochs": dyn.epochs if dyn is not None else 0,
              "out_dir": str(out_dir), "seeds": list(train_seeds), "accuracies": accs,
              "mean": float(a.mean()), "std": float(a.std()), "streaming": True, "world_size": nproc,
              "backend": backend, "img_size": size}
    atomic_write_json(out_dir / "result.json", report)
    return report
