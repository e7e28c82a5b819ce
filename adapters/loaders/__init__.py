"""Readers of published condensed-set formats, each into :class:`condensed.CondensedSet`.

Use :func:`load_published` or ``ddbench import``; the registry is :mod:`adapters.loaders.registry`.
"""

from adapters.loaders import hfhub, idc, imagefolder, krr, mtt, vico  # noqa: F401  (register their formats)
from adapters.loaders.registry import LOADERS, Loader, list_loaders, load_published, register_loader

__all__ = ["LOADERS", "Loader", "list_loaders", "load_published", "register_loader"]
