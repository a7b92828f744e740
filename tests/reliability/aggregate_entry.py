"""Fit a run's aggregate posterior with every process of a torchrun job (gloo); rank 0 saves it.

Usage: ``torchrun --nproc_per_node=2 aggregate_entry.py RUN_DIR OUT.safetensors MAX_IMAGES BATCH``.
"""

from __future__ import annotations

import sys

import torch.distributed as dist

from probslot.data.config import build_split
from probslot.data.contract import collate
from probslot.io import load_model, load_run_config
from probslot.posterior import AggregatePosterior


def main(run_dir: str, out: str, max_images: int, batch_size: int) -> None:
    dist.init_process_group("gloo")
    model, cfg = load_model(run_dir), load_run_config(run_dir)
    posterior = AggregatePosterior.fit_distributed(
        model, build_split(cfg.data, "train"), batch_size=batch_size, collate_fn=collate,
        max_images=max_images, metadata={"split": "train"},
    )  # fmt: skip
    if dist.get_rank() == 0:
        posterior.save(out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
