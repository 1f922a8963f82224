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


def test_training_samples_send_the_union_instead_of_polygon_bitmaps_and_train_the_same(synthetic_data):
    from refinemask import build_model

    dataset = CocoDetection(synthetic_data.train, synthetic_data.images, remove_empty=True, keep_polygons=True)
    samples = TrainingSamples(dataset, flip_prob=0.5)
    keys = [(0, 3), (1, 4)]
    compact = [samples[key] for key in keys]
    full = [dataset[index] for index, _ in keys]
    for (image, small), (plain_image, target) in zip(compact, full):
        polygon_instances = sum(p is not None for p in target["polygons"])
        assert polygon_instances > 0
        assert small["masks"].shape[0] == len(target["masks"]) - polygon_instances
        assert small["semantic"].shape == target["masks"].shape[-2:]
        assert small["masks"].nbytes + small["semantic"].nbytes <= target["masks"].nbytes
    # the same sample, flipped or not, as the full target: the same losses (the model resizes the
    # 64 px images to 128, so the union goes through the resize as the bitmaps did)
    plain = []
    for (image, small), (index, seed) in zip(compact, keys):
        original, target = dataset[index]
        if not torch.equal(image, original):
            from refinemask.data.transforms import horizontal_flip

            original, target = horizontal_flip(original, target)
        plain.append((original, target))
    losses = []
    for batch in (compact, plain):
        torch.manual_seed(0)
        model = build_model(num_classes=5, backbone="resnet18", min_size=[128], max_size=192,
                            rpn_post_nms_top_n_train=50, box_batch_size_per_image=32).train()
        losses.append(model([b[0] for b in batch], [b[1] for b in batch]))
    assert losses[0].keys() == losses[1].keys()
    for name in losses[0]:
        assert torch.equal(losses[0][name], losses[1][name]), name


def test_evaluation_samples_read_images_boxes_and_labels_but_decode_no_mask(synthetic_data, monkeypatch):
    from refinemask.data import coco
    from refinemask.engine.evaluate import EvaluationSamples

    dataset = CocoDetection(synthetic_data.val, synthetic_data.images)
    expected = [dataset[i] for i in (2, 0)]
    decoded = []
    monkeypatch.setattr(coco.mask_utils, "decode", lambda rle: decoded.append(rle) or (_ for _ in ()).throw(AssertionError))
    samples = EvaluationSamples(dataset, [2, 0])
    assert len(samples) == 2
    for (image, target), (want_image, want) in zip((samples[0], samples[1]), expected):
        assert torch.equal(image, want_image) and "masks" not in target
        assert torch.equal(target["boxes"], want["boxes"]) and torch.equal(target["labels"], want["labels"])
        assert target["image_id"] == want["image_id"]
    assert not decoded


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


def test_training_and_validation_data_with_different_categories_is_refused(tmp_path, synthetic_data):
    import json

    import pytest

    from refinemask.config import load_config
    from refinemask.engine.data import setup_datasets
    from refinemask.errors import RefineMaskError
    from tests.tiny_runs import write_config

    val = json.loads(synthetic_data.val.read_text())
    val["categories"] = [{**c, "id": c["id"] + 100} for c in val["categories"]]
    for annotation in val["annotations"]:
        annotation["category_id"] += 100
    other = tmp_path / "val_other.json"
    other.write_text(json.dumps(val))
    config = load_config(write_config(tmp_path / "run.yaml", synthetic_data, tmp_path / "out"),
                         [f"data.val_annotations={other}"])
    assert set(setup_datasets(config, ("train",))) == {"train"}  # one split: nothing to match
    with pytest.raises(RefineMaskError, match="different categories; training and validation data must share"):
        setup_datasets(config, ("train", "val"))
