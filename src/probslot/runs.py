"""The data a run was trained on, or is evaluated on: one selection for every analysis command.

Every analysis (`probslot evaluate`, `aggregate`, `prune`, `compare`, and their Python functions)
selects its images the same way: a **split** of the run's own data config (``train``, ``val``,
``test``; rebuilt exactly as training built it, with the same seeds), at most **max_images** of
them, and **data overrides** — dotted ``data.*`` settings applied to the run's ``config.yaml``
before the split is built, e.g. ``data.num_test=1024`` (more test scenes),
``data.dataset_kwargs.min_distance=0`` (unconstrained placement) or ``data.root=STORE`` (a
converted store). On the command line they are bare arguments after the options, as for
``probslot train``::

    probslot evaluate runs/demo --max_images 1024 data.num_test=1024 data.dataset_kwargs.min_distance=0

In Python::

    import probslot.runs as runs
    loader = runs.split_loader("runs/demo", "test", overrides=["data.num_test=1024"])
    dataset = runs.load_split("runs/demo", "test")   # items of the dataset contract

Only ``data.*`` keys may be overridden: the model, optimiser and trainer of a run are what they
were trained with.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from probslot.config import RunConfig, apply_overrides, config_to_dict, parse_override
from probslot.validation import check_choice, check_positive_int

__all__ = ["SPLITS", "load_split", "run_config", "split_loader", "with_data_overrides"]

SPLITS = ("train", "val", "test")

Run = str | os.PathLike[str] | RunConfig


def with_data_overrides(cfg: RunConfig, overrides: Sequence[str] = ()) -> RunConfig:
    """`cfg` with dotted ``data.*`` overrides applied and validated (as `load_config` does).

    Raises:
        ValueError: an override names a section other than ``data``, or an unknown key (with
            the closest valid one), or a bad value.
    """
    if isinstance(overrides, str):
        overrides = [overrides]
    if not overrides:
        return cfg
    for text in overrides:
        parts, _ = parse_override(text)
        if parts[0] != "data" or len(parts) < 2:
            raise ValueError(
                f"an analysis selects its images with data.* overrides only (e.g. "
                f"data.num_test=1024, data.dataset_kwargs.min_distance=0, data.root=STORE); got "
                f"{text!r}. The run's model, optim and trainer sections are what it was trained with"
            )
    return RunConfig.from_dict(apply_overrides(config_to_dict(cfg), overrides))


def run_config(run: Run, overrides: Sequence[str] = ()) -> RunConfig:
    """The run's `RunConfig` (from a run directory's config.yaml, or as given) with data overrides."""
    if isinstance(run, RunConfig):
        cfg = run
    else:
        from probslot.io import load_run_config

        cfg = load_run_config(run)
    return with_data_overrides(cfg, overrides)


def load_split(run: Run, split: str = "test", overrides: Sequence[str] = ()) -> Any:
    """The dataset of `split` exactly as training built it (same seed derivation), after data
    overrides. Raises a ValueError naming the fix when the split is empty."""
    from probslot.data.config import build_split

    check_choice("split", split, SPLITS)
    cfg = run_config(run, overrides)
    size = {"train": cfg.data.num_train, "val": cfg.data.num_val, "test": cfg.data.num_test}[split]
    if size == 0:
        raise ValueError(
            f"the run's {split} split is empty (data.num_{split} = 0 in its config.yaml); choose "
            f"another split or add data.num_{split}=N"
        )
    return build_split(cfg.data, split)


def split_loader(
    run: Run,
    split: str = "test",
    *,
    batch_size: int | None = None,
    overrides: Sequence[str] = (),
    max_images: int | None = None,
) -> Any:
    """An unshuffled DataLoader over `split` (see `load_split`), batches of the dataset contract
    (``image`` (b, 3, H, W) in [0, 1], ``mask``, ``num_objects``, ...), at most `max_images`."""
    from torch.utils.data import DataLoader, Subset

    from probslot.data.contract import collate

    cfg = run_config(run, overrides)
    dataset = load_split(cfg, split)
    if max_images is not None:
        check_positive_int("max_images", max_images)
        if max_images > len(dataset):
            raise ValueError(
                f"max_images={max_images} asks for more images than the {split!r} split holds "
                f"({len(dataset)}); pass --max_images <= {len(dataset)} or add "
                f"data.num_{split}={max_images}"
            )
        dataset = Subset(dataset, range(max_images))
    size = batch_size if batch_size is not None else cfg.data.batch_size
    check_positive_int("batch_size", size)
    return DataLoader(dataset, batch_size=size, shuffle=False, collate_fn=collate)
