"""One rank of the SIGTERM tests in test_distributed.py (started by torchrun).

Usage: ddp_stop_worker.py CONFIG OUT_DIR REPORT_DIR MOMENTS_JSON

In one process group (one torchrun launch for all runs) every rank trains CONFIG
uninterrupted into OUT_DIR/whole, then, for each moment, trains into OUT_DIR/stopped<i> while
SIGTERM reaches the moment's rank only, and resumes that run with ``--resume``. A moment is
``{"rank": R, "at": POINT, "call": N}`` (SIGTERM on rank R at the N-th call of POINT) or
``{"rank": R, "after_s": T}`` (SIGTERM on rank R, T seconds into the training loop). POINTs:

* ``data``: while a sample of the step is loaded (before the step's reduction of flags);
* ``after_reduce``: just after the step's reduction of flags (the window where a rank that read
  its own flag would leave alone);
* ``after_log``: just after the logging reduction that follows the step.

Writes REPORT_DIR/rank<R>.json: for each moment the exit status of ``refinemask train``, the
iteration this rank stopped after (None when it finished), the exit status of the resumed run,
and (rank 0) the checkpoints written and whether the resumed weights equal the uninterrupted ones.
"""
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

import refinemask.engine.data as engine_data
import refinemask.engine.distributed as distributed
import refinemask.engine.train as engine_train
from refinemask.cli import main
from refinemask.engine.stopping import TrainingStopped

torch.set_num_threads(1)
config, out, report_dir = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
moments = json.loads(sys.argv[4])
rank = int(os.environ["RANK"])
# a signal that comes when no run is listening (a timer that fires as a run ends) is recorded, not fatal
signal.signal(signal.SIGTERM, lambda signum, frame: None)

trigger: dict = {}  # the current moment, on the rank it targets
calls: dict[str, int] = {}
stopped_after: list = [None]


def sigterm_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def counted(point: str, before: bool, function):
    """``function`` that sends SIGTERM to this process at the moment's call of ``point``."""

    def wrapper(*args, **kwargs):
        calls[point] = calls.get(point, 0) + 1
        hit = trigger.get("at") == point and trigger.get("call") == calls[point]
        if hit and before:
            sigterm_self()
        result = function(*args, **kwargs)
        if hit and not before:
            sigterm_self()
        return result

    return wrapper


engine_data.TrainingSamples.__getitem__ = counted("data", True, engine_data.TrainingSamples.__getitem__)
distributed.max_over_ranks = counted("after_reduce", False, distributed.max_over_ranks)
distributed.mean_over_ranks = counted("after_log", False, distributed.mean_over_ranks)
original_run = engine_train.Trainer.run


def recorded_run(self):
    timer = threading.Timer(trigger["after_s"], sigterm_self) if "after_s" in trigger else None
    started = time.monotonic()
    if timer is not None:
        timer.start()
    try:
        return original_run(self)
    except TrainingStopped:
        stopped_after[0] = self.iteration
        raise
    finally:
        if timer is not None:
            timer.cancel()
        loop_seconds.append(time.monotonic() - started)


loop_seconds: list[float] = []
engine_train.Trainer.run = recorded_run

distributed.init_distributed("cpu")  # one group for all runs: train() leaves a caller's group alone
assert main(["train", config, f"train.output_dir={out / 'whole'}"]) == 0
report = {"whole_seconds": loop_seconds[-1], "moments": []}
for index, moment in enumerate(moments):
    trigger.clear()
    calls.clear()
    if moment["rank"] == rank:
        trigger.update(moment)
    stopped_after[0] = None
    run_dir = out / f"stopped{index}"
    status = main(["train", config, f"train.output_dir={run_dir}"])
    trigger.clear()
    stopped = stopped_after[0]
    checkpoints = sorted(p.name for p in run_dir.glob("checkpoint_*.pth")) if rank == 0 else None
    resumed = main(["train", config, f"train.output_dir={run_dir}", "--resume"])
    distributed.barrier()
    entry = {"status": status, "stopped_after": stopped, "checkpoints": checkpoints, "resumed_status": resumed}
    if rank == 0:
        whole = load_file(str(out / "whole" / "model_final.safetensors"))
        again = load_file(str(run_dir / "model_final.safetensors"))
        entry["resumed_equal"] = whole.keys() == again.keys() and all(torch.equal(whole[k], again[k]) for k in whole)
    report["moments"].append(entry)
(report_dir / f"rank{rank}.json").write_text(json.dumps(report))
distributed.shutdown_distributed()
