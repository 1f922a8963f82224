"""What a run tells its user: a progress bar, a text log and TensorBoard scalars.

Only rank 0 writes. In ``OUTPUT_DIR``:

* ``log.txt``: every line the run logs (config, scaled learning rate, losses every
  ``train.log_every`` iterations, checkpoints, metrics tables), appended across resumes;
* ``tensorboard/``: scalars ``train/<loss>``, ``train/lr``, ``eval/<iou type>/<metric>``
  (``tensorboard --logdir OUTPUT_DIR``).

On the terminal, a tqdm bar shows the iteration, the ETA and the current losses; log lines are
printed above it.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path

from tqdm import tqdm

LOGGER_NAME = "refinemask.run"


class _TqdmHandler(logging.Handler):
    """Print log records without breaking the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never stop training
            self.handleError(record)


def setup_run_logger(output_dir: str | Path | None, is_main: bool, console: bool = True) -> logging.Logger:
    """The run's logger: console and ``output_dir/log.txt`` on rank 0, silent elsewhere.

    Calling it again (a second run in the same process) replaces the previous handlers.
    """
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.propagate = False
    if not is_main:
        logger.addHandler(logging.NullHandler())
        logger.setLevel(logging.WARNING)
        return logger
    logger.setLevel(logging.INFO)
    if console:
        handler = _TqdmHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    if output_dir is not None:
        path = Path(output_dir) / "log.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(path, mode="a", encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(file_handler)
    return logger


def close_run_logger() -> None:
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


class MetricWriter:
    """TensorBoard scalars on rank 0 (a no-op elsewhere or when disabled)."""

    def __init__(self, log_dir: str | Path, enabled: bool):
        self._writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(log_dir))

    def scalars(self, values: Mapping[str, float], step: int, prefix: str = "") -> None:
        if self._writer is None:
            return
        for name, value in values.items():
            self._writer.add_scalar(f"{prefix}{name}", float(value), step)

    def metrics(self, metrics: Mapping[str, Mapping[str, float]], step: int) -> None:
        """``{iou_type: {metric: value}}`` as ``eval/<iou_type>/<metric>`` (NaN skipped)."""
        for iou_type, values in metrics.items():
            if isinstance(values, Mapping):
                finite = {k: v for k, v in values.items() if isinstance(v, (int, float)) and not math.isnan(v)}
                self.scalars(finite, step, prefix=f"eval/{iou_type}/")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def progress_bar(total: int, initial: int, enabled: bool, description: str = "train"):
    """A tqdm bar over iterations (with ETA); disabled on ranks other than 0."""
    return tqdm(
        total=total,
        initial=initial,
        disable=not enabled,
        desc=description,
        unit="it",
        dynamic_ncols=True,
        leave=True,
    )


def format_losses(losses: Mapping[str, float]) -> str:
    """``loss 1.234 (classifier 0.5, box_reg 0.2, ...)``."""
    total = sum(losses.values())
    parts = ", ".join(f"{name.removeprefix('loss_')} {value:.4g}" for name, value in losses.items())
    return f"loss {total:.4g} ({parts})"


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` of a duration (an ETA), ``?`` when it is not finite."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
