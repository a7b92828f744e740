"""Rendering speed of the built-in sprites (issue 3 target: >= 1,000 images/s on one core at 64×64).

Run: ``.venv/bin/python benchmarks/bench_data.py [--n 2000]``. Prints one table from one run:
items/s for each setting, by CPU time of this (single-threaded) process and by wall clock, and
the CPU-time rate's ratio to the 1,000 images/s target. On a shared machine the wall-clock rate
drops with other load; the CPU-time rate is the one-core figure.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from probslot.data import SpritesDataset, Toy2DDataset  # noqa: E402

TARGET = 1000.0


def _rate(fn, n: int) -> tuple[float, float]:
    """(items per CPU second, items per wall-clock second)."""
    fn(0, min(n, 50))  # warm-up (caches, imports)
    cpu, wall = time.process_time(), time.perf_counter()
    fn(0, n)
    return n / (time.process_time() - cpu), n / (time.perf_counter() - wall)


def _items(ds):
    def run(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            ds[i]

    return run


def _batches(ds, batch: int = 64):
    def run(lo: int, hi: int) -> None:
        for s in range(lo, hi, batch):
            ds.render_batch(range(s, min(s + batch, hi)))

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000, help="images per setting")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n = args.n
    rows = []
    for label, kwargs in [
        ("64x64, 1-4 objects (default)", {}),
        ("64x64, supersample=2", {"supersample": 2}),
        ("64x64, 4 objects, min_distance=0.2", {"min_objects": 4, "min_distance": 0.2}),
        ("64x64, 6 objects", {"min_objects": 6, "max_objects": 6}),
        ("32x32, 1-4 objects", {"image_size": 32}),
        ("16x16, 1-4 objects", {"image_size": 16}),
        ("128x128, 1-4 objects", {"image_size": 128}),
    ]:
        ds = SpritesDataset(n + 50, **kwargs)
        rows.append((f"sprites {label}, per item", _rate(_items(ds), n)))
        if not kwargs:
            rows.append((f"sprites {label}, render_batch(64)", _rate(_batches(ds), n)))
    toy = Toy2DDataset(n + 50)
    rows.append(("toy2d 3x128 points, per item", _rate(_items(toy), n)))
    width = max(len(r[0]) for r in rows)
    print(f"{'setting':<{width}}  {'items/s CPU':>11}  {'items/s wall':>12}  {'CPU / target':>12}")
    for label, (cpu, wall) in rows:
        print(f"{label:<{width}}  {cpu:>11.0f}  {wall:>12.0f}  {cpu / TARGET:>12.2f}")


if __name__ == "__main__":
    main()
