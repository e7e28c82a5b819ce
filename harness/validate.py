"""Validation of user-given settings at the boundaries (CLI options, ``--param key=value``, table specs).

:func:`check_values` checks a mapping of overrides against a frozen config dataclass (``Protocol``,
a condenser config) or a function's keyword parameters (a score, a selection rule, a loader): every
key must be a field/parameter, every value must have the annotated type (``int``, ``float``,
``bool``, ``str``, ``tuple[float, ...]``, ``X | None`` ...) and lie in the range :data:`RANGES`
gives for its name. Floats must be finite. It returns the values coerced (``1`` -> ``1.0`` for a
float field, a list -> tuple for a tuple field) and raises :class:`ConfigError` naming the option,
the key and what was expected, so nothing is trained with ``lr="abc"`` or ``epochs=-2``.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from harness.errors import ConfigError
from harness.models import VICO_NAMES, list_models
from harness.registry import near_matches


@dataclass(frozen=True)
class Range:
    """A numeric interval; ``None`` ends are unbounded."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, v: float) -> bool:
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi))

    def describe(self) -> str:
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}" if self.lo is not None else "any"
        if self.lo is None:
            return f"{'<' if self.hi_open else '<='} {self.hi:g}"
        return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"


AT_LEAST_1 = Range(1)
NONNEG = Range(0)
POSITIVE = Range(0, lo_open=True)
UNIT = Range(0, 1)

# Ranges by field name, shared by Protocol (harness.train) and the condenser configs (adapters.condense).
# A name absent here only has to be finite. lr_img >= 0: IDC documents 0 as "the reference's tuned value".
RANGES: dict[str, Range] = {
    # Protocol
    "epochs": AT_LEAST_1, "batch_size": AT_LEAST_1, "runs": AT_LEAST_1, "test_batch": AT_LEAST_1,
    "lr": POSITIVE, "momentum": UNIT, "weight_decay": NONNEG, "gamma": POSITIVE, "eta_min": NONNEG,
    "cutmix_p": UNIT, "cutmix_beta": POSITIVE, "milestones": Range(0, 1, lo_open=True),
    # condenser configs
    "iterations": NONNEG, "lr_img": NONNEG, "momentum_img": UNIT, "batch_real": AT_LEAST_1,
    "checkpoint_every": AT_LEAST_1, "eval_every": NONNEG, "eval_epochs": AT_LEAST_1, "eval_runs": AT_LEAST_1,
    "val_fraction": Range(0, 1, True, True), "lr_net": POSITIVE, "batch_train": AT_LEAST_1,
    "outer_loop": AT_LEAST_1, "inner_loop": AT_LEAST_1, "bn_per_class": AT_LEAST_1, "factor": AT_LEAST_1,
    "batch_syn_max": AT_LEAST_1, "momentum_net": UNIT, "weight_decay_net": NONNEG, "n_data": NONNEG,
    "mix_p": UNIT,
}


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if isinstance(tp, type):
        return {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}.get(
            tp.__name__, tp.__name__)
    return str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, name: str, ranges: Mapping[str, Range]) -> Any:
    """``value`` as type ``tp`` or ValueError(what was expected)."""
    origin = typing.get_origin(tp)
    if tp is Any or tp is inspect.Parameter.empty:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, arg, name, ranges)
            except ValueError as e:
                errors.append(str(e))
        allowed = " or ".join(_type_name(a) for a in typing.get_args(tp))
        raise ValueError(errors[0] if len(errors) == 1 else f"expected {allowed}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ValueError(f"expected an integer, got {value!r}")
        return _in_range(value, name, ranges, "an integer")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {value!r}")
        return _in_range(float(value), name, ranges, "a number")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"expected a string, got {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"expected a list, got {value!r}")
        args = typing.get_args(tp)
        item = args[0] if args else Any
        if origin is tuple and args and (len(args) != 2 or args[1] is not Ellipsis):
            if len(args) != len(value):
                raise ValueError(f"expected a list of {len(args)} values, got {value!r}")
            return tuple(_coerce(v, a, name, ranges) for v, a in zip(value, args, strict=True))
        out = [_coerce(v, item, name, ranges) for v in value]
        return tuple(out) if origin is tuple else out
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ValueError(f"expected a mapping, got {value!r}")
        return dict(value)
    return value


def _in_range(value: Any, name: str, ranges: Mapping[str, Range], what: str) -> Any:
    r = ranges.get(name)
    if r is not None and value not in r:
        raise ValueError(f"expected {what} {r.describe()}, got {value!r}")
    return value


def _targets(target: Any, exclude: tuple[str, ...]) -> tuple[dict[str, Any], str]:
    """The settable names of ``target`` with their annotated types, and what to call it in messages."""
    if dataclasses.is_dataclass(target):
        cls = target if isinstance(target, type) else type(target)
        hints = typing.get_type_hints(cls)
        names = {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}
        label = cls.__name__
    else:
        fn = target
        try:
            hints = typing.get_type_hints(fn)
        except (NameError, TypeError):
            hints = {}
        sig = inspect.signature(fn)
        names = {k: hints.get(k, Any) for k, p in sig.parameters.items()
                 if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is not p.empty}
        label = getattr(fn, "__name__", str(fn))
    return {k: v for k, v in names.items() if k not in exclude}, label


def check_values(target: type | Callable[..., Any], values: Mapping[str, Any], option: str, *,
                 exclude: tuple[str, ...] = (), ranges: Mapping[str, Range] | None = None) -> dict[str, Any]:
    """``values`` checked and coerced against ``target``'s fields or keyword parameters.

    ``option`` names where the values came from (``--param``, ``spec.yaml:12 protocol_overrides``);
    raises :class:`ConfigError` ``"<option> <key>=<value>: expected ..."`` on the first bad entry.
    """
    known, _ = _targets(target, exclude)
    rng = RANGES if ranges is None else ranges
    out: dict[str, Any] = {}
    for k, v in values.items():
        if k not in known:
            raise ConfigError(f"{option} {k!r}: unknown key (known: {', '.join(sorted(known))})")
        try:
            out[k] = _coerce(v, known[k], k, rng)
        except ValueError as e:
            raise ConfigError(f"{option} {k}={v!r}: {e}") from None
    return out


def check_model_name(name: str, option: str = "--model") -> str:
    """``name`` if it is a ddbench model, a VICO alias or a timm model; else ConfigError with near matches."""
    import timm


    known = set(list_models()) | set(VICO_NAMES)
    if name in known or name in timm.list_models(name):
        return name
    near = near_matches(name, sorted(known))
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    raise ConfigError(f"{option} {name!r}: unknown model{hint} (see `ddbench models`; any timm model works too)")


__all__ = ["RANGES", "Range", "check_model_name", "check_values"]
