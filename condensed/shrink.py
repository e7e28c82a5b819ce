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
   samples, i.e. the **lowest** LBPE, when the target IPC is small). (stop_epoch, K) per source
   method: :data:`LBPE_DEFAULTS` (YOCO's values) or, where YOCO gives none, :data:`LBPE_FALLBACK`;
   the provenance's ``params.lbpe_source`` says which;
4. select with the balanced construction (rule 2): per class the ``IPC_T * factor^2`` decoded
   images with the lowest LBPE;
5. write the smaller set (decoded, factor 1) with provenance: source checksum, rule, parameters,
   scores (index-aligned with the decoded source), kept indices. Its recorded IPC (``meta.json``
   ``ipc``) is the requested IPC_T (``CondensedSet.ipc_budget``); ``class_counts`` beside it gives
   the decoded images kept per class (imbalanced rules keep unequal counts by design).

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
ccs             el2n, cut-off + 50 strata            --         imbalance
yoco            LBPE top-K                           easy       balance
==============  ==================================  =========  ==========

Imbalanced rules keep ``int(IPC_T / IPC_F * N)`` decoded images overall; balanced ones
``IPC_T * factor^2`` per class. CCS (Zheng et al., ICLR 2023) as YOCO runs it (``argument.py``
369-399, ``utils/img_loader.py`` 533-602, ``ccs/core/data/Coreset.py``): sort by EL2N high to low,
drop the first ``int(ratio * N)`` (the **highest** EL2N; ratio from YOCO's
``prune_score_ratio_config``, :data:`CCS_CUTOFF`), build 50 equal-width strata on the EL2N of the
rest, split the budget with CCS's ``bin_allocate`` and keep, in each stratum, its first members in
that descending order, i.e. the highest-EL2N ones whatever their class (``strata_random=True``:
uniformly at random, YOCO's ``--strata_fixed_select``). ``ccs_balance`` runs YOCO's balanced branch
(the same global cut, then strata and ``IPC_T * factor^2`` per class); YOCO's own ``argument.py``
rewrites ``ccs_*`` to the key ``el2n`` before reading the suffix, so its CLI never reaches that branch
and ``scripts/table5.sh`` has no CCS row. (CCS itself cuts the *lowest AUM* and samples at random
inside strata: recipe ``ccs`` of :mod:`harness.pruning.recipes`.) ``entropy`` follows CCS/YOCO's
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
from harness.dynamics import record_dynamics
from harness.engine.options import DEFAULT, EngineOptions
from harness.engine.protocol import create_protocol
from harness.engine.trainer import predict
from harness.errors import ConfigError
from harness.evaluate import model_input
from harness.models import embeddings
from harness.progress import EpochPhases, Progress, or_quiet
from harness.pruning.recipes import parse_recipe, select_with_recipe
from harness.pruning.scores import compute_score
from harness.pruning.select import Budget

# YOCO's (stop_epoch, K) for LBPE top-K by (source method, dataset), from generate_importance_score.py
# 74-129, the script that computes the LBPE_top{K} scores (argument.py 301-358 only reads them back).
# DSA: generate_importance_score.py forces stop_epoch 100 (K 3); argument.py says 10 (K 3), but there
# stop_epoch only names the score file it loads (data-score-ipc10-ep10.pickle, which the released generate
# script never writes: it writes ...-ep100.pickle), so the scores YOCO's code can compute use (100, 3).
# MTT / KIP / DSA: YOCO ran them on CIFAR-10 IPC 10 only. ImageNet = YOCO's ImageNet-10.
LBPE_DEFAULTS: dict[tuple[str, str], tuple[int, int]] = {
    ("IDC", "cifar10"): (100, 10), ("IDC", "cifar100"): (200, 10), ("IDC", "imagenet"): (200, 10),
    ("DREAM", "cifar10"): (200, 10), ("DREAM", "cifar100"): (200, 10),
    ("MTT", "cifar10"): (10, 3), ("KIP", "cifar10"): (50, 3), ("DSA", "cifar10"): (100, 3),
}
LBPE_SOURCE_YOCO = "YOCO generate_importance_score.py"
# ddbench's own choices where YOCO gives no value (recorded as such in the provenance's lbpe_source).
# DC and DM: YOCO's argparse defaults (--stop_epoch 100, --topk 10), the values ddbench has always used for
# them (the README's DC shrink results). (DSA's (100, 3) -- same code base, and YOCO's K is 3 for every
# factor-1 source -- would be the other defensible choice.)
LBPE_FALLBACK: dict[str, tuple[int, int]] = {"DC": (100, 10), "DM": (100, 10)}
LBPE_GENERIC = (100, 10)  # any other method: YOCO's argparse defaults
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
    if name != "ccs_yoco" and not name.startswith("ccs_yoco_"):
        for alias in sorted(RULE_ALIASES, key=len, reverse=True):  # YOCO's names, with any suffixes
            if name == alias or name.startswith(alias + "_"):
                name = RULE_ALIASES[alias] + name[len(alias):]
                break
    return parse_recipe(name)


def yoco_dataset(dataset: str) -> str:
    """The name YOCO's tables use for ``dataset``: variants (``cifar10-jpeg75``) map to their base, ImageNet
    subsets (imagenet*, imagenette, imagewoof) to ``imagenet``; anything else is returned unchanged."""
    d = dataset.lower()
    if d.startswith(("imagenet", "imagenette", "imagewoof")):
        return "imagenet"
    for base in ("cifar100", "cifar10"):  # cifar100 first: "cifar100".startswith("cifar10")
        if d == base or d.startswith(base + "-") or d.startswith(base + "_"):
            return base
    return d


def lbpe_choice(method: str, dataset: str) -> tuple[int, int, str]:
    """(stop_epoch, K, where they come from) for LBPE top-K on a set condensed by ``method`` on ``dataset``.

    YOCO's values (:data:`LBPE_DEFAULTS`) where it gives them; otherwise ddbench's own choice, said so:
    :data:`LBPE_FALLBACK` (DC, DM), the method's YOCO CIFAR-10 value for a dataset YOCO did not run, or
    :data:`LBPE_GENERIC`.
    """
    m, d = method.upper(), yoco_dataset(dataset)
    if (m, d) in LBPE_DEFAULTS:
        return (*LBPE_DEFAULTS[(m, d)], f"{LBPE_SOURCE_YOCO} ({m}, {d})")
    if m in LBPE_FALLBACK:
        return (*LBPE_FALLBACK[m], f"ddbench default (YOCO gives no value for {m}; YOCO's argparse defaults)")
    if (m, "cifar10") in LBPE_DEFAULTS:
        return (*LBPE_DEFAULTS[(m, "cifar10")],
                f"ddbench default (YOCO gives no value for {m} on {dataset}; its {m} CIFAR-10 values)")
    return (*LBPE_GENERIC, f"ddbench default (YOCO gives no value for {m}; YOCO's argparse defaults)")


def lbpe_defaults(method: str, dataset: str) -> tuple[int, int]:
    """(stop_epoch, K) for the source ``method`` and ``dataset`` (:func:`lbpe_choice` without the source)."""
    return lbpe_choice(method, dataset)[:2]


def ccs_cutoff(dataset: str, ipc_from: int, ipc_to: int) -> float:
    """YOCO's CCS hard cut-off ratio; 0.0 for grid points YOCO does not list."""
    return CCS_CUTOFF.get(yoco_dataset(dataset), {}).get((ipc_from, ipc_to), 0.0)


# --- dynamics ----------------------------------------------------------------------------------------
def record_runs(li: LabeledImages, protocol, *, runs: int, seed: int, device: str | torch.device = "cpu",
                options: EngineOptions | None = None, until_epoch: int | None = None,
                need_model: bool = True, progress: Progress | None = None
                ) -> tuple[list, torch.nn.Module | None, torch.Tensor]:
    """``runs`` dynamics runs (seeds ``seed + r``) on ``li`` with :func:`harness.dynamics.record_dynamics`;
    returns them, the last run's model (``need_model``; else None) and the set in its input space
    (:func:`harness.evaluate.model_input`). ``until_epoch``: record only the first epochs (the rows a score
    reads; they equal a full-length run's first rows under the same engine options)."""
    dyns, model = [], None
    with EpochPhases(progress, "dynamics", runs=runs) as cb:
        for r in range(runs):
            cb.next_run(r)
            if need_model:
                dyn, model = record_dynamics(li, protocol, seed=seed + r, device=device, options=options,
                                             return_model=True, progress=cb.epochs)
            else:
                dyn = record_dynamics(li, protocol, seed=seed + r, device=device, options=options,
                                      until_epoch=until_epoch, progress=cb.epochs)
            dyns.append(dyn)
    return dyns, model, model_input(li).to(device)


def epochs_read(recipe, *, stop_epoch: int, total_epochs: int) -> int | None:
    """How many epochs of a dynamics run (from the first) the shrink score of ``recipe`` reads: LBPE up to its
    stop epoch, YOCO's EL2N its first 10, other scores what they declare
    (:meth:`harness.pruning.recipes.Recipe.epochs_needed`); None when the rule needs the final model (entropy's
    eval pass, SSP's k-means) or every epoch."""
    if recipe.rule == "kmeans" or recipe.score == "entropy":
        return None
    if recipe.score == "lbpe":
        need = int(stop_epoch)
    elif recipe.score == "el2n":
        need = 10
    else:
        need = recipe.epochs_needed(total_epochs)
        if need is None:
            return None
    extra = recipe.epochs_needed(total_epochs) if recipe.rule == "stratified" else 0
    if extra is None:
        return None
    return min(max(need, extra, 1), int(total_epochs))


def _eval_logits(model: torch.nn.Module, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """The trained model's eval-mode logits on the un-augmented set (CCS/YOCO ``post_training_metrics``)."""
    return predict(model, x, batch).cpu()


def compute_rule_scores(recipe, dyns: list, model: torch.nn.Module | None, x: torch.Tensor | None, *,
                        stop_epoch: int, topk: int) -> np.ndarray | None:
    """Index-aligned scores for a recipe, averaged over the dynamics runs (YOCO averages three).

    - ``lbpe``: YOCO's LBPE top-K with (stop_epoch, K) of the source method;
    - ``el2n``: sum over epochs 0-9 (YOCO ``el2n = LBPE_0_10``);
    - ``entropy``: CCS/YOCO ``post_training_metrics``: the final model in eval mode on the
      un-augmented decoded images (not the last training epoch), from the last run's model;
    - anything else: :func:`harness.pruning.scores.compute_score` with the recipe's parameters.
    """
    score = recipe.score
    if score is None:
        return None
    if score == "lbpe":
        return compute_score("lbpe", dyns, stop_epoch=min(stop_epoch, dyns[0].epochs), k=topk)
    if score == "entropy":
        if model is None:
            raise ConfigError("entropy needs the trained model (do not pass precomputed dynamics)")
        logits = _eval_logits(model, x)
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
           ccs_ratio: float | None = None, strata_random: bool = False, dynamics: list | None = None,
           options: EngineOptions | None = None, progress: Progress | None = None) -> CondensedSet:
    """A smaller condensed set with ``to_ipc`` images per class worth of storage (YOCO flow, module doc).

    The result records ``to_ipc`` as its IPC (``ipc_budget``); its per-class counts are
    ``class_counts()`` (``to_ipc * factor^2`` each for balanced rules). ``epochs`` overrides the dynamics
    protocol's epochs (report it); ``dynamics`` reuses recorded runs (index-aligned with the decoded set)
    instead of training. ``ccs_ratio`` overrides YOCO's CCS cut-off; ``strata_random`` samples uniformly
    inside CCS strata (YOCO's ``--strata_fixed_select``) instead of YOCO's default, the highest-EL2N
    members. ``data_root``/``cache_dir`` are unused by the flow itself (dynamics need no real data) and
    kept for symmetry with evaluation. ``options``: how the dynamics runs execute (precision, compile;
    :class:`harness.engine.EngineOptions`), recorded in the provenance. SSP's k-means reads
    :func:`harness.models.embeddings` of the last run's model, as the coreset flow does. ``progress``: the
    display of the dynamics runs' epochs (:mod:`harness.progress`).

    Only the epochs the score reads are trained (:func:`epochs_read`: LBPE's stop epoch, EL2N's 10), unless the
    rule needs the final model; the recorded rows equal a full-length run's first rows, so the selection does
    too (``params.dynamics_epochs_recorded``).
    """
    options = options or DEFAULT
    recipe = resolve_rule(rule)
    ipc_from = cs.ipc
    counts = cs.class_counts()
    if to_ipc < 1 or to_ipc > ipc_from:
        raise ConfigError(f"target IPC {to_ipc} must be in [1, {ipc_from}] (the source's IPC)")
    if len(set(counts)) != 1:
        raise ConfigError(f"source set is not class-balanced (per-class counts {counts}); YOCO's IPC ratio "
                          "is undefined")
    dec = cs.decoded()
    li = dec.to_labeled()
    labels = li.labels.numpy()
    # decoded images per unit of IPC: factor^2 for a condensed set, more for an already shrunk (decoded) one
    per_ipc, rest = divmod(dec.class_counts()[0], ipc_from)
    if rest:
        raise ConfigError(f"source set holds {dec.class_counts()[0]} decoded images per class, not a multiple of "
                          f"its IPC {ipc_from}")
    per_class = to_ipc * per_ipc
    total = int(to_ipc / ipc_from * len(labels))
    budget = Budget.ipc(per_class) if recipe.balance else Budget.count(total)
    params: dict[str, Any] = {"to_ipc": to_ipc, "ipc_from": ipc_from, "factor": cs.factor, "per_class": per_class,
                              "total": total, "budget": str(budget), "seed": seed, "recipe": recipe.describe()}
    scores, features, opts = None, None, {}
    needs_model = recipe.rule == "kmeans" or recipe.score == "entropy"
    if recipe.score is not None or needs_model:
        st_def, k_def, source = lbpe_choice(cs.method, cs.dataset)
        for name, value in (("stop_epoch", stop_epoch), ("topk", topk), ("epochs", epochs)):
            if value is not None and value < 1:
                raise ConfigError(f"shrink: {name}={value}, expected a positive integer (or None for the default)")
        if stop_epoch is not None and topk is not None:
            source = "given by the caller"
        elif stop_epoch is not None or topk is not None:
            source = f"{'stop_epoch' if stop_epoch is not None else 'topk'} given by the caller; the other: {source}"
        stop_epoch = st_def if stop_epoch is None else stop_epoch
        topk = k_def if topk is None else topk
        proto = create_protocol(protocol, cs.dataset, **({"epochs": epochs} if epochs is not None else {}))
        params.update(protocol=proto.as_dict(), runs_dynamics=runs_dynamics)
        if dynamics is None:
            until = epochs_read(recipe, stop_epoch=stop_epoch, total_epochs=proto.total_epochs)
            params["engine"] = options.as_dict()
            params["dynamics_epochs_recorded"] = proto.total_epochs if until is None else until
            or_quiet(progress).note(
                f"shrink {rule}: {runs_dynamics} dynamics run(s) of {proto.name}, "
                + (f"the first {until} of {proto.total_epochs} epochs (all the score reads)" if until is not None
                   else f"all {proto.total_epochs} epochs (the rule needs the final model)"))
            dyns, model, x = record_runs(li, proto, runs=runs_dynamics, seed=seed, device=device, options=options,
                                         until_epoch=until, need_model=until is None, progress=progress)
            params["engine_ran"] = [d.meta.get("engine", []) for d in dyns]
        else:
            dyns, model, x = list(dynamics), None, None
            params["runs_dynamics"] = len(dyns)
        if needs_model and model is None:
            raise ConfigError(f"rule {rule}: needs the trained model; pass no precomputed dynamics")
        if recipe.score == "lbpe":
            params.update(stop_epoch=stop_epoch, topk=topk, stop_epoch_used=min(stop_epoch, dyns[0].epochs),
                          lbpe_source=source)
        if recipe.rule == "kmeans":
            features = embeddings(model, x)
        scores = compute_rule_scores(recipe, dyns, model, x, stop_epoch=stop_epoch, topk=topk)
        if recipe.rule == "stratified":
            opts["cutoff_ratio"] = ccs_ratio if ccs_ratio is not None else ccs_cutoff(cs.dataset, ipc_from, to_ipc)
            params["ccs_cutoff"] = opts["cutoff_ratio"]
            if strata_random:
                opts["within"] = "random"
            params["ccs_within"] = opts.get("within", recipe.rule_opts.get("within", "random"))
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
                   method=f"{cs.method}+{rule}", provenance=prov, ipc_budget=to_ipc)


def describe_budget(cs: CondensedSet, to_ipc: int) -> str:
    """One line: how many decoded images a target IPC buys (IPC_T x factor^2 per class)."""
    return f"{to_ipc} IPC x factor {cs.factor}^2 = {to_ipc * cs.factor ** 2} decoded images per class"


__all__ = ["CCS_CUTOFF", "LBPE_DEFAULTS", "LBPE_FALLBACK", "ccs_cutoff", "lbpe_choice", "lbpe_defaults",
           "prepare_for_eval", "resolve_rule", "shrink", "yoco_dataset"]

