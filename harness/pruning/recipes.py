"""Recipes: named score + selection-rule pairs, with YOCO's suffix grammar.

``parse_recipe("forgetting_easy_balance")`` = base recipe ``forgetting`` with ``_easy`` (keep the easy
end) and ``_balance`` (select per class). Suffixes: ``_hard``/``_easy`` (rank recipes only),
``_balance``/``_imbalance`` (random, rank, ssp and ccs recipes). GoldFromOres criteria name the end that is
DROPPED, ranking within each class: ``LossInit_large`` drops the largest early losses (keeps the small
end), ``LossConverge_small`` drops the smallest converged losses.

Defaults follow the reference code (``shared/reference/pruning-scores.md`` §2 "Switches", §3):

========================  =====================================================================
``random``                uniform, imbalanced (``random_balance``: per class)
``forgetting``            forgetting events (never-learned = 0), keep hard, imbalanced
``el2n``                  EL2N summed over epochs 0-9, keep hard, imbalanced
``aum``                   accumulated probability margin (sum over all epochs), keep hard (= low)
``entropy``               last-epoch training entropy, keep hard, imbalanced
``loss``                  last-epoch loss, keep hard, imbalanced
``ssp``                   k-means prototypes, one global k-means (``ssp_balance``: per class)
``ccs``                   CCS: strata on AUM, cut-off of the lowest-AUM samples (cutoff_ratio
                          from the CCS README: 0.3 at >= 90 % pruning, 0.2 at >= 80 %, else 0);
                          ``ccs_balance``: the same inside each class
``ccs_yoco``              YOCO's CCS: strata on EL2N, cut-off of the highest EL2N, in each stratum the
                          k highest-EL2N samples (YOCO's first-k in its descending-EL2N order);
                          ``ccs_yoco_balance``: one global cut-off, then strata and budget per class
                          (YOCO ``img_loader.py``'s balanced branch)
``tdds``                  TDDS (T 30, J 10, beta 0.9; README example), keep the highest
``dual``                  DUAL (T 30, J 10) with Beta sampling, c_d 4 (CIFAR README)
``dynunc``                Dyn-Unc over all epochs, keep the highest
``yoco``                  LBPE top-10 epochs, keep easy, balanced (``yoco_imbalance``)
``LossInit_{large,small}``, ``LossConverge_{large,small}``: GoldFromOres drop criteria (scores
                          ``loss_init`` / ``loss_converge``, rule ``drop_per_class``: int(r * n_c) per
                          class; the same definitions as ``ddbench condense --drop-criterion``)
========================  =====================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import numpy as np

from harness.dynamics import Dynamics
from harness.errors import ConfigError
from harness.pruning import goldfromores as _gfo  # noqa: F401  (registers the drop_per_class rule)
from harness.pruning import scores as S
from harness.pruning import select as R
from harness.registry import Registry, UnknownNameError, near_matches


def _frozen(d: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class Recipe:
    name: str
    score: str | None  # a registered score, or None (random)
    rule: str  # a registered selection rule
    keep: str | None = None  # "hard" | "easy" for rank rules
    balance: bool = False
    score_params: Mapping[str, Any] = field(default_factory=lambda: _frozen(None))
    rule_opts: Mapping[str, Any] = field(default_factory=lambda: _frozen(None))
    suffixes: tuple[str, ...] = ("easy", "hard", "balance", "imbalance")
    doc: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "score_params", _frozen(self.score_params))
        object.__setattr__(self, "rule_opts", _frozen(self.rule_opts))

    @property
    def direction(self) -> str:
        return S.get_score(self.score).direction if self.score else "high_hard"

    def with_(self, *, score_params: Mapping | None = None, rule_opts: Mapping | None = None, **kw) -> Recipe:
        sp = {**self.score_params, **(score_params or {})}
        ro = {**self.rule_opts, **(rule_opts or {})}
        return replace(self, score_params=sp, rule_opts=ro, **kw)

    def epochs_needed(self, total_epochs: int | None = None) -> int | None:
        """Epochs of a dynamics run (from its first) this recipe reads: its score's
        (:meth:`harness.pruning.scores.ScoreSpec.epochs_needed` with the recipe's parameters) and its rule's
        (:data:`RULE_EPOCHS`), the larger; None when either needs all epochs or the final model; 0 when it
        reads no dynamics at all (``random``)."""
        parts = []
        if self.score:
            parts.append(S.get_score(self.score).epochs_needed(self.score_params, total_epochs))
        rule = RULE_EPOCHS.get(self.rule)
        if rule is not None:
            parts.append(rule(self))
        if any(p is None for p in parts):
            return None
        out = max(parts, default=0)
        return min(out, int(total_epochs)) if total_epochs is not None else out

    def describe(self) -> str:
        parts = [self.name, f"score={self.score or '-'}{dict(self.score_params) or ''}", f"rule={self.rule}"]
        if self.keep:
            parts.append(f"keep {self.keep}")
        parts.append("balanced" if self.balance else "imbalanced")
        if self.rule_opts:
            parts.append(str(dict(self.rule_opts)))
        return ", ".join(parts)


RECIPES: Registry[Recipe] = Registry("recipe")


def _cutoff_epochs(r: Recipe) -> int | None:
    key = r.rule_opts.get("cutoff_score")
    return 0 if key is None else S.get_score(str(key)).epochs_needed()


# What a selection rule reads from the dynamics run besides the recipe's scores, in epochs from the first (None: all
# of them, or the final model). Rules not listed read nothing more.
RULE_EPOCHS: Mapping[str, Callable[[Recipe], int | None]] = MappingProxyType({
    "kmeans": lambda r: None,  # SSP: k-means on the final model's embeddings
    "beta": lambda r: int(r.score_params.get("T", 30)),  # DUAL's mu: mean target probability over the first T epochs
    "stratified": _cutoff_epochs,  # CCS: the cut-off score (AUM: all epochs; YOCO's EL2N: 10)
})


def register_recipe(recipe: Recipe) -> Recipe:
    return RECIPES.register(recipe.name, recipe)


_RANK = ("easy", "hard", "balance", "imbalance")
_BAL = ("balance", "imbalance")
for _r in (
    Recipe("random", None, "random", suffixes=_BAL, doc="uniform random"),
    Recipe("forgetting", "forgetting", "rank", keep="hard", doc="Toneva forgetting events (CCS counting)"),
    Recipe("el2n", "el2n", "rank", keep="hard", doc="EL2N summed over epochs 0-9 (CCS/YOCO)"),
    Recipe("aum", "aum", "rank", keep="hard", doc="accumulated probability margin (CCS); hard = low"),
    Recipe("entropy", "entropy", "rank", keep="hard", doc="last-epoch training entropy"),
    Recipe("loss", "loss", "rank", keep="hard", doc="last-epoch training loss"),
    Recipe("tdds", "tdds", "rank", keep="hard", doc="TDDS T=30 J=10 beta=0.9, keep highest"),
    Recipe("dynunc", "dynunc", "rank", keep="hard", doc="Dyn-Unc, keep highest"),
    Recipe("yoco", "lbpe", "rank", keep="easy", balance=True, score_params={"k": 10},
           doc="YOCO: LBPE top-10 epochs, keep the easy end per class"),
    Recipe("lbpe", "lbpe", "rank", keep="easy", balance=True, score_params={"k": 10}, doc="alias of yoco"),
    Recipe("ssp", None, "kmeans", suffixes=_BAL, doc="k-means prototypes on features (YOCO's SSP)"),
    Recipe("ccs", "aum", "stratified", suffixes=_BAL, rule_opts={"cutoff_ratio": "auto", "cutoff_score": "aum"},
           doc="CCS: 50 strata on AUM after cutting the lowest-AUM samples"),
    Recipe("ccs_yoco", "el2n", "stratified", suffixes=_BAL,
           rule_opts={"cutoff_ratio": 0.0, "within": "hard_first", "cutoff_score": "el2n", "cutoff_scope": "global"},
           doc="YOCO's CCS: strata on EL2N, cut-off of the highest EL2N (set cutoff_ratio), the highest-EL2N "
               "k in each stratum (within='random': YOCO's --strata_fixed_select)"),
    Recipe("dual", "dual", "beta", suffixes=(), score_params={"T": 30, "J": 10}, rule_opts={"c_d": 4.0},
           doc="DUAL score with Beta sampling"),
):
    register_recipe(_r)
for _base, _score in (("LossInit", "loss_init"), ("LossConverge", "loss_converge")):
    for _end in ("large", "small"):  # the end that is DROPPED, int(r * n_c) per class (GoldFromOres drop.py)
        register_recipe(Recipe(f"{_base}_{_end}", _score, "drop_per_class", balance=True, suffixes=(),
                               rule_opts={"order": _end}, doc=f"GoldFromOres {_base}: drop the {_end} end per class"))


def list_recipes(expanded: bool = False) -> list[str]:
    """Base recipe names; ``expanded`` also lists every valid suffix combination."""
    names = RECIPES.names()
    if not expanded:
        return names
    out = set(names)
    for n in names:
        r = RECIPES.get(n)
        ends = [s for s in r.suffixes if s in ("easy", "hard")]
        bals = [s for s in r.suffixes if s in _BAL]
        for e in ["", *ends]:
            for b in ["", *bals]:
                out.add("_".join(x for x in (n, e, b) if x))
    return sorted(out)


def parse_recipe(name: str | Recipe) -> Recipe:
    """A recipe from its name with YOCO suffixes (``el2n_easy_balance``); unknown names list near matches."""
    if isinstance(name, Recipe):
        return name
    if name in RECIPES:
        return RECIPES.get(name)
    bases = sorted((b for b in RECIPES.names() if name.startswith(b + "_")), key=len, reverse=True)
    for base in bases:
        r = RECIPES.get(base)
        tokens = name[len(base) + 1:].split("_")
        if not all(t in r.suffixes for t in tokens) or len(set(tokens)) != len(tokens):
            continue
        ends = [t for t in tokens if t in ("easy", "hard")]
        bals = [t for t in tokens if t in _BAL]
        if len(ends) > 1 or len(bals) > 1:
            raise ConfigError(f"recipe {name!r}: conflicting suffixes {tokens}")
        kw: dict[str, Any] = {"name": name}
        if ends:
            kw["keep"] = ends[0]
        if bals:
            kw["balance"] = bals[0] == "balance"
        return replace(r, **kw)
    near = near_matches(name, list_recipes(expanded=True))
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    raise UnknownNameError(f"unknown recipe {name!r}{hint} (base recipes: {', '.join(RECIPES.names())}; "
                           f"suffixes _easy/_hard/_balance/_imbalance)")


def ccs_auto_cutoff(prune_rate: float) -> float:
    """Hard cut-off ratio from the CCS README examples: 0.3 at >= 90 % pruning, 0.2 at >= 80 %, else 0."""
    if prune_rate >= 0.9 - 1e-9:
        return 0.3
    if prune_rate >= 0.8 - 1e-9:
        return 0.2
    return 0.0


def recipe_scores(recipe: str | Recipe, dyn) -> np.ndarray | None:
    r = parse_recipe(recipe)
    return S.compute_score(r.score, dyn, **r.score_params) if r.score else None


def select_with_recipe(recipe: str | Recipe, dyn_or_scores, labels, budget: R.Budget, *, seed: int,
                       features=None, num_classes: int | None = None, **rule_opts) -> np.ndarray:
    """Kept indices (sorted) for ``recipe``. ``dyn_or_scores``: a Dynamics (scores computed here), a
    :class:`harness.pruning.scores.FinalEval` (for scores of the final model, ``LossConverge_*``), an
    index-aligned score array, or None for recipes without a score (random, ssp).

    From a bare score array, ``ccs`` uses the same scores for its cut-off (pass ``cutoff_scores=`` for
    AUM), and ``dual`` needs ``mu=`` (mean target probability over the first 30 epochs).
    """

    r = parse_recipe(recipe)
    dyn = dyn_or_scores if isinstance(dyn_or_scores, (Dynamics, S.FinalEval, list, tuple)) else None
    if labels is None:
        if dyn is None:
            raise ConfigError("labels are needed when selecting from a score array")
        labels = (dyn[0] if isinstance(dyn, (list, tuple)) else dyn).labels
    labels = np.asarray(labels, np.int64)
    if dyn is not None:
        scores = recipe_scores(r, dyn)
    else:
        scores = None if dyn_or_scores is None else np.asarray(dyn_or_scores, np.float64)
        if r.score and scores is None:
            raise ConfigError(f"recipe {r.name} needs {r.score} scores or dynamics")
    opts = {**r.rule_opts, **rule_opts}
    if r.rule == "rank":
        opts.setdefault("keep", r.keep or "hard")
        opts.setdefault("direction", r.direction)
        opts.setdefault("balance", r.balance)
    elif r.rule in ("random", "kmeans"):
        opts.setdefault("balance", r.balance)
        if r.rule == "kmeans":
            opts.setdefault("features", features)
    elif r.rule == "stratified":
        opts.setdefault("direction", r.direction)
        opts.setdefault("balance", r.balance)
        key = opts.pop("cutoff_score", None)
        if opts.get("cutoff_ratio") == "auto":
            n = labels.size
            opts["cutoff_ratio"] = ccs_auto_cutoff(1 - budget.total(n, num_classes or int(labels.max()) + 1) / n)
        if opts.get("cutoff_scores") is None and key is not None:
            if dyn is not None:
                opts["cutoff_scores"] = S.compute_score(key, dyn)
            opts.setdefault("cutoff_direction", S.get_score(key).direction)
    elif r.rule == "beta":
        if opts.get("mu") is None and dyn is not None:
            opts["mu"] = S.mean_target_prob(dyn, epochs=int(r.score_params.get("T", 30)))
    if num_classes is not None:
        opts["num_classes"] = num_classes
    return R.select(r.rule, scores, labels, budget, seed=seed, **opts)
