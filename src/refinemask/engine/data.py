"""Datasets and the training sample stream, built from the ``data`` section of a config.

The order of training samples depends only on ``(seed, epoch)`` and the rank, and the random
horizontal flip of each sample only on ``(seed, epoch, rank, position in the epoch)``: every
sample carries its own seed (:class:`TrainingSamples`). So a run resumed from a checkpoint, or
loaded by any number of worker processes, sees exactly the same samples as an uninterrupted one.

One sampler covers every official schedule: :class:`~refinemask.data.samplers.RepeatFactorSampler`
with factor 1 per image is a plain shuffled epoch (COCO), with the LVIS factors it is
repeat-factor sampling, and multiplied by ``data.repeat`` it is mmdetection's ``RepeatDataset``
(Cityscapes ×8). It shards each epoch over the ranks.
"""
from __future__ import annotations

from collections import OrderedDict

import logging
from pathlib import Path

import numpy as np
import torch
import yaml

from refinemask.config import Config, DataConfig, to_dict
from refinemask.data import collate
from refinemask.data.coco import CocoDetection
from refinemask.data.images import scaling_options
from refinemask.data.samplers import (
    GroupedBatchSampler,
    RepeatFactorSampler,
    aspect_ratio_groups,
    repeat_factors,
)
from refinemask.data.transforms import crop_window, drop_polygon_bitmaps, horizontal_flip
from refinemask.errors import RefineMaskError

logger = logging.getLogger("refinemask.run")

# (dataset index, sample seed)
SampleKey = tuple[int, int]


def synthetic_root(config: Config) -> Path:
    synthetic = config.data.synthetic
    assert synthetic is not None
    return Path(synthetic.root) if synthetic.root else Path(config.train.output_dir) / "synthetic_data"


def prepare_synthetic_data(config: Config) -> None:
    """Write the synthetic data set of ``data.synthetic`` unless it is already there, unchanged.

    Call it on one process only (rank 0), before the others read the data.
    """
    from refinemask.data.synthetic import make_synthetic

    synthetic = config.data.synthetic
    if synthetic is None:
        return
    if synthetic.num_val_images < 1:
        raise RefineMaskError("data.synthetic.num_val_images must be at least 1 (evaluation needs a validation split)")
    root = synthetic_root(config)
    stamp = root / "synthetic.yaml"
    wanted = {k: v for k, v in to_dict(synthetic).items() if k != "root"}
    paths_present = (root / "train.json").is_file() and (root / "val.json").is_file()
    if paths_present and stamp.is_file() and yaml.safe_load(stamp.read_text()) == wanted:
        return
    logger.info("writing the synthetic data set (%d + %d images of %d px) to %s", synthetic.num_images,
                synthetic.num_val_images, synthetic.size, root)
    make_synthetic(root, synthetic.num_images, synthetic.size, synthetic.seed, synthetic.preset, synthetic.num_val_images)
    stamp.write_text(yaml.safe_dump(wanted, sort_keys=True))


def data_paths(config: Config, split: str) -> tuple[Path, Path]:
    """(annotation json, image folder) of ``split`` ("train" or "val"), checked to exist."""
    data = config.data
    annotations, images = (
        (data.train_annotations, data.train_images) if split == "train" else (data.val_annotations, data.val_images)
    )
    if data.synthetic is not None:
        if annotations or images:
            raise RefineMaskError(
                f"data.synthetic is set, so leave data.{split}_annotations and data.{split}_images empty "
                "(or remove data.synthetic to use your own data)"
            )
        root = synthetic_root(config)
        return root / f"{split}.json", root / "images"
    if not annotations:
        raise RefineMaskError(f"data.{split}_annotations is not set; give it as data.{split}_annotations=PATH")
    if not Path(annotations).is_file():
        raise RefineMaskError(
            f"data.{split}_annotations: annotation file not found: {annotations} "
            f"(fix the path in the config or override data.{split}_annotations=PATH)"
        )
    if not images or not Path(images).is_dir():
        raise RefineMaskError(
            f"data.{split}_images: image folder not found: {images or '(not set)'} "
            f"(fix the path in the config or override data.{split}_images=PATH)"
        )
    return Path(annotations), Path(images)


def build_dataset(config: Config, split: str) -> CocoDetection:
    """The ``train`` (images without instances left out) or ``val`` dataset of the config."""
    annotations, images = data_paths(config, split)
    cls = CocoDetection
    if config.data.format == "lvis":
        from refinemask.data.lvis import LvisDetection

        cls = LvisDetection
    training = split == "train"
    dataset = cls(
        annotations, images, keep_polygons=config.data.polygons and training, remove_empty=training,
        strict=config.data.strict, scaling=scaling_options(config.model),
    )
    if config.data.scan_images:
        leave_out_bad_images(dataset, config.data.strict, config.model.high_bit_scaling)
    from refinemask.data.validation import dataset_notes

    # the box-only count is said by the dataset itself
    for note in dataset_notes(dataset.coco.dataset, config.model.detections_per_img, include_box_only=False):
        logger.warning("%s: %s", annotations, note)
    if len(dataset) == 0:
        raise RefineMaskError(f"{annotations}: no usable image{' with instances' if training else ''} for {split}")
    return dataset


def setup_datasets(config: Config, splits: tuple[str, ...], is_main: bool = True) -> dict[str, CocoDetection]:
    """The datasets of ``splits`` (``"train"``, ``"val"``): the one data set-up of training and evaluation.

    Writes the synthetic data set first (``data.synthetic``) on the main process while the others
    wait, so under ``torchrun`` every rank must call it. With both splits, they must share their
    categories: a model's labels mean one thing in training and in its evaluation.
    """
    from refinemask.engine import distributed

    if config.data.synthetic is not None:
        if is_main:
            prepare_synthetic_data(config)
        distributed.barrier()
    datasets = {split: build_dataset(config, split) for split in splits}
    train, val = datasets.get("train"), datasets.get("val")
    if train is not None and val is not None and val.label_to_category != train.label_to_category:
        raise RefineMaskError(
            f"{val.ann_file} and {train.ann_file} have different categories; "
            "training and validation data must share them"
        )
    return datasets


def leave_out_bad_images(dataset: CocoDetection, strict: bool, high_bit_scaling: str = "percentiles") -> None:
    """Scan the image files of ``dataset`` (:mod:`refinemask.data.scan`); leave out the bad ones.

    Lists each problem once in the log; with ``strict`` the first one is an error instead.
    """
    import time

    from refinemask.data.scan import scan_image_files
    from refinemask.engine.distributed import computed_on_main

    started = time.perf_counter()
    subset = {"images": [dataset.coco.imgs[i] for i in dataset.ids]}
    # rank 0 reads the files, the other ranks wait for its result: N ranks reading every file
    # would be N times the I/O, and the fastest nodes would time out waiting for the slowest
    scan = computed_on_main(lambda: scan_image_files(subset, dataset.image_dir, dataset.ann_file))
    logger.info(
        "scanned the %d image files of %s in %.1f s%s: %d with problems",
        scan.num_images, dataset.ann_file.name, time.perf_counter() - started,
        " (cached: unchanged since the last scan)" if scan.cached else "", len(scan.problems),
    )
    if scan.problems and strict:
        raise RefineMaskError(
            f"{dataset.ann_file}: {len(scan.problems)} image file(s) with problems, first: {scan.problems[0].message} "
            "(data.strict=true; `refinemask check-data` lists them all)"
        )
    if scan.problems:
        bad = scan.bad_image_ids(subset)
        dataset.ids = [i for i in dataset.ids if i not in bad]
        logger.warning(
            "%s: left out %d image(s) whose files have problems (data.strict=true makes them errors):\n  %s",
            dataset.ann_file.name, len(bad), "\n  ".join(p.message for p in scan.problems),
        )
    note = scan.range_note()
    if note and high_bit_scaling == "full":
        logger.warning(
            "%s: %s; with model.high_bit_scaling=full the network sees them nearly black: "
            "model.high_bit_scaling=percentiles (the default) or minmax stretches each image",
            dataset.ann_file.name, note,
        )
    elif note:
        logger.info("%s: %s; scaled per image (model.high_bit_scaling=%s)", dataset.ann_file.name, note, high_bit_scaling)


def resolve_num_classes(config: Config, dataset: CocoDetection) -> None:
    """Set ``model.num_classes`` from ``dataset`` when the config leaves it out; else check it."""
    categories = len(dataset.label_to_category)
    if config.model.num_classes is None:
        config.model.num_classes = categories
        logger.info("model.num_classes=%d, the categories of %s", categories, dataset.ann_file)
    elif categories != config.model.num_classes:
        raise RefineMaskError(
            f"model.num_classes is {config.model.num_classes} but {dataset.ann_file} has {categories} categories; "
            f"set model.num_classes={categories}, or model.num_classes=null to take it from the data"
        )


def sample_seed(seed: int, epoch: int, rank: int, position: int) -> int:
    """The seed of the sample at ``position`` of ``rank``'s share of ``epoch``."""
    return int(np.random.SeedSequence([seed, epoch, rank, position]).generate_state(1, dtype=np.uint64)[0] >> 1)


class TrainingSamples(torch.utils.data.Dataset):
    """``dataset`` with the random training augmentation, keyed by ``(index, sample_seed)``.

    The flip (and, with ``crop_size``, the crop window) of a sample is drawn from its own
    generator, so it does not depend on the process or worker that loads it, nor on what was
    loaded before.

    With ``crop_size``, decoded images are kept (up to ``cache_bytes``, least recently used
    out first): a set of a few huge images is cropped many times per epoch, and decoding a
    4096 px PNG costs far more than the crop's forward.
    """

    def __init__(self, dataset: CocoDetection, flip_prob: float, crop_size: int = 0, cache_bytes: int = 2**30):
        self.dataset = dataset
        self.flip_prob = flip_prob
        self.crop_size = crop_size
        self.cache_bytes = cache_bytes
        self._images: OrderedDict[int, torch.Tensor] = OrderedDict()

    def _image(self, index: int) -> torch.Tensor:
        if index in self._images:
            self._images.move_to_end(index)
            return self._images[index]
        image = self.dataset.load_image(index)
        self._images[index] = image
        while len(self._images) > 1 and sum(i.numel() * i.element_size() for i in self._images.values()) > self.cache_bytes:
            self._images.popitem(last=False)
        return image

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: SampleKey):
        index, seed = key
        generator = torch.Generator().manual_seed(seed)
        flip = self.flip_prob > 0 and float(torch.rand((), generator=generator)) < self.flip_prob
        if self.crop_size > 0:
            # the window first, from the json's boxes: only the instances in it are decoded
            info = self.dataset.coco.imgs[self.dataset.ids[index]]
            window = crop_window(
                info["height"], info["width"], self.crop_size, self.dataset.instance_boxes(index), generator
            )
            image, target = self.dataset.load_sample(index, window, self._image(index))
        else:
            image, target = self.dataset[index]
        if flip:
            image, target = horizontal_flip(image, target)
        return image, drop_polygon_bitmaps(target)


class EpochBatches:
    """The batches of every epoch of one rank, as lists of :data:`SampleKey`."""

    def __init__(self, dataset: CocoDetection, data: DataConfig, batch_size: int, seed: int, rank: int, world_size: int):
        if data.repeat_factor_threshold > 0:
            factors = repeat_factors(dataset.labels_per_image(), data.repeat_factor_threshold)
        else:
            factors = torch.ones(len(dataset), dtype=torch.float64)
        factors = factors * data.repeat
        self.sampler = RepeatFactorSampler(factors, seed=seed, shuffle=True, rank=rank, world_size=world_size)
        groups = aspect_ratio_groups(dataset.aspect_ratios()) if data.group_by_aspect_ratio else [0] * len(dataset)
        self.batches = GroupedBatchSampler(self.sampler, groups, batch_size)
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank

    def epoch(self, epoch: int) -> list[list[SampleKey]]:
        self.batches.set_epoch(epoch)
        keyed = []
        for b, batch in enumerate(self.batches):
            keyed.append([
                (int(index), sample_seed(self.seed, epoch, self.rank, b * self.batch_size + j))
                for j, index in enumerate(batch)
            ])
        return keyed


def epoch_loader(samples: TrainingSamples, batches: list[list[SampleKey]], num_workers: int, seed: int):
    """A DataLoader over the given batches (already sharded, ordered and sliced).

    It gets its own generator: a DataLoader otherwise draws its workers' base seed from the
    global torch RNG, so creating one mid-epoch (on resume) would shift the model's random stream.
    """
    return torch.utils.data.DataLoader(
        samples,
        batch_sampler=batches,
        collate_fn=collate,
        num_workers=num_workers,
        persistent_workers=False,
        # page-locked batches, so that the trainer's non_blocking copies to a GPU overlap
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(seed),
    )
