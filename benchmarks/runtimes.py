"""Which runtime on a CPU: PyTorch eager, onnxruntime (plain and tuned), onnxruntime int8, OpenVINO.

Two parts, each printing a table:

* **speed** (default): ResNet-50-FPN models with random weights (as benchmarks/speed.py: no
  score threshold, no NMS, so every image has exactly ``--detections`` detections), one image
  per size, for each head. Each runtime runs the same image in turns (eager, onnxruntime plain,
  onnxruntime tuned, int8, OpenVINO, eager, ...) and the medians are compared as ratios to
  eager, so the machine's load affects all alike. Every runtime gets ``--threads`` threads
  except onnxruntime "plain", which keeps its own default (``SessionOptions()``). Peak memory
  (``--memory``): the max RSS of a fresh process that loads the runtime and runs the image once.
  The int8 graph is calibrated on ``--calibration-images`` smooth random images of the size.
* **quality** (``--quality RUN_DIR``): the trained models of a benchmarks/quality.py run (the
  demo's recipe), each runtime's mask AP, Boundary AP and box AP on that run's validation split;
  int8 calibrated on ``--calibration-images`` images of the *training* split. Each validation
  image goes through every runtime in turn, timed: the median seconds per image at the
  demo's size (256 px) are a second speed figure, with the trained models.

    python benchmarks/runtimes.py --sizes 512x768 800x1216 --detections 10 100 --threads 2 --memory
    python benchmarks/runtimes.py --sizes 512x768 --detections 10 --heads refinemask maskrcnn
    python benchmarks/runtimes.py --quality bench-quality-easy --calibration-images 20
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

RUNTIMES = ("eager", "ort-plain", "ort-tuned", "ort-int8", "openvino")
HEADS = ("refinemask", "simple_refinemask", "maskrcnn")


def smooth_images(count: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """(H, W, 3) float32 images of smooth random colour fields: natural-image-like statistics
    for calibration and timing without a data set."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        coarse = torch.rand(1, 3, max(2, height // 32), max(2, width // 32), generator=g)
        image = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
        out.append(image[0].clamp(0, 1).permute(1, 2, 0).contiguous().numpy())
    return out


def build_runners(model, folder: Path, calibration: list[np.ndarray], threads: int, runtimes) -> dict:
    """name -> a function of one (H, W, 3) float image returning the detections."""
    from refinemask.engine.predict import Predictor
    from refinemask.export import OnnxPredictor, export_onnx, quantize_static_int8

    runners = {}
    if "eager" in runtimes:
        runners["eager"] = Predictor(model)
    if set(runtimes) - {"eager"}:
        fp32 = export_onnx(model, folder / "model.onnx", example=calibration[0])
        if "ort-plain" in runtimes:
            runners["ort-plain"] = OnnxPredictor(fp32, tuned=False).predict_array
        if "ort-tuned" in runtimes:
            runners["ort-tuned"] = OnnxPredictor(fp32, num_threads=threads).predict_array
        if "ort-int8" in runtimes:
            int8 = quantize_static_int8(fp32, folder / "model.int8.onnx", calibration)
            runners["ort-int8"] = OnnxPredictor(int8, num_threads=threads).predict_array
        if "openvino" in runtimes:
            runners["openvino"] = OnnxPredictor(fp32, num_threads=threads, runtime="openvino").predict_array
    return runners


_MEMORY = """
import json, sys, numpy as np, torch
torch.set_num_threads({threads})
kind, path, image = {kind!r}, {path!r}, np.load({image!r})
if kind == "eager":
    from refinemask.engine.predict import Predictor
    run = Predictor(path)
else:
    from refinemask.export import OnnxPredictor
    options = dict(ort_plain=dict(tuned=False), openvino=dict(runtime="openvino", num_threads={threads}))
    run = OnnxPredictor(path, **options.get(kind.replace("-", "_"), dict(num_threads={threads}))).predict_array
with torch.no_grad():
    run(image)
with open("/proc/self/status") as f:
    print(next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024.0)
"""


def peak_memory_mb(kind: str, path: Path, image_file: Path, threads: int) -> float:
    """Max RSS (MB) of a fresh process that loads ``path`` in ``kind`` and runs one image."""
    code = _MEMORY.format(kind=kind, path=str(path), image=str(image_file), threads=threads)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def speed_rows(args) -> list[dict]:
    from refinemask import build_model
    from refinemask.model_files import save_weights

    # the script's folder is on sys.path when it runs (and in tests/test_benchmarks.py)
    from common import model_options
    from speed import MASK_HEADS

    rows = []
    for size in args.sizes:
        height, width = (int(v) for v in size.lower().split("x"))
        image = smooth_images(1, height, width, seed=1)[0]
        calibration = smooth_images(args.calibration_images, height, width, seed=2)
        for n in args.detections:
            for head in args.heads:
                torch.manual_seed(0)
                settings = MASK_HEADS.get(head, {"mask_head": head})
                model = build_model(**settings, **model_options(args.backbone, n, min(height, width), max(height, width))).eval()
                with tempfile.TemporaryDirectory(prefix="refinemask-runtimes-") as tmp:
                    folder = Path(tmp)
                    start = time.perf_counter()
                    runners = build_runners(model, folder, calibration, args.threads, args.runtimes)
                    setup_s = time.perf_counter() - start
                    times = {name: [] for name in runners}
                    counts = {}
                    with torch.no_grad():
                        for name, run in runners.items():  # warm-up
                            counts[name] = len(run(image)["boxes"])
                        for _ in range(args.repeats):  # in turns
                            for name, run in runners.items():
                                t = time.perf_counter()
                                run(image)
                                times[name].append(time.perf_counter() - t)
                    row = {"head": head, "size": size, "detections": n, "threads": args.threads, "counts": counts,
                           "setup_s": setup_s, "seconds": {k: statistics.median(v) for k, v in times.items()}}
                    if "eager" in row["seconds"]:
                        row["speedup_vs_eager"] = {k: row["seconds"]["eager"] / v for k, v in row["seconds"].items()}
                    if args.memory:
                        np.save(folder / "image.npy", image)
                        files = {"eager": save_weights(model, folder / "model.safetensors"), "ort-plain": folder / "model.onnx",
                                 "ort-tuned": folder / "model.onnx", "ort-int8": folder / "model.int8.onnx",
                                 "openvino": folder / "model.onnx"}
                        row["peak_mb"] = {k: peak_memory_mb(k, files[k], folder / "image.npy", args.threads) for k in runners}
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def print_speed_table(rows: list[dict]) -> None:
    names = [r for r in RUNTIMES if any(r in row["seconds"] for row in rows)]
    print()
    print("| head | size | detections | " + " | ".join(f"{n} s (× eager)" for n in names) + " | peak MB " + " / ".join(names) + " |")
    print("|---" * (4 + len(names)) + "|")
    for row in rows:
        cells = []
        for n in names:
            s = row["seconds"].get(n)
            ratio = row.get("speedup_vs_eager", {}).get(n)
            cells.append("" if s is None else f"{s:.2f}" + (f" ({ratio:.2f}×)" if ratio else ""))
        mem = " / ".join(f"{row['peak_mb'][n]:.0f}" for n in names if n in row.get("peak_mb", {}))
        print(f"| {row['head']} | {row['size']} | {row['detections']} | " + " | ".join(cells) + f" | {mem} |")


def quality_rows(args) -> list[dict]:
    """Each runtime's AP with the trained models of a quality.py run, on its validation split."""
    from refinemask.config import load_config
    from refinemask.data.images import as_rgb_array
    from refinemask.engine.data import build_dataset
    from refinemask.errors import RefineMaskError
    from refinemask.evaluation import evaluate_coco, predictions_to_coco_results
    from refinemask.model_files import load_model

    torch.set_num_threads(args.threads)
    run_dir = Path(args.quality)
    runs = sorted(run_dir.glob("*_seed*/model_final.safetensors"))
    if not runs:
        raise RefineMaskError(f"no */model_final.safetensors under {run_dir}: pass the --out folder of benchmarks/quality.py")
    rows = []
    for weights in runs:
        config = load_config(str(weights.parent / "config.yaml"))
        val, train = build_dataset(config, "val"), build_dataset(config, "train")
        arrays = [as_rgb_array(val[i][0]) for i in range(len(val))]
        ids = [int(val[i][1]["image_id"]) for i in range(len(val))]
        calibration = [as_rgb_array(train[i][0]) for i in range(min(args.calibration_images, len(train)))]
        model = load_model(weights).eval()
        with tempfile.TemporaryDirectory(prefix="refinemask-runtimes-") as tmp:
            runners = build_runners(model, Path(tmp), calibration, args.threads, args.runtimes)
            outputs = {name: [] for name in runners}
            seconds = {name: [] for name in runners}
            with torch.no_grad():
                for name, run in runners.items():  # warm-up
                    run(arrays[0])
                for array in arrays:  # each image through every runtime in turn: the load hits all alike
                    for name, run in runners.items():
                        t = time.perf_counter()
                        outputs[name].append(run(array))
                        seconds[name].append(time.perf_counter() - t)
            for name in runners:
                results = predictions_to_coco_results(outputs[name], ids, val.label_to_category)
                metrics = evaluate_coco(val.coco.dataset, results, ("segm", "bbox", "boundary"), list(config.eval.boundary_dilations))
                row = {"model": weights.parent.name, "runtime": name, "mask_AP": metrics["segm"]["AP"],
                       "boundary_AP": metrics["boundary"]["AP"], "box_AP": metrics["bbox"]["AP"],
                       "seconds_per_image": statistics.median(seconds[name])}
                if "eager" in seconds:
                    row["speedup_vs_eager"] = statistics.median(seconds["eager"]) / row["seconds_per_image"]
                rows.append(row)
                print(json.dumps(row), flush=True)
    print()
    print("| model | runtime | mask AP | Boundary AP | box AP | s per image (× eager) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ratio = f" ({r['speedup_vs_eager']:.2f}×)" if "speedup_vs_eager" in r else ""
        print(f"| {r['model']} | {r['runtime']} | {r['mask_AP']:.3f} | {r['boundary_AP']:.3f} | {r['box_AP']:.3f} "
              f"| {r['seconds_per_image']:.3f}{ratio} |")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["800x1216", "512x768"])
    parser.add_argument("--detections", type=int, nargs="+", default=[100, 10])
    parser.add_argument("--heads", nargs="+", default=list(HEADS))
    parser.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=list(RUNTIMES))
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--threads", type=int, default=None, help="threads of every runtime but ort-plain (default: all cores)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calibration-images", type=int, default=8)
    parser.add_argument("--memory", action="store_true", help="also the peak RSS of each runtime, a fresh process each")
    parser.add_argument("--quality", metavar="RUN_DIR", default=None, help="the --out folder of a benchmarks/quality.py run")
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    from refinemask.export import available_cores

    args.threads = args.threads or available_cores()
    torch.set_num_threads(args.threads)
    if args.quality:
        rows = quality_rows(args)
    else:
        rows = speed_rows(args)
        print_speed_table(rows)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
