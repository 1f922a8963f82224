"""Speed of RefineMask (and its faster-better head) against Mask R-CNN, measured side by side in one run.

Both detectors share every weight except the mask head (same ResNet-50-FPN, RPN and box head),
see the same images and, through ``detections_per_img`` with ``box_score_thresh=0``, produce the
same number of detections. Each configuration is timed in turns (RefineMask, Mask R-CNN,
RefineMask, ...) and the medians are compared as ratios, so machine load affects both alike.

Reports, per image size and detection count:
  * head: the mask branch alone (semantic head, RoI pooling, stages, assembly, paste) on fixed
    FPN features and boxes;
  * detector: the whole model, image in, pasted masks out;
  * peak memory, in a fresh process per model: the whole detector's, and how much the mask
    head alone adds (CPU only);
  * with --train, one training iteration (forward, backward, SGD step) on a batch of two
    images with the same ground truth for both models;
  * with --flops, the multiply-accumulates of each model (torch.utils.flop_counter), which
    tell how much of the time ratio is arithmetic that any implementation must do;
  * with --onnx, RefineMask exported to ONNX and run in onnxruntime on the CPU;
  * with --torchvision, our Mask R-CNN against torchvision's ``maskrcnn_resnet50_fpn`` (the
    same weights loaded into both), part by part, at our defaults and at torchvision's RoI
    settings, with a check that the two give the same detections where the settings match.

    python benchmarks/speed.py                          # 800×1216, 10/50/100 detections
    python benchmarks/speed.py --mask-heads refinemask simple_refinemask simple_refinemask_codetr
    python benchmarks/speed.py --sizes 512x768 800x1216 --detections 100 --repeats 3
    python benchmarks/speed.py --device cuda --no-memory --train
    python benchmarks/speed.py --detections 100 --torchvision-only --threads 1
    python benchmarks/speed.py --detections 100 --no-memory --backbones resnet50 torchvision:convnext_tiny
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

from common import model_options


# --mask-heads name -> build_model settings of the RefineMask-family head compared with Mask R-CNN
MASK_HEADS = {
    "refinemask": {"mask_head": "refinemask"},
    "simple_refinemask": {"mask_head": "simple_refinemask"},  # the official faster-better head
    "simple_refinemask_codetr": {  # the same head with Co-DETR's settings
        "mask_head": "simple_refinemask", "mask_instance_convs": 1, "mask_semantic_convs": 2,
        "mask_roi_strides": [4, 8, 16, 32, 64],
    },
    # narrower heads (not official): instance width 128 (stages 128/64/32), semantic width 64
    "refinemask_narrow": {"mask_head": "refinemask", "mask_instance_channels": 128, "mask_semantic_channels": 64},
    "simple_refinemask_narrow": {"mask_head": "simple_refinemask", "mask_instance_channels": 128, "mask_semantic_channels": 64},
}


def build_pair(backbone: str, detections: int, min_size: int, max_size: int, device: str = "cpu",
               mask_positives: int = 0, head: str = "refinemask", box_rois: int = 512):
    from refinemask import build_model

    options = model_options(backbone, detections, min_size, max_size, mask_positives, box_rois)
    torch.manual_seed(0)
    refine = build_model(**MASK_HEADS[head], **options).eval()
    torch.manual_seed(0)
    baseline = build_model(mask_head="maskrcnn", **options).eval()
    shared = {k: v for k, v in refine.state_dict().items() if not k.startswith("roi_heads.mask_")}
    baseline.load_state_dict(shared, strict=False)
    return refine.to(device), baseline.to(device)


# what makes our Mask R-CNN compute what torchvision's does: rounded anchors, RoIAlign with 2×2
# samples per bin and aligned=False (our defaults are the official mmdetection settings)
TORCHVISION_SETTINGS = dict(exact_anchors=False, roi_sampling_ratio=2, roi_aligned=False)


def build_torchvision_trio(backbone: str, detections: int, min_size: int, max_size: int, device: str = "cpu"):
    """Our Mask R-CNN at our defaults and at torchvision's settings, and torchvision's own, one set of weights.

    torchvision's model is built as ``maskrcnn_resnet50_fpn`` builds it when given pretrained
    weights (``resnet_fpn_backbone``: frozen batch norm, three trainable stages), with the same
    test settings as ours; it takes our state dict as it is (strict: same names, same shapes).
    """
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    from refinemask import build_model

    options = model_options(backbone, detections, min_size, max_size)
    torch.manual_seed(0)
    ours = build_model(mask_head="maskrcnn", **options).eval()
    at_torchvision_settings = build_model(mask_head="maskrcnn", **options, **TORCHVISION_SETTINGS).eval()
    theirs = MaskRCNN(
        resnet_fpn_backbone(backbone_name=backbone, weights=None, trainable_layers=3),
        num_classes=options["num_classes"] + 1, min_size=min_size, max_size=max_size, box_score_thresh=0.0,
        box_nms_thresh=options["box_nms_thresh"], box_detections_per_img=detections,
    ).eval()
    state = ours.state_dict()
    at_torchvision_settings.load_state_dict(state)
    theirs.load_state_dict(state)
    return ours.to(device), at_torchvision_settings.to(device), theirs.to(device)


def time_detector_parts(model, image) -> dict[str, float]:
    """Wall and CPU seconds of each part of a torchvision-style detector, on one image.

    The parts of ``GeneralizedRCNN.forward`` called one by one: transform, backbone, rpn,
    roi_heads (box RoI pooling timed inside it by hooks), and the postprocess that pastes the
    masks into the image. Works for ours and torchvision's alike.
    """
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    clock: dict[str, float] = {}

    def start(name):
        _sync(image.device)
        clock[name] = (time.perf_counter(), time.process_time())

    def stop(name):
        _sync(image.device)
        w, c = clock.pop(name)
        wall[name] = wall.get(name, 0.0) + time.perf_counter() - w
        cpu[name] = cpu.get(name, 0.0) + time.process_time() - c

    pool = model.roi_heads.box_roi_pool
    hooks = [pool.register_forward_pre_hook(lambda *_: start("box_pool")),
             pool.register_forward_hook(lambda *_: stop("box_pool"))]
    try:
        with torch.no_grad():
            start("detector")
            start("transform")
            images, _ = model.transform([image])
            stop("transform")
            start("backbone")
            features = model.backbone(images.tensors)
            stop("backbone")
            start("rpn")
            proposals, _ = model.rpn(images, features)
            stop("rpn")
            start("roi_heads")
            detections, _ = model.roi_heads(features, proposals, images.image_sizes)
            stop("roi_heads")
            start("paste")
            detections = model.transform.postprocess(detections, images.image_sizes, [tuple(image.shape[-2:])])
            stop("paste")
            stop("detector")
    finally:
        for h in hooks:
            h.remove()
    out = {f"{k}_s": v for k, v in wall.items()}
    out.update({f"{k}_cpu_s": v for k, v in cpu.items()})
    out["detections"] = int(detections[0]["boxes"].shape[0])
    return out


def torchvision_agreement(ours, theirs, image) -> dict[str, float]:
    """How far our detections are from torchvision's, both run on the same normalised image tensor.

    Our transform normalises on the 0-255 scale, torchvision's on 0-1 (equal up to float
    rounding); feeding both the same tensor leaves only the models to compare. Boxes, scores
    and labels in order, and the 28×28 mask probabilities before the paste (which differs on
    purpose: ours samples pixel centres, torchvision's resizes to integer box sizes).
    """
    with torch.no_grad():
        images, _ = ours.transform([image])
        features = ours.backbone(images.tensors)
        mine = ours.roi_heads(features, ours.rpn(images, features)[0], images.image_sizes)[0][0]
        features = theirs.backbone(images.tensors)
        other = theirs.roi_heads(features, theirs.rpn(images, features)[0], images.image_sizes)[0][0]
    same_count = mine["boxes"].shape[0] == other["boxes"].shape[0]
    row = {"torchvision_same_detections": bool(same_count and torch.equal(mine["labels"], other["labels"]))}
    if same_count:
        row["torchvision_box_maxdiff"] = float((mine["boxes"] - other["boxes"]).abs().max())
        row["torchvision_score_maxdiff"] = float((mine["scores"] - other["scores"]).abs().max())
        row["torchvision_mask_maxdiff"] = float((mine["masks"] - other["masks"]).abs().max())
    return row


def torchvision_row(backbone: str, size: str, n: int, image, repeats: int, device: str) -> dict:
    """Interleaved medians of ours (defaults), ours at torchvision's settings, and torchvision's."""
    height, width = image.shape[-2:]
    models = dict(zip(("ours", "ours_tvsettings", "torchvision"),
                      build_torchvision_trio(backbone, n, min(height, width), max(height, width), device)))
    runs: dict[str, list[dict]] = {k: [] for k in models}
    for i in range(repeats + 1):  # the first round is a warm-up
        for key, model in models.items():
            parts = time_detector_parts(model, image)
            if i:
                runs[key].append(parts)
    row = {"size": size, "detections": n,
           "detections_seen": sorted({r["detections"] for rs in runs.values() for r in rs})}
    for key, rs in runs.items():
        for part in rs[0]:
            if part != "detections":
                row[f"{key}_{part}"] = statistics.median(r[part] for r in rs)
    for clock in ("s", "cpu_s"):
        row[f"tvsettings_vs_torchvision_{clock}"] = row[f"ours_tvsettings_detector_{clock}"] / row[f"torchvision_detector_{clock}"]
        row[f"defaults_vs_tvsettings_{clock}"] = row[f"ours_detector_{clock}"] / row[f"ours_tvsettings_detector_{clock}"]
    row.update(torchvision_agreement(models["ours_tvsettings"], models["torchvision"], image))
    return row


def print_torchvision_table(rows: list[dict]) -> None:
    parts = ("transform", "backbone", "rpn", "box_pool", "roi_heads", "paste", "detector")
    for clock, name in (("s", "wall"), ("cpu_s", "CPU")):
        print(f"\nOurs against torchvision's maskrcnn_resnet50_fpn, {name} seconds (medians); "
              "ours = our defaults, ours@tv = our model at torchvision's RoI settings")
        header = "| image | dets | model | " + " | ".join(parts).replace("roi_heads", "roi_heads (box_pool in it)") + " |"
        print(header)
        print("|---" * (header.count("|") - 1) + "|")
        for r in rows:
            for key, label in (("ours", "ours"), ("ours_tvsettings", "ours@tv"), ("torchvision", "torchvision")):
                cells = " | ".join(f"{r[f'{key}_{p}_{clock}']:.3f}" for p in parts)
                print(f"| {r['size']} | {r['detections']} | {label} | {cells} |")
        for r in rows:
            print(f"{r['size']}, {r['detections']} detections ({name}): ours@tv / torchvision "
                  f"{r[f'tvsettings_vs_torchvision_{clock}']:.3f}, ours / ours@tv (adaptive sampling, aligned) "
                  f"{r[f'defaults_vs_tvsettings_{clock}']:.3f}")
    for r in rows:
        diffs = ", ".join(f"{k[len('torchvision_'):]} {r[k]:.2g}" for k in r if k.startswith("torchvision_") and k.endswith("maxdiff"))
        print(f"{r['size']}, {r['detections']} detections: same detections as torchvision at its settings: "
              f"{r['torchvision_same_detections']}" + (f" (max differences: {diffs})" if diffs else ""))


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def random_boxes(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    wh = torch.rand(n, 2, generator=g) * torch.tensor([width, height]) * 0.3 + 16
    xy = torch.rand(n, 2, generator=g) * (torch.tensor([width, height]) - wh)
    return torch.cat([xy, xy + wh], dim=1)


def time_head(model, features, boxes, labels, height, width) -> float:
    from refinemask.modeling.ops import paste_masks

    _sync(boxes.device)
    start = time.perf_counter()
    with torch.no_grad():
        probs = model.roi_heads.predict_masks(features, [boxes], [labels])[0]
        paste_masks(probs, boxes, height, width)
    _sync(boxes.device)
    return time.perf_counter() - start


def time_detector(model, image) -> tuple[float, int]:
    _sync(image.device)
    start = time.perf_counter()
    with torch.no_grad():
        out = model([image])[0]
    _sync(image.device)
    return time.perf_counter() - start, int(out["boxes"].shape[0])


def training_batch(height: int, width: int, objects: int = 8, device: str = "cpu"):
    """Two random images with ``objects`` boxes each and an ellipse mask filling each box."""
    g = torch.Generator().manual_seed(3)
    images, targets = [], []
    ys = torch.arange(height)[:, None] + 0.5
    xs = torch.arange(width)[None, :] + 0.5
    for i in range(2):
        boxes = random_boxes(objects, height, width, seed=10 + i)
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        rx, ry = (boxes[:, 2] - boxes[:, 0]) / 2, (boxes[:, 3] - boxes[:, 1]) / 2
        masks = ((xs - cx[:, None, None]) / rx[:, None, None]) ** 2 + ((ys - cy[:, None, None]) / ry[:, None, None]) ** 2 <= 1
        labels = torch.randint(1, 81, (objects,), generator=g)
        images.append(torch.rand(3, height, width, generator=g).to(device))
        targets.append({"boxes": boxes.to(device), "labels": labels.to(device), "masks": masks.to(torch.uint8).to(device)})
    return images, targets


def time_train_step(model, optimizer, images, targets) -> float:
    """One iteration: forward with losses, backward, SGD step."""
    model.train()
    _sync(images[0].device)
    start = time.perf_counter()
    loss = sum(model(images, targets).values())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    _sync(images[0].device)
    model.eval()
    return time.perf_counter() - start


_MEMORY_SETUP = """
import torch
from refinemask import build_model
torch.no_grad().__enter__()
m = build_model(**{head!r}, **{options!r}).eval()
def rss():  # this process's peak RSS in MB; ru_maxrss would include the parent's peak from before exec
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024.0
"""
_MEMORY_DETECTOR = """
m([torch.rand(3, {height}, {width})])
print(rss())
"""
_MEMORY_HEAD = """
h, w = ({height} + 31) // 32 * 32, ({width} + 31) // 32 * 32
feats = {{str(i): torch.rand(1, m.backbone.out_channels, h // 2 ** (i + 2), w // 2 ** (i + 2)) for i in range(4)}}
xy = torch.rand({n}, 2) * torch.tensor([{width} * 0.7, {height} * 0.7])
boxes = torch.cat([xy, xy + torch.rand({n}, 2) * torch.tensor([{width} * 0.3, {height} * 0.3]) + 16], 1)
before = rss()
m.roi_heads.predict_masks(feats, [boxes], [torch.randint(1, 81, ({n},))])
print(rss() - before)
"""


def peak_memory_mb(backbone: str, head: str, detections: int, height: int, width: int) -> tuple[float, float]:
    """Peak memory of one model, each figure from a fresh process: (whole detector, mask head alone).

    The first is the max RSS (weights included) of one detector forward; the backbone and RPN
    set it, so it hardly tells the heads apart. The second is how far the mask branch alone
    (on FPN-shaped random features and ``detections`` boxes) raises the max RSS above what the
    model and the features already hold.
    """
    options = model_options(backbone, detections, min(height, width), max(height, width))
    values = dict(head=MASK_HEADS.get(head, {"mask_head": head}), options=options, n=detections, height=height, width=width)
    figures = []
    for part in (_MEMORY_DETECTOR, _MEMORY_HEAD):
        code = (_MEMORY_SETUP + part).format(**values)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        figures.append(float(out.stdout.strip().splitlines()[-1]))
    return figures[0], figures[1]


def gmacs(fn, grad: bool = False) -> float:
    """Multiply-accumulates (in 1e9) that ``fn`` runs, as torch.utils.flop_counter counts them (convs, matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.set_grad_enabled(grad):
        fn()
    return counter.get_total_flops() / 2e9


def train_step_ratio(refine, baseline, height: int, width: int, repeats: int, device: str, flops: bool = False) -> dict:
    """Median training-iteration times of both models on the same batch, interleaved."""
    images, targets = training_batch(height, width, device=device)
    optimizers = [torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-5, momentum=0.9)
                  for m in (refine, baseline)]
    times: list[list[float]] = [[], []]
    for i in range(repeats + 1):  # the first round is a warm-up
        for j, model in enumerate((refine, baseline)):
            t = time_train_step(model, optimizers[j], images, targets)
            if i:
                times[j].append(t)
    r, b = statistics.median(times[0]), statistics.median(times[1])
    row = {"train_refinemask_s": r, "train_maskrcnn_s": b, "train_ratio": r / b}
    if flops:
        for key, model, optimizer in zip(("refinemask", "maskrcnn"), (refine, baseline), optimizers):
            row[f"gmac_train_{key}"] = gmacs(lambda: time_train_step(model, optimizer, images, targets), grad=True)
    return row


def millions(module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def backbone_row(backbone: str, size: str, n: int, head: str, repeats: int, device: str, warmups: int = 1) -> dict:
    """Parameters and detector time of RefineMask and Mask R-CNN on ``backbone``, timed in turns
    after ``warmups`` untimed passes of each."""
    height, width = (int(v) for v in size.lower().split("x"))
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(1)).to(device)
    refine, baseline = build_pair(backbone, n, min(height, width), max(height, width), device, head=head)
    for _ in range(warmups):
        time_detector(refine, image)
        time_detector(baseline, image)
    det_r, det_b, counts = [], [], set()
    for _ in range(repeats):
        t, c = time_detector(refine, image)
        det_r.append(t)
        counts.add(c)
        t, c = time_detector(baseline, image)
        det_b.append(t)
        counts.add(c)
    row = {
        "backbone": backbone, "mask_head": head, "size": size, "detections": n, "detections_seen": sorted(counts),
        "params_body_m": millions(refine.backbone.body), "params_refinemask_m": millions(refine),
        "params_maskrcnn_m": millions(baseline),
        "detector_refinemask_s": statistics.median(det_r), "detector_maskrcnn_s": statistics.median(det_b),
    }
    row["detector_ratio"] = row["detector_refinemask_s"] / row["detector_maskrcnn_s"]
    return row


def print_backbone_table(rows: list[dict]) -> None:
    first = rows[0]["detector_refinemask_s"] if rows else 1.0
    header = ("| backbone | body params (M) | RM params (M) | MR params (M) | detector RM (s) | detector MR (s) "
              "| RM / MR | RM vs first row |")
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for r in rows:
        print(
            f"| {r['backbone']} | {r['params_body_m']:.1f} | {r['params_refinemask_m']:.1f} | {r['params_maskrcnn_m']:.1f} | "
            f"{r['detector_refinemask_s']:.2f} | {r['detector_maskrcnn_s']:.2f} | {r['detector_ratio']:.2f} | "
            f"{r['detector_refinemask_s'] / first:.2f} |"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["800x1216"], help="HxW image sizes")
    parser.add_argument("--detections", nargs="+", type=int, default=[10, 50, 100])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mask-heads", nargs="+", choices=list(MASK_HEADS), default=["refinemask"],
                        help="RefineMask heads to compare with Mask R-CNN, one row each (the 'RM' columns)")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--mask-positives", type=int, default=0,
                        help="with --train: cap on the RoIs that train the mask heads per image (0 = all, as official)")
    parser.add_argument("--box-rois", type=int, default=512,
                        help="with --train: proposals sampled per image to train the box head (512, as official)")
    parser.add_argument("--flops", action="store_true", help="also count multiply-accumulates of each model")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    parser.add_argument("--train", action="store_true",
                        help="also time training iterations (batch of 2 images, 8 objects each)")
    parser.add_argument("--onnx", action="store_true",
                        help="also export RefineMask to ONNX and time onnxruntime on the same image")
    parser.add_argument("--torchvision", action="store_true",
                        help="also compare our Mask R-CNN with torchvision's, part by part (ResNet backbones)")
    parser.add_argument("--torchvision-only", action="store_true", help="only the comparison with torchvision's")
    parser.add_argument("--backbones", nargs="+", metavar="NAME",
                        help="instead: one row per backbone (resnet50, torchvision:NAME, timm:NAME), parameters and "
                             "detector times of the first --mask-heads head and Mask R-CNN")
    parser.add_argument("--warmups", type=int, default=1, help="with --backbones: untimed passes of each model first")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.backbones:
        rows = []
        for size in args.sizes:
            for n in args.detections:
                for backbone in args.backbones:
                    rows.append(backbone_row(backbone, size, n, args.mask_heads[0], args.repeats, args.device, args.warmups))
                    print(json.dumps(rows[-1]), flush=True)
        print()
        print_backbone_table(rows)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
        return 0

    rows = []
    for size in [] if args.torchvision_only else args.sizes:
        height, width = (int(v) for v in size.lower().split("x"))
        image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(1)).to(args.device)
        for n, head in [(n, head) for n in args.detections for head in args.mask_heads]:
            refine, baseline = build_pair(args.backbone, n, min(height, width), max(height, width), args.device,
                                          args.mask_positives, head, args.box_rois)
            with torch.no_grad():
                images, _ = refine.transform([image])
                features = refine.backbone(images.tensors)
            rh, rw = images.image_sizes[0]
            boxes = random_boxes(n, rh, rw).to(args.device)
            labels = torch.randint(1, 81, (n,), generator=torch.Generator().manual_seed(2)).to(args.device)
            # warm-up, then interleaved repeats
            time_head(refine, features, boxes, labels, rh, rw)
            time_head(baseline, features, boxes, labels, rh, rw)
            head_r, head_b, det_r, det_b = [], [], [], []
            counts = set()
            for _ in range(args.repeats):
                head_r.append(time_head(refine, features, boxes, labels, rh, rw))
                head_b.append(time_head(baseline, features, boxes, labels, rh, rw))
                t, c = time_detector(refine, image)
                det_r.append(t)
                counts.add(c)
                t, c = time_detector(baseline, image)
                det_b.append(t)
                counts.add(c)
            row = {
                "mask_head": head, "size": size, "detections": n, "detections_seen": sorted(counts),
                "head_refinemask_s": statistics.median(head_r), "head_maskrcnn_s": statistics.median(head_b),
                "detector_refinemask_s": statistics.median(det_r), "detector_maskrcnn_s": statistics.median(det_b),
            }
            row["head_ratio"] = row["head_refinemask_s"] / row["head_maskrcnn_s"]
            row["detector_ratio"] = row["detector_refinemask_s"] / row["detector_maskrcnn_s"]
            if args.flops:
                h = refine.roi_heads.mask_head
                row["gmac_detector_refinemask"] = gmacs(lambda: refine([image]))
                row["gmac_detector_maskrcnn"] = gmacs(lambda: baseline([image]))
                row["gmac_head_refinemask"] = gmacs(lambda: refine.roi_heads.predict_masks(features, [boxes], [labels]))
                row["gmac_head_maskrcnn"] = gmacs(lambda: baseline.roi_heads.predict_masks(features, [boxes], [labels]))
                row["gmac_semantic_head"] = gmacs(lambda: h.semantic_forward(features["0"]))
                row["gmac_ratio"] = row["gmac_detector_refinemask"] / row["gmac_detector_maskrcnn"]
            if args.train and n == args.detections[0]:
                row.update(train_step_ratio(refine, baseline, height, width, args.repeats, args.device, args.flops))
            if args.onnx:
                import tempfile

                from refinemask.export import export_onnx, onnx_inference_time

                with tempfile.TemporaryDirectory() as tmp:
                    path = export_onnx(refine, f"{tmp}/model.onnx", example=image.permute(1, 2, 0).numpy())
                    timing = onnx_inference_time(path, [image.permute(1, 2, 0).numpy()], repeats=args.repeats, score_thresh=0.0)
                row["onnxruntime_refinemask_s"] = timing.seconds_per_image
                row["onnx_vs_pytorch"] = timing.seconds_per_image / row["detector_refinemask_s"]
            if not args.no_memory and args.device == "cpu":
                for key, name in (("refinemask", head), ("maskrcnn", "maskrcnn")):
                    row[f"peak_mb_{key}"], row[f"head_peak_mb_{key}"] = peak_memory_mb(args.backbone, name, n, height, width)
            rows.append(row)
            print(json.dumps(row), flush=True)

    print()
    for r in rows:
        if "gmac_ratio" in r:
            print(f"GMAC at {r['size']}, {r['detections']} detections: detector {r['mask_head']} "
                  f"{r['gmac_detector_refinemask']:.1f} / Mask R-CNN {r['gmac_detector_maskrcnn']:.1f} "
                  f"({r['gmac_ratio']:.2f}x); mask head {r['gmac_head_refinemask']:.1f} / {r['gmac_head_maskrcnn']:.1f}, "
                  f"of which the semantic head {r['gmac_semantic_head']:.1f}")
        if "train_ratio" in r:
            print(f"training iteration at {r['size']}: RefineMask {r['train_refinemask_s']:.2f} s, "
                  f"Mask R-CNN {r['train_maskrcnn_s']:.2f} s, ratio {r['train_ratio']:.2f}")
            if "gmac_train_refinemask" in r:
                print(f"training iteration GMAC at {r['size']}: RefineMask {r['gmac_train_refinemask']:.1f}, "
                      f"Mask R-CNN {r['gmac_train_maskrcnn']:.1f} "
                      f"({r['gmac_train_refinemask'] / r['gmac_train_maskrcnn']:.2f}x)")
    header = ("| RM = | image | dets | head RM (s) | head MR (s) | head × | detector RM (s) | detector MR (s) | detector × "
              "| onnxruntime RM (s) | peak MB RM / MR | head peak MB RM / MR |")
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for r in rows:
        mem = f"{r['peak_mb_refinemask']:.0f} / {r['peak_mb_maskrcnn']:.0f}" if "peak_mb_refinemask" in r else "-"
        head_mem = f"{r['head_peak_mb_refinemask']:.0f} / {r['head_peak_mb_maskrcnn']:.0f}" if "head_peak_mb_refinemask" in r else "-"
        print(
            f"| {r['mask_head']} | {r['size']} | {r['detections']} | {r['head_refinemask_s']:.3f} | {r['head_maskrcnn_s']:.3f} | "
            f"{r['head_ratio']:.2f} | {r['detector_refinemask_s']:.2f} | {r['detector_maskrcnn_s']:.2f} | "
            f"{r['detector_ratio']:.2f} | {r.get('onnxruntime_refinemask_s', float('nan')):.2f} | {mem} | {head_mem} |"
        )
    tv_rows = []
    if args.torchvision or args.torchvision_only:
        for size in args.sizes:
            height, width = (int(v) for v in size.lower().split("x"))
            image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(1)).to(args.device)
            for n in args.detections:
                tv_rows.append(torchvision_row(args.backbone, size, n, image, args.repeats, args.device))
                print(json.dumps(tv_rows[-1]), flush=True)
        print_torchvision_table(tv_rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows + tv_rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
