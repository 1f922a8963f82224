"""Peak memory of prediction against image size and detections: full-image masks vs box-local ones.

Each case runs in its own process: build a model that returns exactly N detections (random
ResNet-18 weights, narrow RefineMask head, the box classifier biased to the foreground, score
threshold 0), make an H x W float32 image (what ``refinemask predict`` has after decoding a
file), then reset the process's peak RSS (Linux ``/proc/self/clear_refs``) and do what
``refinemask predict`` does with it: ``Predictor`` -> COCO results with RLE masks -> the overlay
(drawn, not saved). The table gives the RSS the call started from (torch, the model and the
float image), its peak, and the float32 image's size for reference.

"before" is the same script run on other code, e.g. the main checkout before box-local masks
(its Predictor has no ``masks=`` argument, so it returns full-image masks):

    python benchmarks/memory.py --megapixels 1 12 36 100 --detections 10 100 --extra 36:24 \\
        --code /path/to/main/src --code .

Cases whose full-image masks alone would pass ``--max-gb`` are not run on code without
``masks=``; the table shows an estimate instead, marked as one: ``BYTES_PER_MASK_PIXEL`` x
detections x pixels above the model's own cost, the slope the measured full-image rows show
(the float32 paste, its bool copy, the RLE's Fortran copy and the overlay's copies).
``--table-from rows.json`` prints the table of an earlier run again.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve()
# measured on full-image code: (peak - before) minus the box-local run's, per detection and pixel,
# 9.2 at 1 MP / 100 detections and 8.8 at 36 MP / 10 (docs/benchmarks.md)
BYTES_PER_MASK_PIXEL = 9


def image_size(megapixels: float) -> tuple[int, int]:
    """(H, W) of a 4:3 image of about ``megapixels``."""
    width = round(math.sqrt(megapixels * 1e6 * 4 / 3))
    return round(width * 3 / 4), width


def rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def run_case(megapixels: float, detections: int, threads: int) -> dict:
    """One case in this process: the prediction's peak RSS (bytes) and what it found."""
    import inspect

    import numpy as np
    import torch

    torch.set_num_threads(threads)
    import refinemask
    from refinemask import build_model
    from refinemask.engine.predict import Predictor
    from refinemask.evaluation import predictions_to_coco_results
    from refinemask.overlay import draw_overlay

    torch.manual_seed(0)
    model = build_model(
        num_classes=3, backbone="resnet18", mask_head="refinemask", mask_instance_channels=64,
        mask_semantic_channels=32, detections_per_img=detections, box_score_thresh=0.0,
        rpn_post_nms_top_n_test=max(1000, 4 * detections),
    )
    with torch.no_grad():
        # every proposal a confident foreground box: exactly `detections` survive NMS
        model.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([-4.0, 2.0, 1.0, 0.0]))
        model.roi_heads.box_predictor.bbox_pred.weight.mul_(0.1)
        model.roi_heads.mask_head.stages[1].instance_logits.bias += 30.0  # masks cover part of each box
    model.eval()
    model.category_names = ["a", "b", "c"]
    model.label_to_category = {1: 1, 2: 2, 3: 3}
    height, width = image_size(megapixels)
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (max(2, height // 64), max(2, width // 64), 3), dtype=np.uint8)
    image = np.ascontiguousarray(np.kron(small, np.ones((64, 64, 1), dtype=np.uint8))[:height, :width])
    image = np.pad(image, ((0, height - image.shape[0]), (0, width - image.shape[1]), (0, 0)), mode="edge")
    # as refinemask predict has it after load_image: a float32 (3, H, W) image in [0, 1]
    tensor = torch.from_numpy(image).permute(2, 0, 1).float().div_(255)
    del image
    predictor = Predictor(model)
    box_local = "masks" in inspect.signature(predictor.__call__).parameters
    Path("/proc/self/clear_refs").write_text("5")  # the peak RSS starts again from here
    start = rss_kb("VmRSS")
    prediction = predictor(tensor, masks="box") if box_local else predictor(tensor)
    results = predictions_to_coco_results([prediction], [1], predictor.label_to_category)
    draw_overlay(tensor, prediction, predictor.category_names)
    peak = rss_kb("VmHWM")
    return {
        "megapixels": megapixels, "height": height, "width": width, "detections": detections,
        "found": len(results), "box_local": box_local, "code": str(Path(refinemask.__file__).parents[1]),
        "start_bytes": start * 1024, "peak_bytes": peak * 1024, "float_image_bytes": 12 * height * width,
    }


def spawn(code: str, megapixels: float, detections: int, threads: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(Path(code).resolve()), OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, str(HERE), "--case", str(megapixels), str(detections), "--threads", str(threads)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return {"megapixels": megapixels, "detections": detections, "error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def supports_box_masks(code: str) -> bool:
    env = dict(os.environ, PYTHONPATH=str(Path(code).resolve()))
    probe = "import inspect; from refinemask.engine.predict import Predictor; print('masks' in inspect.signature(Predictor.__call__).parameters)"
    return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True).stdout.strip() == "True"


def gb(value: float) -> str:
    return f"{value / 1e9:.2f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megapixels", type=float, nargs="+", default=[1, 12, 36, 100])
    parser.add_argument("--detections", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--extra", nargs="*", default=["36:24"], metavar="MP:N", help="more (megapixels, detections) cases")
    parser.add_argument("--code", nargs="+", default=["src"], help="source folders (holding refinemask/) to compare")
    parser.add_argument("--max-gb", type=float, default=7.0, help="skip full-image cases estimated above this")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--table-from", metavar="ROWS.json", help="print the table of an earlier run's --json")
    parser.add_argument("--case", nargs=2, metavar=("MP", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(float(args.case[0]), int(args.case[1]), args.threads)))
        return 0
    if args.table_from:
        rows = json.loads(Path(args.table_from).read_text())
        for r in rows:
            if "skipped_estimate_bytes" in r:
                h, w = image_size(r["megapixels"])
                r["skipped_estimate_bytes"] = BYTES_PER_MASK_PIXEL * r["detections"] * h * w
        print_table(rows)
        return 0
    cases = [(mp, n) for mp in args.megapixels for n in args.detections]
    cases += [(float(e.split(":")[0]), int(e.split(":")[1])) for e in args.extra]
    cases = sorted(set(cases))
    rows = []
    for code in args.code:
        box_local = supports_box_masks(code)
        label = "box-local masks" if box_local else "full-image masks"
        for mp, n in cases:
            height, width = image_size(mp)
            estimate = BYTES_PER_MASK_PIXEL * n * height * width
            if not box_local and estimate > args.max_gb * 1e9:
                row = {"megapixels": mp, "detections": n, "code": code, "masks": label, "skipped_estimate_bytes": estimate}
            else:
                row = {**spawn(code, mp, n, args.threads), "masks": label, "code": code}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


def print_table(rows: list[dict]) -> None:
    print()
    print("| masks | image | detections | float32 image (GB) | RSS before the call (GB) | peak RSS (GB) | peak - before (GB) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        height, width = image_size(r["megapixels"])
        image = f"{r['megapixels']:g} MP ({width}x{height})"
        if "skipped_estimate_bytes" in r:
            print(f"| {r['masks']} | {image} | {r['detections']} | {gb(12 * height * width)} | – | not run | "
                  f"≈ {gb(r['skipped_estimate_bytes'])} more (estimate: {BYTES_PER_MASK_PIXEL} B × detections × pixels) |")
        elif "error" in r:
            print(f"| {r['masks']} | {image} | {r['detections']} | – | – | did not finish: {r['error'] or 'stopped'} | – |")
        else:
            print(f"| {r['masks']} | {image} | {r['found']} | {gb(r['float_image_bytes'])} | {gb(r['start_bytes'])} | "
                  f"{gb(r['peak_bytes'])} | {gb(r['peak_bytes'] - r['start_bytes'])} |")


if __name__ == "__main__":
    sys.exit(main())
