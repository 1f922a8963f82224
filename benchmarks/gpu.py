"""The CUDA path in one short run: training in three precisions, speed, memory, exact resume.

On one CUDA device, in about five minutes (at most eight), it:

  1. trains RefineMask with the ``quickstart_refinemask`` recipe on the built-in synthetic set
     for ``--iters`` iterations in fp32, fp16 and bf16 (``train.amp``), through the library's own
     trainer: the losses must stay finite and fall; mask AP on the validation split at the end;
  2. measures inference at 800×1333 with ResNet-50-FPN and exactly 100 detections for every mask
     head the installed version has (RefineMask, the faster-better head once it exists, Mask
     R-CNN): images per second from CUDA events after a warm-up, and peak memory
     (``torch.cuda.max_memory_allocated``);
  3. measures a training step at COCO settings (2 images of 800×1333 with 7 polygon instances
     each, 512 sampled RoIs, every positive training the mask head; proposals include jittered
     copies of the GT boxes, as a trained RPN's do, so the sampler finds its positives): time
     and peak memory per head;
  4. checks what ``train.deterministic=true`` promises (docs/design.md, "Deterministic
     training"): two uninterrupted runs end with bitwise equal weights, so does a run stopped
     half-way and resumed, PyTorch warned of no operation without a deterministic kernel, and
     the RoIAlign and resizes ran as weight products (:mod:`refinemask.modeling.separable_ops`);

then prints one table and writes the same figures to ``OUT/gpu.json``; the exit status is 1 when
a check failed (bf16 on a GPU without it is skipped, not failed). Without a CUDA device it
says so in one line and exits with status 0. A part whose Python packages (beyond torch and
torchvision) are missing, as on a cluster image without network, says which in one line and
is skipped; the other parts run (:data:`NEEDS`).

    python benchmarks/gpu.py                          # on a machine with a GPU
    python benchmarks/gpu.py --out gpu-run --iters 300
    python benchmarks/gpu.py --device cpu --tiny      # the same code on tiny sizes, on the CPU
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch

PRECISIONS = ("none", "fp16", "bf16")
PRECISION_NAMES = {"none": "fp32", "fp16": "fp16", "bf16": "bf16"}


# the packages beyond torch and torchvision each part imports (through refinemask or the other
# benchmarks), by import name; a part with one missing is skipped with one line
NEEDS = {
    "train": ("numpy", "PIL", "yaml", "pycocotools", "faster_coco_eval", "safetensors", "tqdm"),
    "inference": ("numpy", "PIL", "yaml", "pycocotools"),
    "coco_train_step": ("numpy", "PIL", "yaml", "pycocotools"),
    "resume": ("numpy", "PIL", "yaml", "pycocotools", "safetensors", "tqdm"),
}
PIP_NAMES = {"PIL": "pillow", "yaml": "pyyaml", "faster_coco_eval": "faster-coco-eval"}


def installed(module: str) -> bool:
    """Whether ``module`` can be imported here (without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_note(modules) -> str:
    names = sorted(set(modules))
    return f"needs {', '.join(names)}, not installed (pip install {' '.join(PIP_NAMES.get(m, m) for m in names)})"


def run_section(report: dict, out: Path, device: torch.device, part: str, title: str, measure, variants) -> None:
    """Measure each variant into ``report["rows"]``.

    Missing packages skip the part with one line (before it starts, from :data:`NEEDS`, or when
    an import fails inside it). Any other exception fails that row only (the GPU time is lent
    briefly, so one failure must not lose the other figures); its traceback goes to OUT/errors.txt.
    """
    started = time.perf_counter()
    absent = [m for m in NEEDS.get(part, ()) if not installed(m)]
    if absent:
        print(f"{title}: skipped, {missing_note(absent)}", flush=True)
        report["rows"].extend({"part": part, "variant": PRECISION_NAMES.get(v, str(v)), "ok": None,
                               "error": missing_note(absent)} for v in variants)
        return
    print(f"{title} ...", end=" ", flush=True)
    skipped = None
    for variant in variants:
        name = PRECISION_NAMES.get(variant, str(variant))
        try:
            row = measure(variant)
        except ModuleNotFoundError as err:  # a package NEEDS does not list: skipped all the same
            skipped = missing_note([err.name or str(err)])
            row = {"part": part, "variant": name, "ok": None, "error": skipped}
        except Exception as err:  # noqa: BLE001 - reported in the table and errors.txt
            with open(out / "errors.txt", "a", encoding="utf-8") as log:
                log.write(f"--- {part} {variant}\n{traceback.format_exc()}\n")
            row = {"part": part, "variant": name, "ok": False,
                   "error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} (see errors.txt)"}
            if device.type == "cuda":
                torch.cuda.empty_cache()
        report["rows"].append(row)
    print(f"skipped, {skipped}" if skipped else f"{time.perf_counter() - started:.0f} s", flush=True)


class Sizes:
    """Everything that scales: the real settings, or tiny ones for a CPU dry run."""

    def __init__(self, tiny: bool, iters: int):
        self.tiny = tiny
        self.iters = 2 if tiny else iters
        self.backbone = "resnet18" if tiny else "resnet50"
        self.height, self.width = (64, 96) if tiny else (800, 1333)
        self.detections = 5 if tiny else 100
        self.instances = 3 if tiny else 7
        self.positives = 4 if tiny else 128  # per image: 512 sampled RoIs x 0.25
        self.repeats = 2 if tiny else 20
        self.step_repeats = 2 if tiny else 10
        self.warmup = 1 if tiny else 3
        self.resume_iters = 2 if tiny else 10  # the resume check stops after these, then continues as many
        self.train_minutes = 0 if tiny else 1.5  # hard stop per precision (train.max_minutes; 0 = none)

    def train_overrides(self) -> list[str]:
        """Overrides of ``quickstart_refinemask`` for the precision and resume runs."""
        common = [
            "train.progress_bar=false", "train.tensorboard=false", "train.log_every=10",
            "train.checkpoint_every=100000", "train.keep_checkpoints=1",
        ]
        if not self.tiny:
            return common
        return common + [
            "model.backbone=resnet18", "model.backbone_weights=null", "model.trainable_backbone_layers=0",
            "model.min_size=[64]", "model.max_size=64", "model.rpn_pre_nms_top_n_train=50",
            "model.rpn_post_nms_top_n_train=20", "model.rpn_pre_nms_top_n_test=50",
            "model.rpn_post_nms_top_n_test=20", "model.rpn_batch_size_per_image=32",
            "model.box_batch_size_per_image=16", "model.detections_per_img=5",
            "data.synthetic.num_images=4", "data.synthetic.num_val_images=2", "data.synthetic.size=64",
            "solver.warmup_iters=1", "train.num_threads=1",
        ]


class Timer:
    """Milliseconds of a block: CUDA events on a GPU (no host sync inside), perf_counter on a CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    @contextlib.contextmanager
    def measure(self, into: list[float]):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            end.synchronize()
            into.append(start.elapsed_time(end))
        else:
            begin = time.perf_counter()
            yield
            into.append((time.perf_counter() - begin) * 1000.0)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device: torch.device) -> float | None:
    """Peak memory allocated by tensors since :func:`reset_peak` (None on the CPU)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


# --- 1. training in three precisions ----------------------------------------------------------


def run_trainer(config, on_step=None, before_step=None):
    """The library's trainer on ``config``, its console output swallowed (log.txt keeps it).

    ``on_step(trainer, stop, losses)`` is called after every optimiser step; ``before_step(trainer,
    stop)`` before it, and may call ``stop.request()`` to stop the run after that step as SIGTERM
    would (a checkpoint, then :class:`~refinemask.engine.stopping.TrainingStopped`).
    Returns (trainer, per-step (seconds, summed loss)).
    """
    from refinemask.engine import distributed
    from refinemask.engine.logging import close_run_logger
    from refinemask.engine.train import Trainer

    steps: list[tuple[float, float]] = []
    context = distributed.init_distributed(config.train.device)
    trainer = None
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            trainer = Trainer(config, context)
            step = trainer._step  # the one optimiser step of the loop, wrapped to record its losses

            def recorded(stream, stop):
                if before_step is not None:  # the step reads the request once, in its reduction
                    before_step(trainer, stop)
                begin = time.perf_counter()
                outcome = step(stream, stop)  # ends with float(loss): the step has finished
                steps.append((time.perf_counter() - begin, sum(outcome.losses.values())))
                if on_step is not None:
                    on_step(trainer, stop, outcome.losses)
                return outcome

            trainer._step = recorded
            trainer.run()
    finally:
        if trainer is not None:
            trainer.close()
        close_run_logger()
    return trainer, steps


def train_precision(amp: str, sizes: Sizes, out: Path, device: torch.device) -> dict:
    from refinemask.config import load_config
    from refinemask.errors import RefineMaskError

    name = PRECISION_NAMES[amp]
    overrides = sizes.train_overrides() + [
        f"train.device={device.type}", f"train.amp={amp}", f"solver.max_iters={sizes.iters}",
        f"train.output_dir={out / ('train_' + name)}", f"data.synthetic.root={out / 'synthetic_data'}",
        # the hard stop keeps the whole script within its 8 minutes on a slow GPU; the run is
        # then evaluated as usual, and the row says how many iterations it did
        f"train.max_minutes={sizes.train_minutes}",
    ]
    row = {"part": "train", "variant": name, "iterations": sizes.iters}
    shutil.rmtree(out / ("train_" + name), ignore_errors=True)  # a fresh run, not a previous one's checkpoints
    reset_peak(device)
    begin = time.perf_counter()
    try:
        trainer, steps = run_trainer(load_config("quickstart_refinemask", overrides))
    except RefineMaskError as err:  # bf16 on a GPU without it (skipped), or the loss diverged (failed)
        row.update(ok=None if "does not support bfloat16" in str(err) else False, error=str(err))
        return row
    losses = [loss for _, loss in steps]
    fifth = max(1, len(losses) // 5)
    first, last = statistics.mean(losses[:fifth]), statistics.mean(losses[-fifth:])
    metrics = json.loads((trainer.output_dir / "metrics.json").read_text())
    row.update(
        iterations=len(steps), cut_short=len(steps) < sizes.iters,
        seconds=time.perf_counter() - begin,
        s_per_iter=statistics.median(t for t, _ in steps[1:] or steps),
        loss_first=first, loss_last=last,
        finite=all(math.isfinite(v) for v in losses), falling=last < first,
        mask_ap=metrics["segm"]["AP"], box_ap=metrics["bbox"]["AP"],
        peak_mb=peak_mb(device),
        grad_scale=trainer.scaler.get_scale() if trainer.scaler is not None else None,
    )
    row["ok"] = row["finite"] and row["falling"]
    return row


# --- 2. inference speed and memory -------------------------------------------------------------


def mask_heads() -> list[str]:
    """The mask heads to measure: every one the library builds (RefineMask, the faster-better
    head, Mask R-CNN)."""
    try:
        from refinemask.modeling.detector import MASK_HEADS
    except ImportError:  # a package is missing: the parts that build models say which, and are skipped
        return ["refinemask", "simple_refinemask", "maskrcnn"]
    return list(MASK_HEADS)


def build_head_model(head: str, sizes: Sizes, device: torch.device, detections: int):
    from refinemask import build_model
    from common import model_options

    options = model_options(sizes.backbone, detections, sizes.height, sizes.width)
    if sizes.tiny:  # few RoIs: the dry run checks the code, not the speed
        options.update(rpn_post_nms_top_n_train=20, rpn_post_nms_top_n_test=20, box_batch_size_per_image=16,
                       trainable_backbone_layers=0)
    torch.manual_seed(0)
    return build_model(mask_head=head, **options).to(device)


def inference(head: str, sizes: Sizes, device: torch.device) -> dict:
    timer = Timer(device)
    model = build_head_model(head, sizes, device, sizes.detections).eval()
    image = torch.rand(3, sizes.height, sizes.width, generator=torch.Generator().manual_seed(1)).to(device)
    seen = set()
    times: list[float] = []
    with torch.no_grad():
        for _ in range(sizes.warmup):
            model([image])
        reset_peak(device)
        for _ in range(sizes.repeats):
            with timer.measure(times):
                out = model([image])[0]
            seen.add(int(out["boxes"].shape[0]))
    memory = peak_mb(device)
    del model
    ms = statistics.median(times)
    return {"part": "inference", "variant": head, "size": f"{sizes.height}x{sizes.width}",
            "detections": sorted(seen), "ms_per_image": ms, "images_per_s": 1000.0 / ms, "peak_mb": memory,
            "ok": seen == {sizes.detections}}


# --- 3. a training step at COCO settings -------------------------------------------------------


def coco_batch(sizes: Sizes, device: torch.device):
    """Two images with polygon instances (masks rasterised from the polygons, as COCO gives them)."""
    import numpy as np
    from pycocotools import mask as mask_utils

    from common import scene_polygons

    rng = np.random.default_rng(5)
    images, targets = [], []
    for _ in range(2):
        polygons = scene_polygons(rng, sizes.height, sizes.width, sizes.instances)
        rles = [mask_utils.merge(mask_utils.frPyObjects([p.tolist() for p in parts], sizes.height, sizes.width))
                for parts in polygons]
        masks = torch.from_numpy(np.stack([mask_utils.decode(r) for r in rles]))
        x, y, w, h = torch.from_numpy(mask_utils.toBbox(rles)).float().unbind(1)
        targets.append({
            "boxes": torch.stack([x, y, x + w, y + h], 1).to(device),
            "labels": torch.from_numpy(rng.integers(1, 81, len(rles))).to(device),
            "masks": masks.to(device),
            "polygons": [[p.astype(np.float32) for p in parts] for parts in polygons],
        })
        images.append(torch.rand(3, sizes.height, sizes.width, generator=torch.Generator().manual_seed(2)).to(device))
    return images, targets


def add_positive_proposals(model, count: int) -> None:
    """Give the RoI heads ``count`` jittered GT boxes per image among the RPN's proposals.

    A trained RPN proposes many boxes around each object; random weights do not, and the
    sampler would find only the GT boxes themselves as positives.
    """
    from common import positive_rois

    def hook(module, args):
        features, proposals, image_shapes, targets = args
        extra = [positive_rois(t["boxes"].float().cpu(), count, seed=i)[0].to(p) for i, (p, t) in enumerate(zip(proposals, targets))]
        return features, [torch.cat([p, e]) for p, e in zip(proposals, extra)], image_shapes, targets

    model.roi_heads.register_forward_pre_hook(hook)


def count_mask_rois(model, into: list[int]) -> None:
    """Record how many RoIs train the mask head per step (the boxes ``mask_loss`` is given).

    This wraps the method: the RoI heads offer no count of their own, and no module whose
    forward sees exactly these RoIs in every head.
    """
    roi_heads = model.roi_heads
    original = roi_heads.mask_loss

    def counting(features, boxes, *args, **kwargs):
        into.append(sum(int(b.shape[0]) for b in boxes))
        return original(features, boxes, *args, **kwargs)

    roi_heads.mask_loss = counting


def coco_train_step(head: str, sizes: Sizes, device: torch.device) -> dict:
    timer = Timer(device)
    model = build_head_model(head, sizes, device, detections=100).train()
    add_positive_proposals(model, sizes.positives)
    mask_rois: list[int] = []
    count_mask_rois(model, mask_rois)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    images, targets = coco_batch(sizes, device)
    times: list[float] = []
    losses = []
    for i in range(sizes.warmup + sizes.step_repeats):
        if i == sizes.warmup:
            reset_peak(device)
            mask_rois.clear()
        measured = times if i >= sizes.warmup else []
        with timer.measure(measured):
            loss = sum(model(images, targets).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        losses.append(float(loss.detach()))
    memory = peak_mb(device)
    del model, optimizer
    ms = statistics.median(times)
    return {"part": "coco_train_step", "variant": head, "size": f"2x{sizes.height}x{sizes.width}",
            "ms_per_step": ms, "images_per_s": 2000.0 / ms, "peak_mb": memory,
            "mask_rois_per_step": statistics.median(mask_rois) if mask_rois else None,
            "ok": all(math.isfinite(v) for v in losses)}


# --- 4. deterministic resume -------------------------------------------------------------------


def deterministic_resume(sizes: Sizes, out: Path, device: torch.device) -> dict:
    """Uninterrupted twice, and stopped half-way + resumed once; compare the final weights.

    Checks what docs/design.md promises of ``train.deterministic=true``: all three runs end with
    bitwise equal weights, no operation without a deterministic kernel ran (PyTorch warns of
    each, the trainer running with ``warn_only=True``), and the RoIAlign and resizes of the model
    ran as weight products (:mod:`refinemask.modeling.separable_ops`), not as the kernels whose
    backward is not deterministic on CUDA.
    """
    from safetensors.torch import load_file

    import refinemask.modeling.ops as model_ops
    from refinemask.config import load_config
    from refinemask.engine.stopping import TrainingStopped

    total = 2 * sizes.resume_iters

    def config(name: str, resume: bool = False):
        return load_config("quickstart_refinemask", sizes.train_overrides() + [
            f"train.device={device.type}", "train.deterministic=true", f"solver.max_iters={total}",
            "train.eval_at_end=false", f"train.output_dir={out / name}",
            f"data.synthetic.root={out / 'synthetic_data'}", f"train.resume={str(resume).lower()}",
        ])

    for name in ("resume_whole_a", "resume_whole_b", "resume_stopped"):
        shutil.rmtree(out / name, ignore_errors=True)

    def stop_half_way(trainer, stop):
        if trainer.iteration + 1 >= sizes.resume_iters:  # the step about to run is the last
            stop.request()

    weight_products = [0]
    originals = model_ops.separable_roi_align, model_ops.resize_by_matrices

    def counted(function):
        def call(*args, **kwargs):
            weight_products[0] += 1
            return function(*args, **kwargs)
        return call

    model_ops.separable_roi_align, model_ops.resize_by_matrices = (counted(f) for f in originals)
    reset_peak(device)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            finals = []
            for name in ("resume_whole_a", "resume_whole_b"):
                trainer, _ = run_trainer(config(name))
                finals.append(load_file(str(trainer.output_dir / "model_final.safetensors")))
            with contextlib.suppress(TrainingStopped):
                run_trainer(config("resume_stopped"), before_step=stop_half_way)
            started_at: list[int] = []
            trainer, _ = run_trainer(config("resume_stopped", resume=True),
                                     on_step=lambda t, stop, losses: started_at.append(t.iteration))
            finals.append(load_file(str(trainer.output_dir / "model_final.safetensors")))
    finally:
        torch.use_deterministic_algorithms(False)  # the trainer turned it on for the whole process
        model_ops.separable_roi_align, model_ops.resize_by_matrices = originals

    def max_difference(a: dict, b: dict) -> float:
        return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)

    whole, repeat, resumed = finals
    nondeterministic = sorted({
        str(w.message).split(" does not have a deterministic implementation")[0]
        for w in caught if "deterministic implementation" in str(w.message)
    })
    row = {"part": "resume", "variant": "fp32, train.deterministic=true", "iterations": total,
           "stopped_at": sizes.resume_iters, "resumed_from": started_at[0] if started_at else None,
           "resumed_equal": all(torch.equal(whole[k], resumed[k]) for k in whole),
           "repeat_equal": all(torch.equal(whole[k], repeat[k]) for k in whole),
           "resumed_max_abs_diff": max_difference(whole, resumed),
           "repeat_max_abs_diff": max_difference(whole, repeat),
           "nondeterministic_ops": nondeterministic, "weight_product_calls": weight_products[0],
           "peak_mb": peak_mb(device)}
    row["ok"] = (row["resumed_equal"] and row["repeat_equal"] and row["resumed_from"] == sizes.resume_iters
                 and not nondeterministic and weight_products[0] > 0)
    return row


def deterministic_on_cpu(tensor: torch.Tensor) -> bool:
    """The CPU dry run's :func:`refinemask.modeling.ops.deterministic_kernels_needed`: deterministic
    mode takes the weight-product RoIAlign and resizes on the CPU too, as it does on CUDA."""
    return torch.are_deterministic_algorithms_enabled() and not torch.jit.is_tracing()


# --- the report ----------------------------------------------------------------------------------


def _mb(value) -> str:
    return "-" if value is None else f"{value:,.0f} MB"


def describe(row: dict) -> tuple[str, str]:
    """(result, speed) cells of the table for one row."""
    part = row["part"]
    if "error" in row:
        return f"not run: {row['error']}", "-"
    if part == "train":
        scale = f"; grad scale {row['grad_scale']:g}" if row.get("grad_scale") is not None else ""
        result = (f"loss {row['loss_first']:.3f} → {row['loss_last']:.3f} ({'finite' if row['finite'] else 'NOT finite'}, "
                  f"{'falling' if row['falling'] else 'NOT falling'}); mask AP {row['mask_ap']:.3f}, "
                  f"box AP {row['box_ap']:.3f}{scale}")
        done = f"{row['iterations']} it" + (" (time limit)" if row.get("cut_short") else "")
        return result, f"{row['s_per_iter']:.3f} s/it, {done}, {row['seconds']:.0f} s in all"
    if part == "inference":
        return (f"{'/'.join(map(str, row['detections']))} detections at {row['size']}",
                f"{row['images_per_s']:.2f} img/s ({row['ms_per_image']:.1f} ms)")
    if part == "coco_train_step":
        rois = row["mask_rois_per_step"]
        return (f"{row['size']}, {'?' if rois is None else f'{rois:.0f}'} mask-head RoIs per step",
                f"{row['ms_per_step']:.0f} ms/step ({row['images_per_s']:.1f} img/s)")
    ops = ", ".join(row["nondeterministic_ops"]) or "none"
    result = (f"stopped at {row['stopped_at']} of {row['iterations']}, resumed from {row['resumed_from']}: "
              f"{'identical' if row['resumed_equal'] else 'DIFFERENT'} weights (largest difference {row['resumed_max_abs_diff']:.2g}); "
              f"two uninterrupted runs {'identical' if row['repeat_equal'] else 'differ'} "
              f"(largest difference {row['repeat_max_abs_diff']:.2g}); ops without a deterministic kernel: {ops}; "
              f"{row.get('weight_product_calls', 0)} RoIAlign/resize calls as weight products")
    return result, "-"


def print_table(report: dict) -> None:
    print(f"\n{report['device_name']} · torch {report['torch']} · CUDA {report['cuda']} · "
          f"{report['seconds']:.0f} s in all")
    for note in report["notes"]:
        print(f"note: {note}")
    print("| part | variant | result | speed | peak memory | ok |")
    print("|---|---|---|---|---|---|")
    for row in report["rows"]:
        result, speed = describe(row)
        print(f"| {row['part']} | {row['variant']} | {result} | {speed} | {_mb(row.get('peak_mb'))} | "
              f"{'skipped' if row.get('ok') is None else 'yes' if row['ok'] else 'NO'} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu, for a dry run with --tiny")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes and 3 iterations: checks the script, measures nothing")
    parser.add_argument("--iters", type=int, default=300, help="training iterations per precision")
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS,
                        help="train.amp settings to train with (none = fp32)")
    parser.add_argument("--out", default="gpu-benchmark", help="folder for the runs and gpu.json")
    parser.add_argument("--skip", nargs="*", default=[], choices=["train", "inference", "step", "resume"],
                        help="parts to leave out")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"benchmarks/gpu.py: no CUDA device on this machine (torch {torch.__version__}); nothing to measure")
        return 0
    # cuBLAS reads this when it starts, i.e. before the resume check turns determinism on
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    sizes = Sizes(args.tiny, args.iters)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    heads = mask_heads()
    report = {
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or 'cpu'})",
        "torch": torch.__version__, "cuda": torch.version.cuda, "tiny": args.tiny,
        "notes": [], "rows": [],
    }
    if device.type == "cpu":
        report["notes"].append("dry run on the CPU: figures say nothing about a GPU")
        with contextlib.suppress(ImportError):  # else the parts that need refinemask say what is missing
            # the dry run: CPU autocast follows the same rules, so the fp16/bf16 code runs too
            import refinemask.engine.train as engine_train
            import refinemask.modeling.ops as model_ops

            engine_train.check_amp = lambda amp, device: None
            model_ops.deterministic_kernels_needed = deterministic_on_cpu
        if args.tiny:
            torch.set_num_threads(1)
    begin = time.perf_counter()

    def section(part: str, title: str, measure, variants) -> None:
        run_section(report, out, device, part, title, measure, variants)

    (out / "errors.txt").unlink(missing_ok=True)
    if "train" not in args.skip:
        section("train", f"training {sizes.iters} iterations in {', '.join(PRECISION_NAMES[p] for p in args.precisions)}",
                lambda amp: train_precision(amp, sizes, out, device), args.precisions)
    if "inference" not in args.skip:
        section("inference", f"inference at {sizes.height}x{sizes.width}, {sizes.detections} detections",
                lambda head: inference(head, sizes, device), heads)
    if "step" not in args.skip:
        section("coco_train_step", "training step at COCO settings",
                lambda head: coco_train_step(head, sizes, device), heads)
    if "resume" not in args.skip:
        section("resume", "deterministic resume", lambda _: deterministic_resume(sizes, out, device), ["fp32"])
    report["seconds"] = time.perf_counter() - begin
    (out / "gpu.json").write_text(json.dumps(report, indent=1))
    print_table(report)
    print(f"\nfigures: {out / 'gpu.json'}" + (f"; tracebacks: {out / 'errors.txt'}" if (out / "errors.txt").exists() else ""))
    failed = [f"{r['part']} {r['variant']}" for r in report["rows"] if r.get("ok") is False]
    if args.tiny:  # 2 iterations at 64 px check that the code runs, not that it learns
        return 0
    print("all checks passed" if not failed else f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
