"""``refinemask serve`` as a user runs it: a process that prints its address and serves."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from refinemask.model_files import save_weights
from tests.tiny_models import confident_tiny_model

REPO = Path(__file__).resolve().parents[2]



def test_serve_prints_a_loopback_address_answers_there_and_stops_on_ctrl_c(tmp_path):
    weights = save_weights(confident_tiny_model("maskrcnn"), tmp_path / "model.safetensors")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    process = subprocess.Popen(
        [sys.executable, "-m", "refinemask.cli", "serve", "--weights", str(weights), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("serving the RefineMask demo on http://127.0.0.1:"), line + process.stderr.read()
        url = line.split(" on ", 1)[1].split()[0]
        with urllib.request.urlopen(url + "api/info", timeout=30) as response:
            info = json.loads(response.read())
        assert info["model"]["mask_head"] == "maskrcnn" and info["example"] is False
    finally:
        process.send_signal(signal.SIGINT)
        try:
            out, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
    assert process.returncode == 0, err
    assert "stopped" in out
