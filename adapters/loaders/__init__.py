"""Readers of published condensed-set formats, each into :class:`condensed.CondensedSet`.

``LOADERS`` maps a format name to ``load(path, *, dataset, **options) -> list[CondensedSet]``
(a file may hold several experiments). Use :func:`load_published` or ``ddbench import``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from condensed import CondensedSet
from harness.registry import Registry

Loader = Callable[..., list[CondensedSet]]
LOADERS: Registry[Loader] = Registry("condensed-set format")


def register_loader(name: str):
    return LOADERS.register(name)


def list_loaders() -> list[str]:
    return LOADERS.names()


def load_published(fmt: str, path: str | Path, **options) -> list[CondensedSet]:
    return LOADERS.get(fmt)(Path(path), **options)


from adapters.loaders import (  # noqa: E402,F401  (register their formats)
    hfhub,
    idc,
    imagefolder,
    krr,
    mtt,
    vico,  # noqa: E402,F401  (registers "vico")
)

__all__ = ["LOADERS", "list_loaders", "load_published", "register_loader"]
