"""Shrinking a condensed set to a smaller IPC: YOCO and the pruning baselines of its tables.

YOCO (He et al., "You Only Condense Once: Two Rules for Pruning Condensed Datasets", NeurIPS
2023; ``he-y/you-only-condense-once``) turns a set with IPC_F images per class into one with IPC_T:

1. decode multi-formation (IDC: each stored image -> factor^2 images, class-contiguous);
2. train a ConvNet on the decoded set under the source's protocol (YOCO: 1000 epochs, batch 64,
   DSA ``color_crop_flip_scale_rotate`` + CutMix p 0.5) while recording per-sample dynamics of the
   training-time (augmented, mixed) outputs against the original labels;
3. score every decoded image with LBPE top-K:
   ``LBPE(i) = sum_{e in topK} || softmax(z_e(i)) - onehot(y_i) ||_2`` over the K epochs
   ``e < stop_epoch`` with the most correctly classified training samples (rule 1: keep *easy*
   samples, i.e. the **lowest** LBPE, when the target IPC is small);
4. select with the balanced construction (rule 2): per class the ``IPC_T * factor^2`` decoded
   images with the lowest LBPE;
5. write the smaller set (decoded, factor 1) with provenance: source checksum, rule, parameters,
   scores (index-aligned with the decoded source), kept indices.

Rules (YOCO ``argument.py`` switches, suffix grammar ``<base>[_easy|_hard][_balance|_imbalance]``):

==============  ==================================  =========  ==========
base            score (high = hard unless noted)     default    default
==============  ==================================  =========  ==========
random          none                                 --         imbalance
ssp             k-means on embeddings, centroid-nearest          imbalance
entropy         final-model eval entropy             hard       imbalance
aum             sum of prob margins (HIGH = easy)    hard       imbalance
forgetting      1->0 correctness events              hard       imbalance
el2n            sum_{e<10} ||p_e - y||               hard       imbalance
ccs             el2n, AUM cut-off + 50 strata        easy       imbalance
yoco            LBPE top-K                           easy       balance
==============  ==================================  =========  ==========

Imbalanced rules keep ``int(IPC_T / IPC_F * N)`` decoded images overall; balanced ones
``IPC_T * factor^2`` per class. CCS (Zheng et al., ICLR 2023) as YOCO runs it: drop the
``ratio * N`` samples with the lowest AUM (hard cut-off; YOCO's ``prune_score_ratio_config``), then
stratified sampling over 50 equal-width strata of the el2n score. ``entropy`` follows CCS/YOCO's
``post_training_metrics``: the final model in eval mode on the un-augmented decoded images.

Built on the pruning core: :mod:`harness.dynamics` (recorder), :mod:`harness.pruning.scores`,
:mod:`harness.pruning.select` (``Budget``) and :mod:`harness.pruning.recipes` (suffix grammar,
``select_with_recipe``). ``--rule ccs`` maps to the recipe ``ccs_yoco``.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from condensed.prepare import prepare_for_eval
from condensed.set import CondensedSet
from harness.data.images import LabeledImages
from harness.errors import ConfigError

# YOCO's (stop_epoch, K) for LBPE top-K per source method (and dataset); DC/DSA: YOCO's DSA
# setting is inconsistent (100 in generate_importance_score.py, 10 in argument.py) -> we use (100, 10).
LBPE_DEFAULTS: dict[tuple[str, str | None], tuple[int, int]] = {
    ("IDC", "cifar10"): (100, 10), ("IDC", "cifar100"): (200, 10), ("IDC", None): (200, 10),
    ("DREAM", None): (200, 10), ("MTT", None): (10, 3), ("KIP", None): (50, 3),
    ("DSA", None): (100, 10), ("DC", None): (100, 10), ("DM", None): (100, 10),
}
# YOCO prune_score_ratio_config: CCS hard cut-off as a fraction of all decoded images, (IPC_F, IPC_T)
CCS_CUTOFF: dict[str, dict[tuple[int, int], float]] = {
    "cifar10": {(10, 1): 0.3, (10, 2): 0.1, (10, 5): 0.0, (50, 1): 0.3, (50, 2): 0.3, (50, 5): 0.3, (50, 10): 0.1},
    "cifar100": {(10, 1): 0.5, (10, 2): 0.4, (10, 5): 0.2, (20, 1): 0.5, (20, 2): 0.5, (20, 5): 0.3,
                 (50, 1): 0.5, (50, 2): 0.5, (50, 5): 0.5, (50, 10): 0.3},
    "imagenet": {(10, 1): 0.3, (10, 2): 0.2, (10, 5): 0.1, (20, 1): 0.3, (20, 2): 0.3, (20, 5): 0.2},
}
# ``ddbench shrink --rule ccs`` means YOCO's CCS (strata on EL2N, cut-off of the highest EL2N)
RULE_ALIASES = {"ccs": "ccs_yoco", "accumulated_margin": "aum"}


def resolve_rule(name: str):
    """The :class:`harness.pruning.recipes.Recipe` for a shrink rule (YOCO suffix grammar)."""
    from harness.pruning.recipes import parse_recipe

    if name != "ccs_yoco" and not name.startswith("ccs_yoco_"):
        for alias in sorted(RULE_ALIASES, key=len, reverse=True):  # YOCO's names, with any suffixes
            if name == alias or name.startswith(alias + "_"):
                name = RULE_ALIASES[alias] + name[len(alias):]
                break
    return parse_recipe(name)


def lbpe_defaults(method: str, dataset: str) -> tuple[int, int]:
    """YOCO's (stop_epoch, K) for the source ``method`` (IDC / DREAM / MTT / KIP / DSA / DC)."""
    m = method.upper()
    return LBPE_DEFAULTS.get((m, dataset), LBPE_DEFAULTS.get((m, None), (100, 10)))


def ccs_cutoff(dataset: str, ipc_from: int, ipc_to: int) -> float:
    """YOCO's CCS hard cut-off ratio; 0.0 for grid points YOCO does not list."""
    key = "imagenet" if dataset.startswith(("imagenet", "imagenette", "imagewoof")) else dataset
    return CCS_CUTOFF.get(key, {}).get((ipc_from, ipc_to), 0.0)


# --- evaluation helper -------------------------------------------------------------------------------
def model_input(li: LabeledImages) -> torch.Tensor:
    """Training inputs in the model's space: normalized pixels, or ZCA pixels as stored."""
    return li.images.float() if li.space == "zca" else li.normalized()


# --- dynamics ----------------------------------------------------------------------------------------
def record_runs(li: LabeledImages, protocol, *, runs: int, seed: int, device: str | torch.device = "cpu"
                ) -> tuple[list, torch.nn.Module, torch.Tensor]:
    """``runs`` dynamics runs (seeds ``seed + r``) on ``li``; returns them, the last model and its inputs."""
    from harness.dynamics import DynamicsRecorder
    from harness.models import create_model
    from harness.train import Trainer, seeded_model

    device = torch.device(device)
    x = model_input(li).to(device)
    labels = li.labels.to(device)
    soft = li.soft_labels is not None
    proto = protocol.with_(loss="soft_ce") if soft and protocol.loss == "ce" else protocol
    targets = li.soft_labels.to(device) if soft else labels
    dyns, model = [], None
    for r in range(runs):
        rec = DynamicsRecorder(len(li), li.num_classes, labels=li.labels.numpy(),
                               meta={"protocol": proto.as_dict(), "seed": seed + r})
        model = seeded_model(lambda: create_model(proto.model, num_classes=li.num_classes, in_chans=li.channels,
                                                  img_size=li.size), seed + r).to(device)
        Trainer(model, proto, seed=seed + r, hooks=[rec]).fit(x, targets, labels=labels)
        rec.finish()
        dyns.append(rec.dynamics())
    return dyns, model, x


@torch.inference_mode()
def _eval_outputs(model: torch.nn.Module, x: torch.Tensor, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    logits, feats = [], []
    for s in range(0, x.shape[0], batch):
        f = model.embed(x[s:s + batch]) if hasattr(model, "embed") else model.forward_features(x[s:s + batch])
        feats.append(f.flatten(1).float().cpu())
        logits.append(model(x[s:s + batch]).float().cpu())
    return torch.cat(logits), torch.cat(feats)


def compute_rule_scores(recipe, dyns: list, model: torch.nn.Module | None, x: torch.Tensor | None, *,
                        stop_epoch: int, topk: int) -> np.ndarray | None:
    """Index-aligned scores for a recipe, averaged over the dynamics runs (YOCO averages three).

    - ``lbpe``: YOCO's LBPE top-K with (stop_epoch, K) of the source method;
    - ``el2n``: sum over epochs 0-9 (YOCO ``el2n = LBPE_0_10``);
    - ``entropy``: CCS/YOCO ``post_training_metrics``: the final model in eval mode on the
      un-augmented decoded images (not the last training epoch), from the last run's model;
    - anything else: :func:`harness.pruning.scores.compute_score` with the recipe's parameters.
    """
    from harness.pruning.scores import compute_score

    score = recipe.score
    if score is None:
        return None
    if score == "lbpe":
        return compute_score("lbpe", dyns, stop_epoch=min(stop_epoch, dyns[0].epochs), k=topk)
    if score == "entropy":
        if model is None:
            raise ConfigError("entropy needs the trained model (do not pass precomputed dynamics)")
        logits, _ = _eval_outputs(model, x)
        p = torch.softmax(logits, 1)
        return (-(p * torch.log(p + 1e-10)).sum(1)).double().numpy()
    if score == "el2n":
        return np.mean([compute_score("el2n", d, end=min(10, d.epochs)) for d in dyns], axis=0)
    return np.mean([compute_score(score, d, **dict(recipe.score_params)) for d in dyns], axis=0)


# --- the flow ----------------------------------------------------------------------------------------
def shrink(cs: CondensedSet, to_ipc: int, *, rule: str = "yoco", runs_dynamics: int = 1,
           stop_epoch: int | None = None, topk: int | None = None, epochs: int | None = None,
           protocol: str = "yoco", seed: int = 0, device: str | torch.device = "cpu",
           data_root: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
           ccs_ratio: float | None = None, dynamics: list | None = None) -> CondensedSet:
    """A smaller condensed set with ``to_ipc`` images per class worth of storage (YOCO flow, module doc).

    ``epochs`` overrides the dynamics protocol's epochs (report it); ``dynamics`` reuses recorded runs
    (index-aligned with the decoded set) instead of training. ``data_root``/``cache_dir`` are unused
    by the flow itself (dynamics need no real data) and kept for symmetry with evaluation.
    """
    from harness.pruning.recipes import select_with_recipe
    from harness.pruning.select import Budget
    from harness.train import get_protocol

    recipe = resolve_rule(rule)
    ipc_from = cs.ipc
    counts = cs.class_counts()
    if to_ipc < 1 or to_ipc > ipc_from:
        raise ConfigError(f"target IPC {to_ipc} must be in [1, {ipc_from}] (the source's IPC)")
    if len(set(counts)) != 1:
        raise ConfigError(f"source set is not class-balanced (per-class counts {counts}); YOCO's IPC ratio "
                          "is undefined")
    f2 = cs.factor ** 2
    dec = cs.decoded()
    li = dec.to_labeled()
    labels = li.labels.numpy()
    per_class = to_ipc * f2
    total = int(to_ipc / ipc_from * len(labels))
    budget = Budget.ipc(per_class) if recipe.balance else Budget.count(total)
    params: dict[str, Any] = {"to_ipc": to_ipc, "ipc_from": ipc_from, "factor": cs.factor, "per_class": per_class,
                              "total": total, "budget": str(budget), "seed": seed, "recipe": recipe.describe()}
    scores, features, opts = None, None, {}
    needs_model = recipe.rule == "kmeans" or recipe.score == "entropy"
    if recipe.score is not None or needs_model:
        st_def, k_def = lbpe_defaults(cs.method, cs.dataset)
        stop_epoch, topk = stop_epoch or st_def, topk or k_def
        proto = get_protocol(protocol, cs.dataset, **({"epochs": epochs} if epochs else {}))
        params.update(protocol=proto.as_dict(), runs_dynamics=runs_dynamics)
        if dynamics is None:
            dyns, model, x = record_runs(li, proto, runs=runs_dynamics, seed=seed, device=device)
        else:
            dyns, model, x = list(dynamics), None, None
            params["runs_dynamics"] = len(dyns)
        if needs_model and model is None:
            raise ConfigError(f"rule {rule}: needs the trained model; pass no precomputed dynamics")
        if recipe.score == "lbpe":
            params.update(stop_epoch=stop_epoch, topk=topk, stop_epoch_used=min(stop_epoch, dyns[0].epochs))
        if recipe.rule == "kmeans":
            _, features = _eval_outputs(model, x)
        scores = compute_rule_scores(recipe, dyns, model, x, stop_epoch=stop_epoch, topk=topk)
        if recipe.rule == "stratified":
            opts["cutoff_ratio"] = ccs_ratio if ccs_ratio is not None else ccs_cutoff(cs.dataset, ipc_from, to_ipc)
            params["ccs_cutoff"] = opts["cutoff_ratio"]
    kept = select_with_recipe(recipe, scores, labels, budget, seed=seed, features=features,
                              num_classes=cs.num_classes, **opts)
    sub = torch.as_tensor(np.asarray(kept, dtype=np.int64))
    prov = {
        "shrunk_from": {"checksum": cs.checksum(), "method": cs.method, "ipc": ipc_from, "factor": cs.factor,
                        "provenance": cs.provenance},
        "rule": rule, "params": params, "kept_indices": sub.tolist(),
        "scores": None if scores is None else [float(v) for v in scores],
        "scores_note": "index-aligned with the decoded source set (class-contiguous, crop-major per class)",
        "storage_ipc": to_ipc,
    }
    soft = dec.soft_labels[sub] if dec.soft_labels is not None else None
    return replace(dec, images=dec.images[sub], labels=dec.labels[sub], soft_labels=soft, factor=1,
                   method=f"{cs.method}+{rule}", provenance=prov)


def describe_budget(cs: CondensedSet, to_ipc: int) -> str:
    """One line: how many decoded images a target IPC buys (IPC_T x factor^2 per class)."""
    return f"{to_ipc} IPC x factor {cs.factor}^2 = {to_ipc * cs.factor ** 2} decoded images per class"


__all__ = ["CCS_CUTOFF", "LBPE_DEFAULTS", "ccs_cutoff", "lbpe_defaults", "prepare_for_eval", "resolve_rule",
           "shrink"]

