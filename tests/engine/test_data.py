"""The training sample stream: order and flips depend only on (seed, epoch, rank, position)."""
from __future__ import annotations

import torch

from refinemask.config import DataConfig
from refinemask.data.coco import CocoDetection
from refinemask.engine.data import EpochBatches, TrainingSamples


def _batches(dataset, seed=0, rank=0, world_size=1, **data):
    return EpochBatches(dataset, DataConfig(**data), batch_size=2, seed=seed, rank=rank, world_size=world_size)


def test_epoch_order_depends_only_on_seed_and_epoch(synthetic_data):
    dataset = CocoDetection(synthetic_data.train, synthetic_data.images, remove_empty=True)
    first, again = _batches(dataset), _batches(dataset)
    assert first.epoch(1) == again.epoch(1)  # a new sampler, or a resumed run, sees the same
    assert first.epoch(0) != first.epoch(1)
    assert _batches(dataset, seed=1).epoch(0) != first.epoch(0)


def test_ranks_share_each_epoch_without_overlap(synthetic_data):
    dataset = CocoDetection(synthetic_data.train, synthetic_data.images, remove_empty=True)
    shards = [[i for batch in _batches(dataset, rank=r, world_size=2).epoch(0) for i, _ in batch] for r in (0, 1)]
    assert len(shards[0]) == len(shards[1])
    assert set(shards[0]).isdisjoint(shards[1]) and set(shards[0]) | set(shards[1]) == set(range(len(dataset)))


def test_repeat_puts_every_image_that_many_times_in_an_epoch(synthetic_data):
    dataset = CocoDetection(synthetic_data.train, synthetic_data.images, remove_empty=True)
    indices = [i for batch in _batches(dataset, repeat=3).epoch(0) for i, _ in batch]
    assert sorted(indices) == sorted(list(range(len(dataset))) * 3)


def test_a_sample_is_flipped_by_its_own_seed(synthetic_data):
    dataset = CocoDetection(synthetic_data.train, synthetic_data.images, remove_empty=True)
    samples = TrainingSamples(dataset, flip_prob=0.5)
    image, _ = dataset[0]
    flipped = [bool(torch.equal(samples[(0, seed)][0], image.flip(-1))) for seed in range(12)]
    assert any(flipped) and not all(flipped)
    assert [bool(torch.equal(samples[(0, seed)][0], image.flip(-1))) for seed in range(12)] == flipped


def test_a_wrong_class_count_says_the_count_and_that_null_takes_it_from_the_data():
    from types import SimpleNamespace

    import pytest

    from refinemask.config import Config
    from refinemask.engine.data import resolve_num_classes
    from refinemask.errors import RefineMaskError

    config = Config()
    config.model.num_classes = 5
    dataset = SimpleNamespace(label_to_category={label: label for label in range(1, 22)}, ann_file="train.json")
    with pytest.raises(RefineMaskError, match=r"set model.num_classes=21, or model.num_classes=null to take it from the data"):
        resolve_num_classes(config, dataset)
    config.model.num_classes = None
    resolve_num_classes(config, dataset)
    assert config.model.num_classes == 21
