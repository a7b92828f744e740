"""Name → factory registries, one per kind of component, with "did you mean" errors."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable
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

    def options(self, name: str) -> list[str] | None:
        """The keyword options the factory `name` accepts, or None when it takes ``**kwargs``."""
        params = inspect.signature(self.get(name)).parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return None
        return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    def check_options(self, name: str, options: Iterable[str], where: str = "") -> None:
        """Raise a ValueError naming the closest valid option for any option `name` does not take."""
        accepted = self.options(name)
        if accepted is None:
            return
        for key in options:
            if key not in accepted:
                raise ValueError(
                    f"unknown option {key!r} for {self.kind} {name!r}{where}."
                    f"{did_you_mean(key, accepted)} Accepted: {', '.join(accepted)}"
                )

    def build(self, name: str, **kwargs: Any) -> T:
        """The component `name` built with `kwargs` (unknown option names are a ValueError)."""
        self.check_options(name, kwargs)
        return self.get(name)(**kwargs)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.available())})"

    def available(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories
