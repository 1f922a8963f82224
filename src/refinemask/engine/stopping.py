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


class StopRequest:
    """Turn SIGINT/SIGTERM into a request to stop after the current step (with a checkpoint).

    A second SIGINT raises KeyboardInterrupt at once.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("stop requested: finishing this step and saving a checkpoint (Ctrl-C again to quit now)")

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
