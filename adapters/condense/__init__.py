"""Condensation adapters: DC, DSA, DM, IDC behind one :class:`Condenser` interface, with GoldFromOres
pre-pruning of the real data.

    from adapters.condense import create_condenser, PrePrune
    dm = create_condenser("dm")
    cs = dm.condense(real, ipc=10, config=dm.default_config(iterations=200),
                     pre_prune=PrePrune("LossInit_large", drop_ratio=0.5), seed=0)
"""

from adapters.condense import dc, dm, dsa, idc  # noqa: F401  (registration)
from adapters.condense.base import (
    CONDENSERS,
    CondenseConfig,
    CondenseContext,
    Condenser,
    create_condenser,
    list_condensers,
    register_condenser,
)
from adapters.condense.dc import DCConfig, get_loops, match_loss
from adapters.condense.dm import DMConfig
from adapters.condense.dsa import DSAConfig
from adapters.condense.goldfromores import PrePrune, compute_scores, drop_samples, select_drops
from adapters.condense.idc import IDCConfig

__all__ = [
    "CONDENSERS", "CondenseConfig", "CondenseContext", "Condenser", "DCConfig", "DMConfig", "DSAConfig",
    "IDCConfig", "PrePrune", "compute_scores", "create_condenser", "drop_samples", "get_loops", "list_condensers",
    "match_loss", "register_condenser", "select_drops",
]
