"""Samplers: repeat-factor sampling (LVIS) and aspect-ratio-grouped batches.

Shapes: I images in the dataset.

Both work per rank under distributed training. :class:`RepeatFactorSampler` shards its own
epoch list (give it ``rank``/``world_size``, or let it ask ``torch.distributed``);
:class:`GroupedBatchSampler` wraps any sampler, e.g. a ``DistributedSampler``, and yields the
same number of batches on every rank whenever the ranks' samplers have the same length (which
``DistributedSampler`` and :class:`RepeatFactorSampler` guarantee), so no rank waits for another
at the end of an epoch.

Typical training loader::

    sampler = DistributedSampler(dataset)            # or RepeatFactorSampler(...) for LVIS
    groups = aspect_ratio_groups(dataset.aspect_ratios())
    batches = GroupedBatchSampler(sampler, groups, batch_size=2)
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate)
    for epoch in range(epochs):
        batches.set_epoch(epoch)                     # reshuffles the wrapped sampler
"""
from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


def repeat_factors(labels_per_image: Sequence[Collection[int]], threshold: float = 1e-3) -> torch.Tensor:
    """Per-image repeat factors (I,) float64 of repeat-factor sampling (Gupta et al., LVIS, 2019).

    For a category ``c`` seen in a fraction ``f(c)`` of the images, ``r(c) = max(1,
    sqrt(threshold / f(c)))``; an image repeats ``max`` of ``r(c)`` over its categories, and 1
    when it has none. Categories in at least ``threshold`` of the images are never repeated,
    rarer ones are, the more the rarer. ``labels_per_image`` is e.g.
    ``CocoDetection.labels_per_image()``; only presence counts, not the number of instances.
    """
    if threshold <= 0:
        raise ValueError(f"repeat-factor threshold must be positive, got {threshold}")
    num_images = len(labels_per_image)
    images_with: dict[int, int] = {}
    for labels in labels_per_image:
        for label in set(labels):
            images_with[label] = images_with.get(label, 0) + 1
    category_factor = {
        label: max(1.0, math.sqrt(threshold / (count / num_images))) for label, count in images_with.items()
    }
    return torch.tensor(
        [max((category_factor[c] for c in set(labels)), default=1.0) for labels in labels_per_image],
        dtype=torch.float64,
    )


def aspect_ratio_groups(aspect_ratios: Sequence[float]) -> list[int]:
    """Group id per image: 0 for landscape or square (w >= h), 1 for portrait (w < h).

    ``aspect_ratios`` are width / height (e.g. ``CocoDetection.aspect_ratios()``). Batching
    within a group keeps the zero padding of a batch small.
    """
    return [0 if ratio >= 1.0 else 1 for ratio in aspect_ratios]


def _distributed_rank_and_size(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is None or world_size is None:
        initialized = torch.distributed.is_available() and torch.distributed.is_initialized()
        if rank is None:
            rank = torch.distributed.get_rank() if initialized else 0
        if world_size is None:
            world_size = torch.distributed.get_world_size() if initialized else 1
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank {rank} and world_size {world_size}")
    return rank, world_size


class RepeatFactorSampler(Sampler[int]):
    """Each epoch, image ``i`` appears ``floor(r_i)`` times plus once more with probability
    ``r_i - floor(r_i)`` (stochastic rounding, redrawn every epoch), in shuffled order.

    The epoch list is drawn from ``seed`` and the epoch (call :meth:`set_epoch`), so all ranks
    draw the same list; it is padded by wrapping around to a multiple of ``world_size`` and rank
    ``r`` takes every ``world_size``-th entry from ``r``. ``rank``/``world_size`` default to
    ``torch.distributed``'s when it is initialised, else 0 and 1.

    The epoch length varies a little from epoch to epoch; ``len()`` is the current epoch's.
    """

    def __init__(
        self,
        repeat_factors: torch.Tensor | Sequence[float],
        seed: int = 0,
        shuffle: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        factors = torch.as_tensor(repeat_factors, dtype=torch.float64)
        if factors.dim() != 1 or bool((factors < 0).any()):
            raise ValueError("repeat factors must be a 1-d sequence of non-negative numbers")
        self.repeat_factors = factors
        self.seed = int(seed)
        self.shuffle = shuffle
        self.rank, self.world_size = _distributed_rank_and_size(rank, world_size)
        self.epoch = 0
        self._cached: tuple[int, torch.Tensor] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _epoch_indices(self) -> torch.Tensor:
        """This rank's indices for the current epoch."""
        if self._cached is not None and self._cached[0] == self.epoch:
            return self._cached[1]
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        whole = torch.floor(self.repeat_factors)
        extra = torch.rand(len(self.repeat_factors), generator=generator, dtype=torch.float64) < (
            self.repeat_factors - whole
        )
        counts = (whole + extra).to(torch.int64)
        # numpy: torch.repeat_interleave costs milliseconds even for a handful of images here
        indices = torch.from_numpy(np.repeat(np.arange(len(counts)), counts.numpy()))
        if self.shuffle:
            indices = indices[torch.randperm(len(indices), generator=generator)]
        padding = (-len(indices)) % self.world_size
        if padding and len(indices):
            indices = torch.cat([indices, indices.repeat(math.ceil(padding / len(indices)))[:padding]])
        shard = indices[self.rank :: self.world_size]
        self._cached = (self.epoch, shard)
        return shard

    def __iter__(self) -> Iterator[int]:
        return iter(self._epoch_indices().tolist())

    def __len__(self) -> int:
        return len(self._epoch_indices())


class GroupedBatchSampler(Sampler[list[int]]):
    """Batches of ``batch_size`` indices from ``sampler``, each from a single group.

    Indices are taken in the sampler's order and a batch is emitted as soon as a group has
    ``batch_size`` of them. What is left over at the end is emitted in batches that may mix
    groups, so every index of the sampler appears exactly once and the number of batches is
    ``ceil(len(sampler) / batch_size)`` (``floor`` with ``drop_last``), whatever the groups:
    equal on every rank of a distributed run.
    """

    def __init__(
        self, sampler: Sampler[int], group_ids: Sequence[int], batch_size: int, drop_last: bool = False
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.sampler = sampler
        self.group_ids = list(group_ids)
        self.batch_size = batch_size
        self.drop_last = drop_last

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to the wrapped sampler (DistributedSampler, RepeatFactorSampler)."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        pending: dict[int, list[int]] = {}
        for index in self.sampler:
            group = pending.setdefault(self.group_ids[index], [])
            group.append(index)
            if len(group) == self.batch_size:
                yield list(group)
                group.clear()
        leftovers = [index for group_id in sorted(pending) for index in pending[group_id]]
        for start in range(0, len(leftovers), self.batch_size):
            batch = leftovers[start : start + self.batch_size]
            if len(batch) == self.batch_size or not self.drop_last:
                yield batch

    def __len__(self) -> int:
        count = len(self.sampler)  # type: ignore[arg-type]
        return count // self.batch_size if self.drop_last else math.ceil(count / self.batch_size)
