"""The condensed-set artifact: :class:`CondensedSet`, its on-disk format, multi-formation decode."""

from condensed.decode import decode_multiformation
from condensed.prepare import prepare_for_eval
from condensed.set import CondensedSet, load_condensed, save_condensed

__all__ = ["CondensedSet", "decode_multiformation", "load_condensed", "prepare_for_eval", "save_condensed"]
