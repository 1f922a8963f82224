"""How a training run stops before its end: on request (Ctrl-C, SIGTERM), or out of memory.

A request finishes the step under way and writes a checkpoint that ``--resume`` continues from;
running out of memory is an error that names the settings to lower.
"""
from __future__ import annotations

import logging
import signal

import torch

from refinemask.config import Config
from refinemask.errors import RefineMaskError

logger = logging.getLogger("refinemask.run")

OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is the device (CUDA) or the host running out of memory."""
    if isinstance(err, (OUT_OF_MEMORY, MemoryError)):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def out_of_memory_error(config: Config, iteration: int) -> RefineMaskError:
    """The error to raise instead: where it happened and the settings that lower the memory needed."""
    model = config.model
    return RefineMaskError(
        f"out of memory at iteration {iteration}: lower the image size (model.max_size={model.max_size}, "
        f"model.min_size={model.min_size}), the batch (train.batch_size={config.train.batch_size}; raise "
        f"train.grad_accum_steps to keep the total batch) or the sampled RoIs "
        f"(model.box_batch_size_per_image={model.box_batch_size_per_image})"
    )


class TrainingStopped(Exception):
    """A run stopped on SIGTERM at ``iteration``, after writing the checkpoint ``--resume`` continues from.

    Not an error: ``refinemask train`` exits with status 0, so that ``torchrun`` (which tears
    down the other ranks when one fails) and a cluster's requeue treat it as a clean stop.
    """

    def __init__(self, iteration: int):
        super().__init__(f"stopped at iteration {iteration} (SIGTERM) with a checkpoint")
        self.iteration = iteration


# what a rank asks for, as a number so that the ranks' wishes reduce with MAX: an interrupt
# (Ctrl-C) outranks a termination, so every rank leaves the same way
NO_STOP, TERMINATE, INTERRUPT = 0, 1, 2


class StopRequest:
    """Turn SIGINT/SIGTERM into a request to stop after the current step (with a checkpoint).

    The handler only records the request (:attr:`requested`, at any moment, on one rank or
    several); the training loop decides once per step, from the requests of all ranks reduced
    in the step's one all-reduce of flags, so every rank stops after the same iteration. A second SIGINT
    raises KeyboardInterrupt at once.
    """

    def __init__(self) -> None:
        self.requested = NO_STOP
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        kind = INTERRUPT if signum == signal.SIGINT else TERMINATE
        self.requested = max(self.requested, kind)
        logger.warning("stop requested: finishing this step and saving a checkpoint (Ctrl-C again to quit now)")

    def request(self, kind: int = TERMINATE) -> None:
        """Ask to stop as a signal would (for code that drives the trainer, e.g. benchmarks)."""
        self.requested = max(self.requested, kind)

    def __enter__(self) -> StopRequest:
        try:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous.clear()
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
