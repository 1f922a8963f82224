"""The training loop: ``refinemask train CONFIG [key=value ...]``.

One iteration is one optimiser step on ``train.batch_size`` images per process ×
``train.grad_accum_steps`` micro-batches × the number of processes. The learning rate is the
config's ``solver.base_lr`` scaled linearly from ``solver.reference_batch_size`` (16 in the
official schedules) to that total batch. Schedules are counted in iterations; the epochs of
``solver.lr_steps`` are converted with the number of iterations in the first epoch.

What a run writes to ``train.output_dir`` (rank 0 only):

* ``config.yaml``: the full config of the run;
* ``checkpoint_<iteration>.pth`` every ``train.checkpoint_every`` iterations, at the end and on
  Ctrl-C / SIGTERM (the step under way finishes first, on every rank if one got the signal; a
  second Ctrl-C stops at once; see :mod:`refinemask.engine.stopping`);
  ``last_checkpoint`` names the newest. Each holds the model, optimiser, scheduler, iteration,
  position in the epoch, config, label mapping and every rank's RNG states, written atomically
  and readable with ``torch.load(weights_only=True)``;
* ``model_final.safetensors`` (+ ``.yaml``) at the end, or when ``train.max_minutes`` of
  training have passed or iteration ``train.stop_at`` is done (the run then ends early, with a
  checkpoint that ``--resume`` continues from, and is evaluated as usual): the weights with config and label
  mapping, for ``refinemask predict --weights`` and :func:`refinemask.load_model`;
* ``metrics.json`` when ``train.eval_at_end``; ``log.txt`` and ``tensorboard/``.

``train.resume=true`` (``--resume``) continues from the last checkpoint exactly: the same
samples in the same order with the same flips (:mod:`refinemask.engine.data`), the same RNG
streams, so the weights equal those of an uninterrupted run.

Mixed precision (``train.amp``) is :mod:`refinemask.engine.precision`; stopping early on Ctrl-C,
SIGTERM or out of memory, :mod:`refinemask.engine.stopping`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import random
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from refinemask.config import Config, load_config, save_config, to_dict
from refinemask.engine import distributed
from refinemask.model_files import load_state_checked, save_weights
from refinemask.engine.data import (
    EpochBatches,
    TrainingSamples,
    resolve_num_classes,
    epoch_loader,
    setup_datasets,
)
from refinemask.engine.distributed import DistributedContext, configure_threads
from refinemask.engine.evaluate import evaluate
from refinemask.engine.init_weights import load_init_weights
from refinemask.engine.logging import (
    MetricWriter,
    close_run_logger,
    format_duration,
    format_losses,
    progress_bar,
    setup_run_logger,
)
from refinemask.engine.schedule import (
    build_optimizer,
    build_scheduler,
    decay_groups,
    scaled_learning_rate,
    total_batch_size,
)
from refinemask.engine.precision import autocast, check_amp
from refinemask.engine.stopping import NO_STOP, StopRequest, is_out_of_memory, leave, out_of_memory_error
from refinemask.engine.training_checkpoints import (
    capture_rng_state,
    config_changes,
    find_last_checkpoint,
    read_training_checkpoint,
    restore_rng_state,
    save_training_checkpoint,
)
from refinemask.errors import RefineMaskError

logger = logging.getLogger("refinemask.run")

FINAL_WEIGHTS = "model_final.safetensors"


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _to_device(target: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in target.items()}


@dataclasses.dataclass(frozen=True)
class StepOutcome:
    """What one optimiser step found, decided together by all ranks (one reduction per step).

    ``losses``: this rank's losses averaged over the micro-batches; ``stop``: the stop every rank
    takes after this step (:data:`~refinemask.engine.stopping.NO_STOP`, ``TERMINATE`` or
    ``INTERRUPT``); ``out_of_time``: whether ``train.max_minutes`` had passed on any rank.
    """

    losses: dict[str, float]
    stop: int = NO_STOP
    out_of_time: bool = False


class LossWindow:
    """Losses summed over the steps since the last log line, and when that window started."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.steps = 0
        self.start = time.perf_counter()

    def add(self, losses: dict[str, float]) -> None:
        for name, value in losses.items():
            self.sums[name] += value
        self.steps += 1

    def means(self) -> dict[str, float]:
        return {name: value / self.steps for name, value in self.sums.items()}

    def reset(self) -> None:
        self.sums.clear()
        self.steps = 0
        self.start = time.perf_counter()


class Trainer:
    """Everything one training run needs, set up from a :class:`~refinemask.config.Config`."""

    def __init__(self, config: Config, context: DistributedContext, command: tuple[str, ...] | None = None):
        self.config = config
        self.context = context
        self.command = command  # the command line that started the run, for the resume hint
        self.output_dir = Path(config.train.output_dir)
        self._setup_process()
        self._setup_data()
        self.model = self._build_model()
        self._setup_solver()
        self.deadline: float | None = None  # time.monotonic() at which run() ends training (train.max_minutes)
        self.iteration = 0
        self.epoch = 0
        self.position = 0  # batches of `epoch` already consumed by this rank
        if context.distributed:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[context.device.index] if context.device.type == "cuda" else None,
                find_unused_parameters=config.train.find_unused_parameters,
            )
        else:
            self.ddp = None
        self.writer = MetricWriter(self.output_dir / "tensorboard", config.train.tensorboard and context.is_main)
        self._describe()
        if context.is_main:
            save_config(config, self.output_dir / "config.yaml")

    # --- setup ------------------------------------------------------------------------------

    def _setup_process(self) -> None:
        """Output folder, log, threads, determinism, precision check and this rank's seed."""
        train, context = self.config.train, self.context
        if context.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        setup_run_logger(self.output_dir if context.is_main else None, context.is_main)
        configure_threads(train.num_threads)
        if train.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        check_amp(train.amp, context.device)
        # each rank its own stream: RPN/RoI sampling and multi-scale choices differ between ranks
        seed_everything(train.seed + context.rank)

    def _setup_data(self) -> None:
        """The datasets (validation only when the run evaluates), the number of classes, the sample stream."""
        config, context, train = self.config, self.context, self.config.train
        needs_val = train.eval_at_end or train.eval_every > 0
        datasets = setup_datasets(config, ("train", "val") if needs_val else ("train",), context.is_main)
        self.dataset = datasets["train"]
        self.val_dataset = datasets.get("val")
        resolve_num_classes(config, self.dataset)
        self.epoch_batches = EpochBatches(
            self.dataset, config.data, train.batch_size, train.seed, context.rank, context.world_size
        )
        self.samples = TrainingSamples(self.dataset, config.data.flip_prob, config.data.crop_size)
        if config.data.crop_size == 0 and context.is_main:
            from refinemask.data.validation import large_image_note

            note = large_image_note([self.dataset.coco.imgs[i] for i in self.dataset.ids], config.model.max_size)
            if note:
                logger.warning("%s: %s", self.dataset.ann_file.name, note)
        self.batches_per_epoch = len(self.epoch_batches.epoch(0))

    def _build_model(self) -> torch.nn.Module:
        """The model on the device, in training mode, with ``train.init_weights`` loaded."""
        from refinemask.modeling.detector import build_model_from_config

        train = self.config.train
        model_config = self.config.model
        if train.init_weights:  # the starting weights hold a backbone: never download ImageNet's
            model_config = dataclasses.replace(model_config, backbone_weights=None)
        model = build_model_from_config(model_config)
        if train.init_weights:
            logger.info("%s", load_init_weights(model, train.init_weights))
        return model.to(self.context.device).train()

    def _setup_solver(self) -> None:
        """Total batch, scaled learning rate, schedule length, optimiser, scheduler, gradient scaler."""
        train, solver, context = self.config.train, self.config.solver, self.context
        self.total_batch = total_batch_size(train.batch_size, context.world_size, train.grad_accum_steps)
        self.lr = (
            scaled_learning_rate(solver.base_lr, self.total_batch, solver.reference_batch_size)
            if solver.scale_lr
            else solver.base_lr
        )
        self.iters_per_epoch = max(1, self.batches_per_epoch // train.grad_accum_steps)
        self.total_iters = solver.max_iters if solver.max_iters > 0 else solver.epochs * self.iters_per_epoch
        self.optimizer = build_optimizer(decay_groups(self.model, solver.no_weight_decay), solver, self.lr)
        self.scheduler = build_scheduler(self.optimizer, solver, self.total_iters, self.iters_per_epoch)
        self.scaler = torch.amp.GradScaler(context.device.type) if train.amp == "fp16" else None
        self.params = [p for p in self.model.parameters() if p.requires_grad]

    def _describe(self) -> None:
        config, context = self.config, self.context
        batches_per_epoch = self.batches_per_epoch
        logger.info(
            "training %s (%s head, %s backbone) on %d images, %d classes; output %s",
            "Mask R-CNN" if config.model.mask_head == "maskrcnn" else "RefineMask",
            config.model.mask_head, config.model.backbone, len(self.dataset), config.model.num_classes,
            self.output_dir,
        )
        logger.info(
            "batch: %d images/device x %d device(s) (%s) x %d accumulation step(s) = %d images per iteration",
            config.train.batch_size, context.world_size, context.device.type, config.train.grad_accum_steps,
            self.total_batch,
        )
        if config.solver.scale_lr:
            logger.info(
                "learning rate: %g (base %g for a batch of %d, scaled linearly to %d)",
                self.lr, config.solver.base_lr, config.solver.reference_batch_size, self.total_batch,
            )
        else:
            logger.info("learning rate: %g (not scaled; solver.scale_lr=false)", self.lr)
        logger.info(
            "schedule: %d iterations (%d batches = %d iterations per epoch), %s, warmup %d",
            self.total_iters, batches_per_epoch, self.iters_per_epoch, config.solver.lr_schedule,
            config.solver.warmup_iters,
        )
        if config.solver.warmup_iters >= self.total_iters:
            # the warmup factor is below 1 for every iteration i < warmup_iters
            logger.warning(
                "solver.warmup_iters=%d is not shorter than the whole schedule (%d iterations): the learning "
                "rate never reaches %g; lower solver.warmup_iters",
                config.solver.warmup_iters, self.total_iters, self.lr,
            )

    def resume(self) -> bool:
        """Load the last checkpoint of the output directory; False when there is none."""
        path = find_last_checkpoint(self.output_dir) if self.context.is_main else None
        path = distributed.broadcast_object(path)
        if path is None:
            logger.info("train.resume: no checkpoint in %s, starting from scratch", self.output_dir)
            return False
        checkpoint = read_training_checkpoint(path)
        load_state_checked(self.model, checkpoint["model"], str(path))
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        if self.scaler is not None and checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        self.iteration = int(checkpoint["iteration"])
        self.epoch = int(checkpoint.get("epoch", 0))
        self.position = int(checkpoint.get("position", 0))
        saved_config = checkpoint.get("config") or {}
        # when a run ends is not what it computes: resuming with another limit is no change
        changed = config_changes(
            saved_config, to_dict(self.config), ignore={"train.resume", "train.max_minutes", "train.stop_at"}
        )
        if changed:
            logger.warning("resuming with a changed config: %s", ", ".join(changed[:8]))
        rng_states = checkpoint["rng"]
        if len(rng_states) == self.context.world_size:
            restore_rng_state(rng_states[self.context.rank])
        else:
            logger.warning(
                "the checkpoint was written by %d process(es), this run has %d: random streams start afresh",
                len(rng_states), self.context.world_size,
            )
        logger.info("resumed from %s at iteration %d", path, self.iteration)
        return True

    # --- the loop ---------------------------------------------------------------------------

    def _samples(self) -> Iterator[tuple]:
        """Batches from the current (epoch, position) on, across epochs, forever."""
        while True:
            batches = self.epoch_batches.epoch(self.epoch)
            if self.position < len(batches):
                loader = epoch_loader(
                    self.samples,
                    batches[self.position :],
                    self.config.data.num_workers,
                    seed=self.config.train.seed * 100_003 + self.epoch,
                )
                for batch in loader:
                    self.position += 1
                    yield batch
            self.epoch += 1
            self.position = 0

    def _step(self, stream: Iterator[tuple], stop: StopRequest) -> StepOutcome:
        """One optimiser step: its losses, and the stop and time-limit decisions of all ranks."""
        train = self.config.train
        device = self.context.device
        accumulation = train.grad_accum_steps
        forward = self.ddp if self.ddp is not None else self.model
        # the micro-batches' losses summed on the device, read back once per step: each float() or
        # bool() of a CUDA tensor waits for the GPU (there were seven per micro-batch)
        names: list[str] = []
        summed: torch.Tensor | None = None
        self.optimizer.zero_grad(set_to_none=True)
        for micro in range(accumulation):
            images, targets = next(stream)
            images = [image.to(device, non_blocking=True) for image in images]
            targets = [_to_device(target, device) for target in targets]
            last = micro == accumulation - 1
            # gradients are all-reduced once, on the last micro-batch
            sync = contextlib.nullcontext() if (self.ddp is None or last) else self.ddp.no_sync()
            with sync:
                with autocast(train.amp, device):
                    loss_dict = forward(images, targets)
                loss = sum(loss_dict.values())
                (self.scaler.scale(loss / accumulation) if self.scaler is not None else loss / accumulation).backward()
            names = list(loss_dict)
            values = torch.stack([v.detach().float() for v in loss_dict.values()]) / accumulation
            summed = values if summed is None else summed + values
        host = summed.tolist() if summed is not None else []
        losses = dict(zip(names, host))
        finite = all(math.isfinite(v) for v in host)
        out_of_time = self.deadline is not None and time.monotonic() >= self.deadline
        # every rank takes the same decisions, from this one reduction per step: a signal that comes
        # later (on one rank, at any moment) waits for the next step's, or the ranks would part
        flags = distributed.max_over_ranks(
            {"nonfinite": 0.0 if finite else 1.0, "stop": float(stop.requested), "time": float(out_of_time)},
            device,
        )
        finite = flags["nonfinite"] == 0.0
        if not finite:
            raise RefineMaskError(
                f"the loss became NaN or infinite at iteration {self.iteration + 1} "
                f"(learning rate {self.optimizer.param_groups[0]['lr']:.3g}); lower solver.base_lr, "
                "keep solver.grad_clip_norm on, or lengthen solver.warmup_iters"
            )
        if self.config.solver.grad_clip_norm > 0:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.config.solver.grad_clip_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        return StepOutcome(losses, stop=int(flags["stop"]), out_of_time=flags["time"] > 0.0)

    def save_checkpoint(self) -> Path | None:
        """Write the training state (every rank must call it: RNG states are gathered)."""
        rng_states = distributed.gather_objects(capture_rng_state())
        if not self.context.is_main:
            return None
        checkpoint = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "iteration": self.iteration,
            "epoch": self.epoch,
            "position": self.position,
            "world_size": self.context.world_size,
            "config": to_dict(self.config),
            "label_to_category": dict(self.dataset.label_to_category),
            "category_names": list(self.dataset.category_names),
            "rng": rng_states,
        }
        path = save_training_checkpoint(checkpoint, self.output_dir, keep=self.config.train.keep_checkpoints)
        logger.info("checkpoint: %s", path)
        return path

    def run_evaluation(self) -> dict:
        from refinemask.evaluation import format_metrics_table

        metrics, _ = evaluate(
            self.model,
            self.val_dataset,
            self.config.eval,
            self.context,
            self.val_dataset.label_to_category,
            lvis=self.config.data.format == "lvis",
            progress=self.config.train.progress_bar,
            num_workers=self.config.data.num_workers,
        )
        self.model.train()
        logger.info("evaluation at iteration %d:\n%s", self.iteration, format_metrics_table(metrics))
        self.writer.metrics(metrics, self.iteration)
        return metrics

    def run(self) -> Path:
        """Train to the end (or until stopped); returns the final weights' path."""
        train = self.config.train
        if train.resume:
            self.resume()
        final_path = self.output_dir / FINAL_WEIGHTS
        if self.iteration >= self.total_iters:
            logger.info("training already finished at iteration %d", self.iteration)
            if self.context.is_main and not final_path.is_file():
                self._save_final(final_path)
        else:
            self.deadline = time.monotonic() + train.max_minutes * 60 if train.max_minutes > 0 else None
            self._train_loop(final_path)
            if self.context.is_main:
                self._save_final(final_path)
            if train.eval_at_end and self.val_dataset is not None:
                metrics = self.run_evaluation()
                if self.context.is_main:
                    from refinemask.evaluation import save_metrics_json

                    save_metrics_json(metrics, self.output_dir / "metrics.json")
            distributed.barrier()
        logger.info("final weights: %s", final_path)  # last, after the evaluation's table
        return final_path

    def _train_loop(self, final_path: Path) -> None:
        """Steps until the schedule ends or the time limit passes; leaves the run on a stop request."""
        train = self.config.train
        stream = self._samples()
        bar = progress_bar(self.total_iters, self.iteration, train.progress_bar and self.context.is_main)
        window = LossWindow()
        saved_at = -1
        try:
            with StopRequest() as stop:
                while self.iteration < self._last_iteration():
                    lr = self.optimizer.param_groups[0]["lr"]
                    outcome = self._guarded_step(stream, stop)
                    self.iteration += 1
                    window.add(outcome.losses)
                    bar.update(1)
                    bar.set_postfix_str(f"loss {sum(outcome.losses.values()):.3f} lr {lr:.2e}")
                    ending = self.iteration == self.total_iters
                    pausing = self.iteration == self._last_iteration() and not ending  # train.stop_at
                    if (self.iteration % train.log_every == 0 or ending or pausing or outcome.stop
                            or outcome.out_of_time):
                        self._log_window(window, lr)
                    if self.iteration % train.checkpoint_every == 0 or ending:
                        self.save_checkpoint()
                        saved_at = self.iteration
                    if outcome.stop:
                        self._stop(outcome.stop, saved_at, final_path)
                    if (outcome.out_of_time or pausing) and not ending:
                        self._end_early(saved_at, outcome.out_of_time)
                        break
                    if train.eval_every > 0 and self.iteration % train.eval_every == 0 and not ending:
                        started = time.perf_counter()
                        self.run_evaluation()
                        window.start += time.perf_counter() - started  # s/it and ETA count training only
        finally:
            bar.close()

    def _guarded_step(self, stream: Iterator[tuple], stop: StopRequest) -> StepOutcome:
        """:meth:`_step`, with running out of memory turned into the error that names what to lower."""
        try:
            return self._step(stream, stop)
        except RuntimeError as err:
            if is_out_of_memory(err):
                raise out_of_memory_error(self.config, self.iteration + 1) from None
            raise
        except MemoryError:
            raise out_of_memory_error(self.config, self.iteration + 1) from None

    def _log_window(self, window: LossWindow, lr: float) -> None:
        """Log and write the losses averaged over the window's steps and all ranks; start a new window."""
        mean = distributed.mean_over_ranks(window.means(), self.context.device)
        seconds = (time.perf_counter() - window.start) / window.steps
        eta = seconds * (self.total_iters - self.iteration)
        logger.info(
            "iter %d/%d  lr %.4g  %s  %.2f s/it  eta %s",
            self.iteration, self.total_iters, lr, format_losses(mean), seconds, format_duration(eta),
        )
        self.writer.scalars({**mean, "loss": sum(mean.values()), "lr": lr}, self.iteration, "train/")
        window.reset()

    def _stop(self, kind: int, saved_at: int, final_path: Path) -> None:
        """Leave the run after a stop request (every rank, the same iteration), with a checkpoint."""
        if saved_at != self.iteration:
            self.save_checkpoint()
        if self.iteration >= self.total_iters and self.context.is_main:  # stopped as it ended
            self._save_final(final_path)
        distributed.barrier()  # no rank leaves (and lets torchrun end the job) mid-write
        logger.warning("stopped at iteration %d; continue with: %s", self.iteration, self.resume_command())
        leave(kind, self.iteration)

    def _last_iteration(self) -> int:
        """The iteration this run ends at: the schedule's end, or ``train.stop_at`` before it."""
        stop_at = self.config.train.stop_at
        return min(stop_at, self.total_iters) if stop_at > 0 else self.total_iters

    def _end_early(self, saved_at: int, out_of_time: bool) -> None:
        """The run ends before the schedule does (time limit or ``train.stop_at``): a checkpoint and the hint."""
        if saved_at != self.iteration:
            self.save_checkpoint()
        train = self.config.train
        if out_of_time:
            logger.warning(
                "time limit reached (train.max_minutes=%g): training ends at iteration %d of %d; continue with: %s",
                train.max_minutes, self.iteration, self.total_iters, self.resume_command(("train.max_minutes=0",)),
            )
        else:
            logger.info(
                "train.stop_at=%d: training ends at iteration %d of %d; continue with: %s",
                train.stop_at, self.iteration, self.total_iters, self.resume_command(("train.stop_at=0",)),
            )

    def resume_command(self, extra: tuple[str, ...] = ()) -> str:
        """The command line that continues this run: the one that started it, with ``--resume``.

        Without the starting command (``train(config)`` from Python), the config saved in the
        output folder, which holds every setting of the run.
        """
        import shlex

        started = self.command or ("refinemask", "train", str(self.output_dir / "config.yaml"))
        if self.context.world_size > 1 and started[:2] == ("refinemask", "train"):
            started = ("torchrun", f"--nproc_per_node={self.context.world_size}", "-m", "refinemask.cli", *started[1:])
        arguments = [a for a in started if a != "--resume"]
        arguments += [a for a in extra if a not in arguments]
        return shlex.join([*arguments, "--resume"])

    def _save_final(self, path: Path) -> None:
        save_weights(self.model, path, dict(self.dataset.label_to_category), list(self.dataset.category_names))

    def close(self) -> None:
        self.writer.close()


def train(config: Config, command: tuple[str, ...] | None = None) -> Path:
    """Train a model as ``config`` says; returns the path of ``model_final.safetensors``.

    Under ``torchrun`` every process calls it; the process group is set up here (and torn down
    again, unless the caller had set it up). ``command``: the command line that started the
    run (``refinemask train CONFIG key=value ...``), which the stop messages repeat with ``--resume``.
    """
    owns_group = not distributed.is_initialized()  # a caller's own process group is left alone
    context = distributed.init_distributed(config.train.device)
    trainer = None
    try:
        trainer = Trainer(config, context, command)
        return trainer.run()
    finally:
        if trainer is not None:
            trainer.close()
        close_run_logger()
        if owns_group:
            distributed.shutdown_distributed()


def train_from_config(config_path: str | Path, overrides: list[str] | tuple[str, ...] = (), resume: bool = False) -> Path:
    """``refinemask train CONFIG [key=value ...] [--resume]``."""
    config = load_config(config_path, list(overrides))
    if resume:
        config.train.resume = True
    return train(config, ("refinemask", "train", str(config_path), *overrides))
