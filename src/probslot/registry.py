"""Name → factory registries, one per kind of component, with "did you mean" errors."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

__all__ = ["Registry", "closest", "did_you_mean"]


def closest(name: str, choices: list[str]) -> str | None:
    """The valid choice nearest to `name`, or None when nothing is close."""
    matches = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return matches[0] if matches else None


def did_you_mean(name: str, choices: list[str]) -> str:
    """`` Did you mean 'x'?`` for the closest valid choice, or "" when nothing is close."""
    hint = closest(str(name), list(choices))
    return f" Did you mean {hint!r}?" if hint else ""


class Registry(Generic[T]):
    """A mapping from names to factories for one kind of component (encoder, grouping, ...).

    >>> ENCODERS = Registry("encoder")
    >>> @ENCODERS.register("cnn")
    ... class CNN: ...
    >>> ENCODERS.available()
    ['cnn']
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._factories[name] = factory
            return factory

        return decorator

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._factories:
            names = self.available()
            suggestion = did_you_mean(name, names)
            raise ValueError(
                f"unknown {self.kind} {name!r}.{suggestion} Available: {', '.join(names)}"
            )
        return self._factories[name]

    def build(self, name: str, **kwargs: Any) -> T:
        return self.get(name)(**kwargs)

    def available(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories
