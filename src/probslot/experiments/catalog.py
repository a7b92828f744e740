"""Every study, registered: import this module (not the study modules one by one) to look one up."""

from __future__ import annotations

from probslot.experiments import (  # noqa: F401  (each registers its study)
    injectivity,
    pruning,
    real,
    sprites,
    stability,
    toy2d,
    tradeoff,
)
from probslot.experiments.study import STUDIES, Study
from probslot.registry import did_you_mean

__all__ = ["STUDIES", "get_study"]


def get_study(name: str) -> Study:
    """The registered study `name`; a ValueError with a did-you-mean otherwise."""
    if not isinstance(name, str) or name not in STUDIES:
        names = sorted(STUDIES)
        raise ValueError(
            f"unknown study {name!r}.{did_you_mean(str(name), names)} Studies: {', '.join(names)}"
        )
    return STUDIES[name]
