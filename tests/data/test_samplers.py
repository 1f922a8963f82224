import math
from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, SequentialSampler

from refinemask.data import collate
from refinemask.data.coco import CocoDetection
from refinemask.data.samplers import (
    GroupedBatchSampler,
    RepeatFactorSampler,
    aspect_ratio_groups,
    repeat_factors,
)


def test_repeat_factor_is_sqrt_of_threshold_over_image_fraction() -> None:
    # label 1 in all 100 images, label 2 in one of them: f = 0.01
    labels = [{1}] * 99 + [{1, 2}]
    factors = repeat_factors(labels, threshold=0.1)
    assert factors[-1].item() == pytest.approx(math.sqrt(0.1 / 0.01))
    assert factors[:-1].tolist() == [1.0] * 99


def test_image_repeat_is_the_max_over_its_categories() -> None:
    labels = [{1, 2}, {2}, {3}, {3}, {3}, {3}]  # f(1) = 1/6, f(2) = 2/6, f(3) = 4/6
    factors = repeat_factors(labels, threshold=0.5)
    assert factors[0].item() == pytest.approx(math.sqrt(0.5 * 6))
    assert factors[1].item() == pytest.approx(math.sqrt(0.5 * 3))
    assert factors[2].item() == 1.0


def test_image_without_categories_repeats_once() -> None:
    assert repeat_factors([set(), {1}], threshold=0.9).tolist()[0] == 1.0


def test_default_threshold_leaves_common_categories_alone() -> None:
    labels = [{1}] * 998 + [{2}] * 2  # label 2 in 2e-3 of the images, above the threshold
    assert torch.all(repeat_factors(labels) == 1.0)
    assert repeat_factors([{1}] * 1999 + [{2}])[-1].item() == pytest.approx(math.sqrt(2))  # 5e-4


def epoch_counts(sampler: RepeatFactorSampler, epoch: int) -> Counter:
    sampler.set_epoch(epoch)
    return Counter(iter(sampler))


def test_whole_repeat_factors_repeat_exactly() -> None:
    sampler = RepeatFactorSampler([1.0, 2.0, 3.0])
    assert epoch_counts(sampler, 0) == Counter({0: 1, 1: 2, 2: 3})


def test_fractional_repeat_factors_are_rounded_stochastically_per_epoch() -> None:
    sampler = RepeatFactorSampler([1.25, 1.0], seed=3)
    per_epoch = [epoch_counts(sampler, epoch)[0] for epoch in range(400)]
    assert set(per_epoch) == {1, 2}
    assert sum(per_epoch) / 400 == pytest.approx(1.25, abs=0.06)


def test_same_seed_and_epoch_give_the_same_order() -> None:
    a, b = RepeatFactorSampler([1.5] * 20, seed=7), RepeatFactorSampler([1.5] * 20, seed=7)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    b.set_epoch(3)
    assert list(a) != list(b)


def test_len_is_the_current_epoch_length() -> None:
    sampler = RepeatFactorSampler([1.5] * 30, seed=1)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        assert len(sampler) == len(list(sampler))


def test_ranks_get_disjoint_equal_shards_covering_the_epoch() -> None:
    factors = [1.0, 2.0, 1.0, 3.0, 1.0]  # 8 draws, not a multiple of 3 ranks
    shards = [list(RepeatFactorSampler(factors, seed=0, rank=r, world_size=3)) for r in range(3)]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == 3
    together = Counter(i for shard in shards for i in shard)
    whole = Counter({0: 1, 1: 2, 2: 1, 3: 3, 4: 1})
    assert whole - together == Counter()  # every draw is on some rank
    assert sum((together - whole).values()) == 1  # plus one wrapped-around padding draw


def test_rank_must_be_below_world_size() -> None:
    with pytest.raises(ValueError, match="rank"):
        RepeatFactorSampler([1.0], rank=2, world_size=2)


def test_aspect_ratio_groups_split_landscape_and_portrait() -> None:
    assert aspect_ratio_groups([1.5, 1.0, 0.75]) == [0, 0, 1]


def test_grouped_batches_hold_one_group_except_the_leftovers() -> None:
    groups = [0, 1, 0, 1, 1, 0, 0, 1, 0]
    batches = list(GroupedBatchSampler(SequentialSampler(range(9)), groups, batch_size=2))
    full_group_batches = batches[:-1]
    assert all(len({groups[i] for i in batch}) == 1 for batch in full_group_batches)
    assert sorted(i for batch in batches for i in batch) == list(range(9))
    assert len(batches) == 5


def test_grouped_batch_count_is_the_plain_batch_count() -> None:
    groups = [0, 1] * 5 + [1]  # odd group sizes leave two partial batches
    sampler = GroupedBatchSampler(SequentialSampler(range(11)), groups, batch_size=4)
    assert len(list(sampler)) == len(sampler) == 3
    dropping = GroupedBatchSampler(SequentialSampler(range(11)), groups, batch_size=4, drop_last=True)
    assert len(list(dropping)) == len(dropping) == 2
    assert all(len(b) == 4 for b in dropping)


def test_grouped_batches_with_a_distributed_sampler_match_across_ranks() -> None:
    groups = [0, 0, 0, 1, 0, 1, 1, 0, 0, 0, 1, 0, 0]
    per_rank = []
    for rank in range(2):
        sampler = DistributedSampler(range(len(groups)), num_replicas=2, rank=rank, shuffle=True, seed=0)
        batches = GroupedBatchSampler(sampler, groups, batch_size=2)
        batches.set_epoch(1)
        per_rank.append(list(batches))
    assert len(per_rank[0]) == len(per_rank[1])  # no rank waits for the other at epoch end
    seen = {i for batches in per_rank for batch in batches for i in batch}
    assert seen == set(range(len(groups)))


def test_set_epoch_reaches_the_wrapped_sampler() -> None:
    sampler = RepeatFactorSampler([1.0] * 12, seed=0)
    batches = GroupedBatchSampler(sampler, [0] * 12, batch_size=3)
    batches.set_epoch(5)
    assert sampler.epoch == 5


def test_grouped_loader_over_a_dataset(tiny_coco) -> None:
    dataset = CocoDetection(*tiny_coco)
    groups = aspect_ratio_groups(dataset.aspect_ratios())
    batch_sampler = GroupedBatchSampler(SequentialSampler(dataset), groups, batch_size=2)
    batches = list(DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=collate))
    image_ids = [[t["image_id"] for t in targets] for _, targets in batches]
    assert image_ids == [[1, 3], [2]]  # the two landscape-or-square images batch together
