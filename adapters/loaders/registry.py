"""The registry of published condensed-set formats: ``register_loader`` / ``list_loaders`` / ``load_published``.

``LOADERS`` maps a format name to ``load(path, *, dataset, **options) -> list[CondensedSet]`` (a file may hold
several experiments). Each format module registers itself here; :mod:`adapters.loaders` imports them all.
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
