"""The training data stream: the order of a shuffled DataLoader, resumable, shared among ranks."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from probslot.training.data import ShardSampler, StreamBatchSampler


class _Indices(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def _take(sampler: StreamBatchSampler, count: int) -> list[list[int]]:
    return [list(b) for b in itertools.islice(iter(sampler), count)]


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_equals_a_shuffled_dataloader_epoch_after_epoch(workers: int) -> None:
    """The oracle: torch's DataLoader(shuffle=True, generator=seeded), iterated epoch by epoch,
    which is how probslot loaded training data before the stream (kept: same runs, same data)."""
    n, b, seed, epochs = 11, 3, 7, 3
    loader = DataLoader(
        _Indices(n),
        batch_size=b,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    want = [batch.tolist() for _ in range(epochs) for batch in loader]
    sampler = StreamBatchSampler(n, b, seed, fresh_iterator_per_epoch=workers == 0)
    assert _take(sampler, len(want)) == want
    assert len(want) == epochs * 4  # 11 images, batch 3: the last batch of each epoch has 2


def test_stream_resumes_at_any_batch() -> None:
    full = _take(StreamBatchSampler(13, 5, 2), 20)
    for start in (0, 1, 2, 3, 7, 11):
        assert _take(StreamBatchSampler(13, 5, 2, start=start), 20 - start) == full[start:]


def test_ranks_together_see_the_single_process_global_batches() -> None:
    n, b, world, seed = 24, 2, 3, 5
    single = _take(StreamBatchSampler(n, b * world, seed), 9)
    ranks = [
        _take(StreamBatchSampler(n, b, seed, rank=r, world_size=world, start=0), 9)
        for r in range(world)
    ]
    for step in range(9):
        assert sum((ranks[r][step] for r in range(world)), []) == single[step]
        assert all(len(ranks[r][step]) == b for r in range(world))


def test_several_ranks_drop_the_incomplete_global_batch_of_an_epoch() -> None:
    sampler = StreamBatchSampler(10, 2, 0, rank=1, world_size=2)  # global batch 4: 2 per epoch
    assert sampler.batches_per_epoch == 2
    one = StreamBatchSampler(10, 4, 0)
    assert one.batches_per_epoch == 3  # one process keeps the partial batch of 2
    epochs = one.epochs()
    first, second = next(epochs), next(epochs)
    got = _take(sampler, 4)
    assert got == [first[2:4], first[6:8], second[2:4], second[6:8]]


def test_stream_rejects_a_split_smaller_than_one_global_batch() -> None:
    with pytest.raises(ValueError, match=r"has 5 images, fewer than one global batch of 6"):
        StreamBatchSampler(5, 3, 0, rank=0, world_size=2)
    with pytest.raises(ValueError, match=r"rank must be an integer >= 0 and <= 1; got 2"):
        StreamBatchSampler(8, 1, 0, rank=2, world_size=2)


def test_shard_sampler_covers_every_image_once() -> None:
    shards = [list(ShardSampler(11, r, 3)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(11))
    assert [len(ShardSampler(11, r, 3)) for r in range(3)] == [4, 4, 3]
