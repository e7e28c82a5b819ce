"""The coreset-baseline flow as one library call.

``load dataset -> record dynamics (harness.dynamics.record_dynamics, cached under workdir by a hash of its
config) -> score -> select -> train fresh models on the subset (harness.evaluate.evaluate, one per seed)
-> report``.

Layout under ``workdir``::

    dynamics/<hash>/        one dynamics run (docs/dynamics.md); shared by every recipe and budget
    coreset/<hash>/         scores.npy (index-aligned), kept.npy (sorted indices), result.json
                            (+ weights.npy: the kept samples' loss weights, when the protocol has some)

Hashes are :func:`harness.io.config_hash` of the config that made the artifact. A training protocol with a
``loss_weighting`` (TDDS's ``tdds-subset``) trains on the kept samples with weights from the recipe's own
scores: :func:`subset_weights` normalises them over the **whole** training set (as TDDS's
``data_subset.py`` does on its saved score file) and takes the kept rows. SSP / k-means reads
:func:`harness.models.embeddings` of the dynamics run's final model, as shrink does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.data import load_dataset
from harness.dynamics import dynamics_config, record_dynamics, run_protocol
from harness.engine.losses import get_loss_weighting
from harness.engine.options import DEFAULT, EngineOptions
from harness.engine.protocol import create_protocol
from harness.errors import ConfigError
from harness.evaluate import evaluate, model_input, run_seeds
from harness.io import atomic_save_npy, atomic_write_json, config_hash
from harness.models import embeddings
from harness.progress import EpochPhases, Progress, or_quiet
from harness.pruning.recipes import parse_recipe, recipe_scores, select_with_recipe
from harness.pruning.scores import final_eval_from_dynamics, get_score, save_scores
from harness.pruning.select import Budget, save_kept


def resolve_flow(dataset: str, recipe: str, protocol_dynamics: str, protocol_train: str, *,
                 model: str | None = None, epochs_dynamics: int | None = None, epochs_train: int | None = None,
                 dynamics_overrides: dict | None = None, train_overrides: dict | None = None,
                 score_params: dict | None = None, rule_opts: dict | None = None) -> tuple[Any, Any, Any]:
    """``(recipe, dynamics protocol, training protocol)`` of a coreset flow, with its scale options applied
    (``epochs_*`` override the protocols' epochs, ``model`` both protocols' model unless overridden)."""
    r = parse_recipe(recipe)
    if score_params or rule_opts:
        r = r.with_(score_params=score_params, rule_opts=rule_opts)
    dov, tov = dict(dynamics_overrides or {}), dict(train_overrides or {})
    if epochs_dynamics is not None:
        dov["epochs"] = epochs_dynamics
    if epochs_train is not None:
        tov["epochs"] = epochs_train
        tov.setdefault("iterations", None)  # asking for epochs replaces an iteration budget
    if model is not None:
        dov.setdefault("model", model)
        tov.setdefault("model", model)
    p_train = create_protocol(protocol_train, dataset, **tov)
    if p_train.iterations is not None and "epochs" in tov and "iterations" not in tov:
        raise ConfigError(f"protocol {protocol_train}: trains {p_train.iterations} iterations, so epochs="
                          f"{tov['epochs']} would be ignored; also set iterations (null for epochs)")
    return r, create_protocol(protocol_dynamics, dataset, **dov), p_train


def subset_weights(protocol, scores: np.ndarray | None, kept: np.ndarray, recipe: str) -> np.ndarray | None:
    """The kept samples' loss weights under ``protocol.loss_weighting`` (None when it is ``none``):
    the weighting's ``weights(scores)`` over all N samples, then the rows of ``kept`` (in ``kept`` order)."""
    if protocol.loss_weighting == "none":
        return None
    if scores is None:
        raise ConfigError(f"protocol {protocol.name}: loss_weighting {protocol.loss_weighting!r} weights by the "
                          f"recipe's scores, and recipe {recipe!r} has none")
    return np.asarray(get_loss_weighting(protocol.loss_weighting).weights(scores))[kept]


def run_coreset(dataset: str, recipe: str, budget: Budget, *, data_root: str | Path | None = None,
                protocol_dynamics: str = "ccs", protocol_train: str = "ccs", seed: int = 0,
                workdir: str | Path = "runs", device: str = "cpu", model: str | None = None,
                epochs_dynamics: int | None = None, epochs_train: int | None = None, runs: int | None = None,
                dynamics_overrides: dict | None = None, train_overrides: dict | None = None,
                score_params: dict | None = None, rule_opts: dict | None = None, cache_dir: str | None = None,
                download: bool = False, progress: Progress | None = None,
                seeds: Sequence[int] | None = None, options: EngineOptions | None = None) -> dict[str, Any]:
    """Run the coreset flow and return a JSON-able report (also written to ``coreset/<hash>/result.json``).

    Scale options: ``epochs_dynamics`` / ``epochs_train`` / ``model`` / ``*_overrides`` change the named
    protocols (the report prints the protocols actually used). ``seed`` seeds the dynamics run and the
    selection; ``seeds`` the models trained on the subset (default ``seed .. seed + runs - 1``, ``runs``
    defaulting to the training protocol's); the report's ``accuracies`` are aligned with its ``seeds``.
    ``options``: how the training runs execute (:class:`harness.engine.EngineOptions`): passed to
    :func:`harness.evaluate.evaluate`, and its precision / compile to the dynamics run.
    """
    display = or_quiet(progress)
    say = display.note
    options = options or DEFAULT
    r, p_dyn, p_train = resolve_flow(dataset, recipe, protocol_dynamics, protocol_train, model=model,
                                     epochs_dynamics=epochs_dynamics, epochs_train=epochs_train,
                                     dynamics_overrides=dynamics_overrides, train_overrides=train_overrides,
                                     score_params=score_params, rule_opts=rule_opts)
    train_seeds = run_seeds(p_train, seeds, runs, seed)
    train = load_dataset(dataset, "train", data_root=data_root, download=download, cache_dir=cache_dir)
    test = load_dataset(dataset, "test", data_root=data_root, download=download, cache_dir=cache_dir)
    workdir = Path(workdir)
    dyn_key = config_hash(dynamics_config(train, run_protocol(train, p_dyn, options=options, device=device),
                                          seed=seed))
    dyn_dir = workdir / "dynamics" / dyn_key
    # train only what the selection reads: the epochs its score and rule read (the DUAL window ends at epoch T),
    # the whole run when it needs the final model (k-means features, LossConverge's eval pass); a later recipe
    # that needs more resumes the same recording
    until = r.epochs_needed(p_dyn.total_epochs)
    say(f"dynamics: {p_dyn.describe()} -> {dyn_dir}" + (f" (first {until} epochs: all the selection reads)"
                                                        if until else ""))
    net = None
    if until == 0:  # random: reads no dynamics
        dyn = None
    elif until is None:
        with EpochPhases(display, "dynamics") as cb:
            dyn, net = record_dynamics(train, p_dyn, seed=seed, out_dir=dyn_dir, device=device, options=options,
                                       return_model=True, progress=cb.epochs)
    else:
        with EpochPhases(display, "dynamics") as cb:
            dyn = record_dynamics(train, p_dyn, seed=seed, out_dir=dyn_dir, device=device, options=options,
                                  until_epoch=until, progress=cb.epochs)
    labels = train.labels.numpy() if dyn is None else dyn.labels
    features = embeddings(net, model_input(train)).numpy() if r.rule == "kmeans" else None
    src = dyn  # a score of the final model (LossConverge) reads its eval pass, not the dynamics
    if r.score and get_score(r.score).needs == "final_eval":
        src = final_eval_from_dynamics(dyn, train, device=device)
    scores = recipe_scores(r, src)
    kept = select_with_recipe(r, src if r.score else None, labels, budget, seed=seed, features=features,
                              num_classes=train.num_classes)
    run_cfg = {"dynamics": dyn_key, "recipe": r.describe(), "budget": [budget.kind, budget.value], "seed": seed,
               "train": p_train.as_dict(), "seeds": list(train_seeds), "engine": options.as_dict()}
    out_dir = workdir / "coreset" / config_hash(run_cfg)
    if scores is not None:
        save_scores(out_dir / "scores.npy", scores)
    save_kept(out_dir / "kept.npy", kept)
    weights = subset_weights(p_train, scores, kept, r.name)
    if weights is not None:
        atomic_save_npy(out_dir / "weights.npy", weights)
    subset = train.subset(torch.from_numpy(kept))
    say(f"train on {len(kept)}/{len(train)}: {p_train.describe()}")
    with EpochPhases(display, "train on the subset", runs=len(train_seeds)) as cb:
        res = evaluate(subset, test, p_train, seeds=train_seeds, device=device, options=options, progress=cb,
                       sample_weights=None if weights is None else torch.from_numpy(weights).float())
    hist = np.bincount(labels[kept], minlength=train.num_classes).tolist()
    report = {"dataset": dataset, "recipe": r.name, "recipe_detail": r.describe(), "budget": str(budget),
              "n_train": len(train), "n_kept": int(kept.size), "class_counts": hist, "seed": seed,
              "protocol_dynamics": p_dyn.describe(), "protocol_train": p_train.describe(),
              "train_steps": p_train.steps_for(int(kept.size)),
              "dynamics_dir": None if dyn is None else str(dyn_dir),
              "dynamics_epochs_read": 0 if dyn is None else dyn.epochs, "out_dir": str(out_dir),
              "seeds": list(res.seeds),
              "accuracies": list(res.accuracies), "mean": res.mean, "std": res.std,
              "engine": options.as_dict(), "ran": dict(res.extra)}
    atomic_write_json(out_dir / "result.json", report)
    return report
