"""``refinemask demo``: RefineMask against Mask R-CNN on built-in data, within a time budget.

1. Writes the easy synthetic thin-structure preset (no download).
2. Measures a few training steps of each model, then trains both with the same schedule
   (the same number of iterations, as many as fit in the budget together), backbone
   (pretrained EfficientNet-Lite0-FPN) and data, through the normal training engine, in turns
   of a chunk of iterations each (:func:`train_in_chunks`), so that a machine slower than
   measured stops both at the same iteration.
3. Evaluates both on the validation split: mask AP/AP50/AP75 and Boundary AP at dilation 0.02
   and 0.008.
4. Writes the report into ``--out``: ``report.md`` (the table), ``comparison.png`` (both
   models' masks side by side, zoomed on thin parts), ``loss_curves.png``, and each model's
   weights (``<model>/model_final.safetensors``, usable with ``refinemask predict``).

Ctrl-C, or the end of the budget, still leaves a report of whatever finished.
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import torch

from refinemask.errors import RefineMaskError

logger = logging.getLogger("refinemask.demo")

# (key, bundled config, display name)
MODELS = (("refinemask", "quickstart_refinemask", "RefineMask"), ("maskrcnn", "quickstart_maskrcnn", "Mask R-CNN"))
# evaluation of both models and the report: about 20 s here, plus about half that again for the
# masks on the ground-truth boxes (an eval --gt-boxes took 0.54x an eval's time, measured together)
EVAL_RESERVE_S = 60.0
STEP_TIME_MARGIN = 1.45  # mean step over a run vs. the calibration (1.14-1.39 measured here); train.max_minutes is the hard stop


def _configs(out: Path, device: str, seed: int, overrides: list[str]):
    from refinemask.config import load_config

    configs = {}
    for key, name, _ in MODELS:
        configs[key] = load_config(
            name,
            [
                f"train.output_dir={out / key}",
                f"data.synthetic.root={out / 'data'}",
                f"train.device={device}",
                f"train.seed={seed}",
                "train.eval_at_end=false",
                "train.resume=false",
                *overrides,
            ],
        )
    return configs


def measure_step_seconds(config, steps: int = 3) -> float:
    """Seconds per training iteration of ``config``'s model on its data (after one warm-up)."""
    from refinemask.data import collate
    from refinemask.engine.data import build_dataset
    from refinemask.modeling.detector import build_model_from_config

    torch.manual_seed(config.train.seed)
    model = build_model_from_config(config.model).train()
    dataset = build_dataset(config, "train")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-6)
    batch = config.train.batch_size
    times = []
    for i in range(steps + 1):
        images, targets = collate([dataset[(i * batch + j) % len(dataset)] for j in range(batch)])
        start = time.perf_counter()
        loss = sum(model(list(images), list(targets)).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def run_demo(minutes: float = 14.0, out: str | Path = "refinemask-demo", device: str = "cpu", seed: int = 0,
             overrides: list[str] | None = None) -> Path:
    """Run the whole demo; returns the path of ``report.md``."""
    from refinemask.engine.data import prepare_synthetic_data

    if minutes <= 0:
        raise RefineMaskError(f"--minutes must be positive, got {minutes}")
    start = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    configs = _configs(out, device, seed, list(overrides or []))
    print(f"[demo] writing the synthetic data set to {out / 'data'}", flush=True)
    prepare_synthetic_data(configs["refinemask"])

    status: dict[str, str] = {}
    interrupted = False
    try:
        step_seconds = {}
        for key, _, display in MODELS:
            step_seconds[key] = measure_step_seconds(configs[key])
            print(f"[demo] {display}: {step_seconds[key]:.2f} s per training step", flush=True)
        # both models follow the same schedule (the same iterations); the budget decides how many
        left = minutes * 60 - (time.time() - start) - EVAL_RESERVE_S
        # steps grow slower once proposals match objects (more positives train the mask heads than
        # in the untrained calibration steps): keep a margin; the hard stop below bounds the rest
        iters = max(10, int(left / (STEP_TIME_MARGIN * sum(step_seconds.values()))))
        for key, _, _ in MODELS:
            cfg = configs[key]
            cfg.solver = replace(cfg.solver, max_iters=iters, warmup_iters=max(1, min(cfg.solver.warmup_iters, iters // 10)))
            # every chunk's end is a checkpoint; all are kept, they are few
            cfg.train = replace(cfg.train, checkpoint_every=max(10, iters // 4), keep_checkpoints=0)
        done = train_in_chunks(configs, out, iters, step_seconds, start + minutes * 60 - EVAL_RESERVE_S)
        for key, _, _ in MODELS:
            status[key] = f"trained {done[key]} iterations" if done[key] >= iters else (
                f"trained {done[key]} of {iters} iterations (time budget)")
    except KeyboardInterrupt:
        interrupted = True
        print("\n[demo] interrupted: evaluating what finished (Ctrl-C again to abort)", flush=True)

    from refinemask.demo_report import write_report

    iterations = {display: iterations_done(out / key) for key, _, display in MODELS}
    report = write_report(out, configs, MODELS, status, interrupted, time.time() - start, iterations)
    print(f"[demo] report: {report}", flush=True)
    return report


def train_in_chunks(configs: dict, out: Path, iters: int, step_seconds: dict[str, float],
                    training_ends: float) -> dict[str, int]:
    """Train the models in turns, a chunk of iterations each, so that all stop at the same iteration.

    Each turn ends at ``train.stop_at`` (a checkpoint), and the next resumes from it exactly,
    so the chunks give the weights of one uninterrupted run. Every turn has a hard stop
    (``train.max_minutes``) at what the budget leaves after the other models' share of the
    chunk; a model it cuts sets the iteration the models after it stop at. A new chunk starts
    only when the measured speed says that both fit before ``training_ends`` (time.time()).
    Returns each model's iterations.
    """
    from refinemask.engine.train import train

    keys = [key for key, _, _ in MODELS]
    display = {key: name for key, _, name in MODELS}
    chunk = configs[keys[0]].train.checkpoint_every
    done = dict.fromkeys(keys, 0)
    seconds = dict(step_seconds)  # per iteration: the calibration, then what the chunks took
    target = 0
    while target < iters:
        planned = min(iters, target + chunk)
        if target and time.time() + sum((planned - target) * seconds[k] for k in keys) > training_ends:
            break  # the next chunk would not fit: both stop here, at the same iteration
        target = planned
        for index, key in enumerate(keys):
            later = sum((target - done[k]) * seconds[k] for k in keys[index + 1 :])
            cap_minutes = max(0.01, (training_ends - time.time() - later) / 60)
            cfg = configs[key]
            cfg.train = replace(cfg.train, stop_at=target, max_minutes=cap_minutes, resume=done[key] > 0)
            print(f"[demo] training {display[key]}: iterations {done[key] + 1}-{target} of {iters}", flush=True)
            began, before = time.time(), done[key]
            train(cfg)
            done[key] = iterations_done(out / key)
            if done[key] > before:
                seconds[key] = (time.time() - began) / (done[key] - before)
            if done[key] < target:  # cut by the hard stop: the models after it stop where it did
                target = done[key]
        if len(set(done.values())) > 1 or target < planned:
            break  # a later model was cut as well (the report says the run is unequal), or the budget is spent
    return done


def iterations_done(output_dir: Path) -> int:
    """The iteration of a run's newest checkpoint (0 when it has none)."""
    from refinemask.engine.training_checkpoints import checkpoint_iteration, find_last_checkpoint

    last = find_last_checkpoint(output_dir)
    return checkpoint_iteration(last) if last is not None else 0
