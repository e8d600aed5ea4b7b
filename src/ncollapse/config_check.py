"""The one checker of config tables (training configs, experiment parameters, UFM sweep grids).

Each error is one line naming the key: an unknown key or a name outside its registry gets a "did you mean"
hint (``difflib``), a value of the wrong type says what was expected and what came. Values come back in the
declared form (``int`` for an ``int`` key, a ``tuple`` for ``tuple[T, ...]``, a ``float`` for an integer
given to a ``float`` key). Standard library only.
"""

from __future__ import annotations

import difflib
import math
import typing
from collections.abc import Callable, Iterable

__all__ = ["hint", "check_keys", "check_choice", "check_type", "kind_of"]

_SCALARS = {dict: ("a table", dict), bool: ("true or false", bool), int: ("an integer", int),
            float: ("a number", (int, float)), str: ("a string", str)}


def hint(name, valid: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``valid``, else the list of valid names."""
    valid = [str(v) for v in valid]
    close = difflib.get_close_matches(str(name), valid, n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; valid: {', '.join(sorted(valid)) or 'none'}"


def check_keys(keys: Iterable[str], valid, describe: Callable[[str], str]) -> None:
    """A ``ValueError`` ``describe(key)`` + hint for the first of ``keys`` not in ``valid``."""
    for key in keys:
        if key not in valid:
            raise ValueError(f"{describe(key)}{hint(key, valid)}")


def check_choice(value, choices, key: str):
    """``value`` when it is one of ``choices`` (a tuple value: each item); else ``key == value, must be one of``."""
    if isinstance(value, tuple):
        for i, item in enumerate(value):
            check_choice(item, choices, f"{key}[{i}]")
        return value
    if value not in choices:
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        guess = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"{key} == {value!r}, must be one of {', '.join(map(str, choices))}{guess}")
    return value


def check_type(value, kind, key: str):
    """``value`` checked against the annotation ``kind`` (bool, int, float, str, dict, ``tuple[T, ...]``,
    ``list``: any list) and returned in that form."""
    if kind is list:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{key} must be a list; got {type(value).__name__} {value!r}")
        return list(value)
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{key} must be a list; got {type(value).__name__} {value!r}")
        return tuple(check_type(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if kind not in _SCALARS:
        raise TypeError(f"unsupported config type {kind!r} for {key}")  # pragma: no cover - programming error
    words, accepted = _SCALARS[kind]
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, accepted):
        raise TypeError(f"{key} must be {words}; got {type(value).__name__} {value!r}")
    if kind is float and math.isnan(value):
        raise ValueError(f"{key} is NaN, must be a number")
    return kind(value)


def kind_of(default):
    """The annotation ``check_type`` reads for a key declared by its default value (a list: of its first item's
    type, an empty list: any list)."""
    if isinstance(default, (list, tuple)):
        return tuple[kind_of(default[0]), ...] if default else list
    return type(default)
