"""Typed configuration: dataclasses, loaded from YAML with ``key.sub=value`` overrides.

Every object is built from these values explicitly (no registry, no string-typed types). An
unknown key is an error that names the nearest valid key, and a config is saved next to every
checkpoint so that a model can be rebuilt exactly.

Each key's valid values are declared once, beside the key: a ``Literal[...]`` annotation for a
choice, :func:`key` with ``at_least`` or ``rule`` for a range. They are checked whenever a section
is built, from YAML, an override, ``build_model(**options)`` or the dataclass itself.

A YAML file may start from another with ``inherit: NAME`` (a bundled config's name, or a path
relative to the file): its sections are merged key by key over the other's, so each bundled
config shows only what differs from its base.

Why dataclasses and a small coercer rather than OmegaConf structured configs: OmegaConf does not
type-check ``Literal`` choices, unions with ``None`` of lists, or ranges, so those checks would
stay here anyway; it would add a dependency and its own error texts in place of our one-line
errors with a did-you-mean suggestion; and its interpolation, the one feature we would gain, no
config needs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from refinemask.errors import RefineMaskError
from refinemask.typed_sections import Checked, from_dict, key, suggest, to_dict  # noqa: F401 (from_dict, to_dict: the public names)


@dataclass
class ModelConfig(Checked):
    """What decides the model's architecture and its test-time behaviour."""

    num_classes: int | None = None  # None: the number of categories of the training annotations
    # resnet18 | resnet34 | resnet50 | resnet101 | efficientnet_lite0 (refinemask.modeling.backbone.BACKBONES),
    # torchvision:NAME (any torchvision classifier: convnext_tiny, swin_t, regnet_y_1_6gf...) or
    # timm:NAME (any timm model with levels at strides 4-32; pip install "refinemask[timm]");
    # checked beside their builders (docs/backbones.md)
    backbone: str = "resnet50"
    # None | "imagenet" (the library's ImageNet weights) | a torchvision weights name such as
    # IMAGENET1K_V2 | path to a classifier state dict
    backbone_weights: str | None = None
    trainable_backbone_layers: int = key(3, rule=(lambda n: 0 <= n <= 5, "0 to 5"))  # stages from the top; 3 = official frozen_stages=1
    # stochastic depth of the backbones that have it (torchvision stochastic_depth_prob, timm
    # drop_path_rate; the Swin-T recipe 0.2, ConvNeXt-T 0.4); None = the library's default
    backbone_drop_path: float | None = None
    fpn_channels: int = 256  # FPN width, also the mask heads' width (official: 256)
    # refinemask (the released checkpoints' head) | simple_refinemask (the official "faster-better"
    # SimpleRefineMaskHead, as Co-DETR uses it) | maskrcnn (the stock 28x28 head)
    mask_head: Literal["refinemask", "simple_refinemask", "maskrcnn"] = "refinemask"
    # last stage 32 -> 1; None = the head's official setting: refinemask False (true in the LVIS
    # config), simple_refinemask True
    class_agnostic_last_stage: bool | None = None
    dilations: list[int] = field(default_factory=lambda: [1, 3, 5])
    # image pipeline (docs/design.md §6.1); several min sizes = multi-scale training ('value' mode)
    min_size: list[int] = field(default_factory=lambda: [800])
    max_size: int = 1333
    # images of more than 8 bits (16-bit microscopy, 12-bit cameras): percentiles | minmax | full;
    # the default maps each image's 1st and 99.8th percentiles to 0 and 1, so low-range data is
    # not near black (refinemask.data.images explains each). 8-bit images are always divided by 255.
    high_bit_scaling: Literal["percentiles", "minmax", "full"] = "percentiles"
    high_bit_percentiles: list[float] = key(
        factory=lambda: [1.0, 99.8], rule=(lambda p: len(p) == 2 and 0.0 <= p[0] < p[1] <= 100.0, "[low, high] with 0 <= low < high <= 100")
    )
    # RPN (docs/design.md §1.2)
    exact_anchors: bool = True  # mmdetection's anchors (unrounded, strides 4..64)
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 1000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 1000
    rpn_batch_size_per_image: int = 256
    # mmdetection v2.3 compatibility, set by `refinemask convert` (docs/design.md §6.2); the defaults are
    # torchvision's: rank each level's candidates by logits and drop proposals under 1e-3 px
    rpn_rank_by_sigmoid: bool = False  # rank by float32 sigmoid scores (ties by anchor order)
    rpn_min_box_size: float = 1e-3  # mmdetection: 0 (keeps zero-size proposals)
    # RoIAlign of the box and mask heads: 0 = adaptive sampling, ceil(bin size) points per bin
    # axis (official mmcv); torchvision's detectors use 2 (fixed 2×2 per bin, cheaper on large
    # boxes); roi_aligned=False is torchvision's pixel-corner convention (official: True)
    roi_sampling_ratio: int = key(0, at_least=0)
    roi_aligned: bool = True
    # box head
    box_batch_size_per_image: int = 512
    box_positive_fraction: float = 0.25
    box_loss_weight: float = 2.0
    box_reg_loss: Literal["l1", "smooth_l1"] = "l1"  # smooth_l1: Cityscapes
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    detections_per_img: int = 100
    box_min_size: float = 1e-2  # detections smaller than this are dropped; mmdetection: 0
    # mask head
    mask_chunk_size: int = 100
    # RefineMask heads' conv depths (official 2 and 4; Co-DETR's SimpleRefineMaskHead: 1 and 2)
    mask_instance_convs: int = 2
    mask_semantic_convs: int = 4
    # RefineMask heads' widths: the instance convs' (C_0; stage k has C_0/2^k channels) and the
    # semantic convs' (official conv_out_channels_instance / _semantic: 256). None = fpn_channels.
    # Narrower heads are faster and not official; docs/benchmarks.md measures them
    # (the stages halve C_0 three times and keep C_k/2 - 2 channels, hence multiples of 8)
    mask_instance_channels: int | None = key(None, rule=(lambda c: c >= 16 and c % 8 == 0, "a multiple of 8, at least 16"))
    mask_semantic_channels: int | None = key(None, at_least=1)
    # FPN strides the 14x14 mask RoI features are pooled from (every mask head; official P2-P5,
    # Co-DETR [4, 8, 16, 32, 64], P6 being our FPN's max-pooled level 'pool')
    mask_roi_strides: list[int] = field(default_factory=lambda: [4, 8, 16, 32])
    # at most this many positive RoIs per image train the mask head (0 = all, as officially);
    # a CPU recipe uses a few, since the 56/112 stages cost much per RoI
    mask_positives_per_image: int = 0
    # official: kaiming fan_out on the logit convs as in the official code (semantic_logits then
    # has std 1.41 and the first losses are in the hundreds); small: normal(std=0.001), zero bias,
    # which starts near p=0.5 and trains stably at small batches
    mask_logits_init: Literal["official", "small"] = "official"
    # None = the head's official config value: refinemask [0.25, 0.5, 0.75, 1.0],
    # simple_refinemask [0.5, 0.75, 0.75, 1.0] (docs/design.md §4.4)
    bar_stage_weights: list[float] | None = None
    boundary_width: int = 2
    semantic_loss_weight: float = 1.0  # refinemask only: simple_refinemask has no semantic loss
    # official: the mask losses train the FPN and backbone too. False detaches the features the
    # mask head reads (RoI features and P2), so only the box losses shape them; a study option
    # (docs/benchmarks.md, "RefineMask's boxes"), not an official setting
    mask_loss_to_features: bool = True

    def __post_init__(self):
        super().__post_init__()
        # a width other than the FPN's is set by the first conv of its stack (the heads' rule)
        for part in ("instance", "semantic"):
            width, depth = getattr(self, f"mask_{part}_channels"), getattr(self, f"mask_{part}_convs")
            if depth == 0 and width not in (None, self.fpn_channels):
                raise RefineMaskError(
                    f"mask_{part}_channels {width} needs mask_{part}_convs of at least 1 (the first conv sets the width)"
                )


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (['a', 'b'], parsed YAML value)."""
    if "=" not in text:
        raise RefineMaskError(f"override {text!r} is not of the form key.sub=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set ``key.sub=value`` items into a nested dict (validated later by :func:`from_dict`)."""
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RefineMaskError(f"override {text!r}: {part!r} is not a section")
        node[path[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise RefineMaskError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise RefineMaskError(f"{path}: invalid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RefineMaskError(f"{path}: the top level must be a mapping of sections")
    return data


# --- training, data and evaluation ------------------------------------------------------------
# A run's whole config is the five sections below; ``refinemask train/eval`` read it with
# :func:`load_config`. Defaults are the official COCO 1x schedule (docs/design.md §6.3).


@dataclass
class SyntheticDataConfig(Checked):
    """Generate the built-in synthetic data set (:func:`refinemask.data.synthetic.make_synthetic`).

    It is written once into ``root`` (default: ``<train.output_dir>/synthetic_data``) and reused
    while these values stay the same.
    """

    root: str = ""
    num_images: int = 64
    num_val_images: int = 16
    size: int = 256
    preset: Literal["easy", "hard"] = "easy"
    seed: int = 0


@dataclass
class DataConfig(Checked):
    """Where the data is and how training samples it.

    Paths are relative to the working directory. With ``synthetic`` set, the four paths are
    those of the generated data set and must be left empty.
    """

    format: Literal["coco", "lvis"] = "coco"
    train_annotations: str = ""
    train_images: str = ""
    val_annotations: str = ""
    val_images: str = ""
    polygons: bool = True  # False: per-RoI mask targets cut from bitmaps (the Cityscapes setting)
    flip_prob: float = 0.5
    # > 0: train on a random crop_size x crop_size window of each image (one instance's centre in
    # it), for sets of a few images far larger than the model's input; 0: whole images
    crop_size: int = key(0, at_least=0)
    repeat_factor_threshold: float = 0.0  # > 0: repeat-factor sampling (LVIS: 1e-3)
    repeat: int = key(1, at_least=1)  # every image this many times per epoch (Cityscapes: RepeatDataset x8)
    group_by_aspect_ratio: bool = True
    num_workers: int = 2
    # decode every image file at the start (in parallel, cached) and leave out those with problems
    scan_images: bool = True
    strict: bool = False  # any problem of the annotations or image files ends the run instead
    synthetic: SyntheticDataConfig | None = None


@dataclass
class SolverConfig(Checked):
    """Optimiser and learning-rate schedule.

    ``base_lr`` is the rate for ``reference_batch_size`` images per step; with ``scale_lr`` the
    trainer scales it linearly to the actual total batch (images per device x devices x
    ``train.grad_accum_steps``). ``lr_steps`` are in epochs, as in the official schedules.
    """

    optimizer: Literal["sgd", "adamw"] = "sgd"
    base_lr: float = 0.02
    reference_batch_size: int = key(16, at_least=1)
    scale_lr: bool = True
    momentum: float = 0.9
    weight_decay: float = 1e-4
    # parameters without weight decay: norm (every norm layer's), bias, position (Swin's relative
    # position tables); official RefineMask: none; the Swin recipes [norm, position], ConvNeXt's
    # [norm, bias] (refinemask.engine.schedule.decay_groups)
    no_weight_decay: list[Literal["norm", "bias", "position"]] = field(default_factory=list)
    epochs: int = 12
    max_iters: int = 0  # > 0: train this many iterations instead of `epochs` epochs
    lr_schedule: Literal["step", "cosine", "constant"] = "step"
    lr_steps: list[float] = field(default_factory=lambda: [8.0, 11.0])
    gamma: float = 0.1
    warmup_iters: int = 500
    warmup_ratio: float = 0.001
    grad_clip_norm: float = 35.0  # L2 norm; 0 = no clipping


@dataclass
class TrainConfig(Checked):
    """How a run executes: output, batch, devices, precision, checkpoints, logging."""

    output_dir: str = "output"
    batch_size: int = key(2, at_least=1)  # images per device (per process)
    grad_accum_steps: int = key(1, at_least=1)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["none", "fp16", "bf16"] = "none"  # CUDA only
    num_threads: int = 0  # CPU threads per process; 0 = torch's default
    deterministic: bool = False  # deterministic algorithms (CUDA); CPU runs are already repeatable
    checkpoint_every: int = key(1000, at_least=1)  # iterations
    keep_checkpoints: int = 3  # the newest N periodic checkpoints are kept; 0 = all
    resume: bool = False  # continue from the last checkpoint in output_dir, if there is one
    # start from these weights, trained for any classes: a refinemask weights file or checkpoint, an
    # official checkpoint, a torchvision detector state dict file, or torchvision:maskrcnn_resnet50_fpn
    init_weights: str = ""
    log_every: int = key(20, at_least=1)
    eval_every: int = 0  # iterations; 0 = no periodic evaluation
    eval_at_end: bool = True
    max_minutes: float = key(0.0, at_least=0)  # > 0: end training after this many minutes (checkpoint, final weights); 0 = no limit
    stop_at: int = key(0, at_least=0)  # > 0: end this run after iteration N (checkpoint, final weights), --resume continues; 0 = the schedule's end
    tensorboard: bool = True
    progress_bar: bool = True
    find_unused_parameters: bool = False  # DDP option, for heads that skip parameters


@dataclass
class EvalConfig(Checked):
    """Evaluation of a model on ``data.val_*``: COCO-style, LVIS-style when ``data.format=lvis``."""

    iou_types: list[Literal["segm", "bbox", "boundary"]] = field(default_factory=lambda: ["segm", "bbox", "boundary"])
    boundary_dilations: list[float] = field(default_factory=lambda: [0.02, 0.008])
    batch_size: int = key(1, at_least=1)  # images per device
    mask_threshold: float = 0.5
    max_images: int = 0  # > 0: only the first N images (a quick check)


@dataclass
class Config(Checked):
    """A whole run: ``model``, ``data``, ``solver``, ``train``, ``eval`` sections."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def bundled_config_names() -> list[str]:
    """Names of the configs shipped with the package (``refinemask train NAME``)."""
    from importlib import resources

    folder = resources.files("refinemask") / "configs"
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _bundled_config(name: str | Path) -> Path | None:
    """The bundled config called ``name`` (with or without ``.yaml``; no folders), if there is one."""
    from importlib import resources

    path = Path(name)
    stem = path.name.removesuffix(".yaml")
    bundled = resources.files("refinemask") / "configs" / f"{stem}.yaml"
    return Path(str(bundled)) if str(path) in (path.name, f"{stem}.yaml") and bundled.is_file() else None


def _not_found(name: str | Path, what: str) -> RefineMaskError:
    names = bundled_config_names()
    stem = Path(name).name.removesuffix(".yaml")
    return RefineMaskError(f"{what}: {name} is neither a file nor a bundled config{suggest(stem, names)}; bundled: {', '.join(names)}")


def resolve_config_path(name: str | Path) -> Path:
    """A config file: ``name`` itself when it exists, else the bundled config of that name."""
    path = Path(name)
    if path.is_file():
        return path
    bundled = _bundled_config(name)
    if bundled is None:
        raise _not_found(name, "config not found")
    return bundled


def _merged(base: dict, child: dict, sections: bool = True) -> dict:
    """``child`` over ``base``, mapping by mapping (a list or a value replaces the base's; a null
    inside a section, such as ``data.synthetic: null``, replaces it too)."""
    out = dict(base)
    for name, value in child.items():
        if value is None and sections:
            continue  # an empty section (all its keys commented out) changes nothing
        out[name] = _merged(out[name], value, False) if isinstance(value, dict) and isinstance(out.get(name), dict) else value
    return out


def read_config_file(path: str | Path, _children: tuple[Path, ...] = ()) -> dict:
    """A config file's sections with its ``inherit:`` chain merged in (the file's own keys win).

    ``inherit`` names a file relative to this one (``.yaml`` may be left out) or a bundled config.
    """
    path = Path(path)
    data = read_yaml(path)
    base = data.pop("inherit", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise RefineMaskError(f"{path}: inherit must name a config file or a bundled config, got {base!r}")
    # a file named like the bundled config it inherits (a user's edited copy) means the bundled one
    nearby = [p for p in (path.parent / base, path.parent / f"{base}.yaml") if p.is_file() and not p.samefile(path)]
    base_path = nearby[0] if nearby else _bundled_config(base)
    if base_path is None:
        raise _not_found(base, f"{path}: inherit")
    chain = (*_children, path.resolve())
    if base_path.resolve() in chain:
        raise RefineMaskError(f"{path}: inherit: {base!r} leads back to {base_path.name} (a loop)")
    return _merged(read_config_file(base_path, chain), data)


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a run config (a YAML path or a bundled name) and apply ``key.sub=value`` overrides.

    An unknown key, in the file or an override, is a :class:`RefineMaskError` naming the
    nearest valid key.
    """
    path = resolve_config_path(path)
    data = apply_overrides(read_config_file(path), list(overrides))
    try:
        config = from_dict(Config, data)
    except RefineMaskError as err:
        raise RefineMaskError(f"{path.name}: {err}") from None
    return config


def save_config(config: Config, path: str | Path) -> Path:
    """Write ``config`` as YAML (what :func:`load_config` reads back)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    return path
