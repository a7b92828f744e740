"""Training data order: one endless, seeded stream of batches that can resume at any batch and
be shared among processes.

Training is bounded by steps, not epochs, so the training loader is one endless stream:
epoch after epoch of the training split, each epoch a fresh permutation drawn from one
``torch.Generator`` seeded with ``data.seed``. With one process the stream is, batch for batch,
what ``DataLoader(shuffle=True, generator=torch.Generator().manual_seed(seed))`` gives when it
is iterated epoch after epoch (the generator is advanced exactly as that loader advances it; a
test compares the two), so runs of earlier probslot versions keep their data order.

* **Resume**: :class:`StreamBatchSampler` starts at global batch ``start``; a resumed run passes
  the number of batches it had trained on (saved in the checkpoint), so it sees the batches an
  uninterrupted run would have seen, not the start of an epoch again.
* **Several processes** (DDP): the stream is cut into *global* batches of ``batch_size ×
  world_size`` images and process ``r`` takes the ``r``-th slice of each. The processes together
  see exactly the batches one process with the global batch size sees, so averaging their
  gradients gives the single-process gradient. Each epoch's last incomplete global batch is
  dropped when there are several processes (every process must step on the same number of
  images); with one process it is kept, as before.
* **Validation**: in order; under DDP :class:`ShardSampler` gives process ``r`` the images
  ``r, r + W, r + 2W, ...`` without padding, so every image counts once in the synchronised
  figures.
* No loader draws from the global random generator (each has its own ``torch.Generator``), so
  creating one at resume time does not shift the random stream of the slot initialisations.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Sampler

from probslot.data.contract import collate
from probslot.data.datamodule import SlotDataModule
from probslot.validation import check_int

__all__ = ["ShardSampler", "StreamBatchSampler", "TrainingDataModule"]


class StreamBatchSampler(Sampler[list[int]]):
    """Endless batches of dataset indices: seeded epoch permutations, cut into global batches.

    Args:
        size:        images in the training split (>= 1).
        batch_size:  images per process per step.
        seed:        seed of the permutation generator (``data.seed``).
        rank, world_size: this process and the number of processes.
        start:       the first global batch to yield (batches already trained on).
        fresh_iterator_per_epoch: advance the generator once more per epoch, as a
                     ``DataLoader`` without persistent workers does when it draws a new
                     iterator's base seed (True: ``num_workers == 0``).
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
        fresh_iterator_per_epoch: bool = True,
    ) -> None:
        self.size = check_int("size", size, low=1)
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.seed = check_int("seed", seed)
        self.world_size = check_int("world_size", world_size, low=1)
        self.rank = check_int("rank", rank, low=0, high=self.world_size - 1)
        self.start = check_int("start", start, low=0)
        self.fresh_iterator_per_epoch = fresh_iterator_per_epoch
        self.global_batch = self.batch_size * self.world_size
        if self.world_size > 1 and self.size < self.global_batch:
            raise ValueError(
                f"the training split has {self.size} images, fewer than one global batch of "
                f"{self.global_batch} (data.batch_size {self.batch_size} × {self.world_size} "
                "processes); lower data.batch_size or use more training images"
            )

    @property
    def batches_per_epoch(self) -> int:
        """Global batches per pass over the split (the last one partial with one process)."""
        if self.world_size == 1:
            return math.ceil(self.size / self.global_batch)
        return self.size // self.global_batch

    def epochs(self) -> Iterator[list[int]]:
        """The endless sequence of epoch permutations (as lists of indices)."""
        generator = torch.Generator().manual_seed(self.seed)
        first = True
        while True:
            if first or self.fresh_iterator_per_epoch:
                # the base seed a new DataLoader iterator draws from the loader's generator
                # (persistent workers keep their iterator, so only the first epoch draws one)
                torch.empty((), dtype=torch.int64).random_(generator=generator)
                first = False
            order = torch.randperm(self.size, generator=generator).tolist()
            # RandomSampler draws one more permutation for its (empty) remainder
            torch.randperm(self.size, generator=generator)
            yield order

    def __iter__(self) -> Iterator[list[int]]:
        per_epoch = self.batches_per_epoch
        skip = self.start
        b, g = self.batch_size, self.global_batch
        for order in self.epochs():
            if skip >= per_epoch:
                skip -= per_epoch
                continue
            for j in range(skip, per_epoch):
                batch = order[j * g : (j + 1) * g]  # one global batch
                yield batch if self.world_size == 1 else batch[self.rank * b : (self.rank + 1) * b]
            skip = 0


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, ...`` of a dataset of `size` items (no padding)."""

    def __init__(self, size: int, rank: int, world_size: int) -> None:
        self.size = check_int("size", size, low=0)
        self.world_size = check_int("world_size", world_size, low=1)
        self.rank = check_int("rank", rank, low=0, high=self.world_size - 1)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.size, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.world_size))


class TrainingDataModule(SlotDataModule):
    """The `SlotDataModule` with the training stream above and, under DDP, sharded validation.

    The training loader starts at the batch the attached Lightning module has trained on
    (``batches_seen``, restored from the checkpoint before Lightning asks for the loader).
    Set ``use_distributed_sampler=False`` on the trainer: the sharding is done here.
    """

    def _place(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def train_dataloader(self) -> DataLoader:
        rank, world = self._place()
        dataset = self.build_split("train")
        module = self.trainer.lightning_module if self.trainer is not None else None
        start = int(getattr(module, "batches_seen", 0))
        workers = self.cfg.num_workers
        sampler = StreamBatchSampler(
            len(dataset),
            self.cfg.batch_size,
            self.cfg.seed,
            rank=rank,
            world_size=world,
            start=start,
            fresh_iterator_per_epoch=workers == 0,
        )
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=workers,
            collate_fn=collate,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=workers > 0,
            # the loader's own generator (worker seeds), so that no draw touches the global RNG
            generator=torch.Generator().manual_seed(self.cfg.seed),
        )

    def val_dataloader(self) -> DataLoader:
        rank, world = self._place()
        dataset = self.build_split("val")
        return DataLoader(
            dataset,
            batch_size=self.cfg.batch_size,
            sampler=ShardSampler(len(dataset), rank, world),
            num_workers=self.cfg.num_workers,
            collate_fn=collate,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.cfg.num_workers > 0,
            # a new iterator draws a base seed from this generator, not from the global RNG,
            # which training's random slot initialisations (and exact resume) depend on
            generator=torch.Generator().manual_seed(self.cfg.seed),
        )
