"""Whether an object still computes what the library defined.

A backend runs its own compiled version of a built-in activation, optimizer
or layer only while that object is the library's definition: its class and
every base as their module left them (no method replaced, added or deleted
on the class, as a notebook's ``SGD.update = ...`` would), and no callable
of its own on the instance. Anything else runs its own Python code.
"""

from __future__ import annotations

from typing import Any

__all__ = ["record", "as_defined"]

_DEFINED: dict[type, dict[str, Any]] = {}


def record(*classes: type) -> None:
    """Remember these classes (and their bases) as their module defined them; call at import."""
    for cls in classes:
        for c in cls.__mro__[:-1]:
            _DEFINED.setdefault(c, dict(vars(c)))


def as_defined(obj: Any, *, instance: bool = True) -> bool:
    """Whether `obj`'s class is a recorded one, unchanged since, and (with `instance`) the
    instance holds no callable of its own."""
    for c in type(obj).__mro__[:-1]:
        if vars(c) != _DEFINED.get(c):  # an attribute replaced, added or removed; or never recorded
            return False
    return not instance or not any(callable(value) for value in vars(obj).values())
