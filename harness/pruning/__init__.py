"""Data pruning: scores (pure functions of dynamics), selection rules, named recipes, the coreset flow."""

from harness.pruning.recipes import Recipe, list_recipes, parse_recipe, select_with_recipe
from harness.pruning.scores import (
    SCORES,
    compute_score,
    create_score,
    get_score,
    list_scores,
    load_scores,
    register_score,
    save_scores,
)
from harness.pruning.select import RULES, Budget, list_rules, register_rule, select

__all__ = [
    "Budget", "RULES", "Recipe", "SCORES", "compute_score", "create_score", "get_score", "list_recipes",
    "list_rules", "list_scores", "load_scores", "parse_recipe", "register_rule", "register_score", "save_scores",
    "select", "select_with_recipe",
]
