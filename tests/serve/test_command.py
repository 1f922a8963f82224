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


def test_serve_stops_on_sigterm_while_clients_hold_connections(tmp_path):
    import socket
    from urllib.parse import urlsplit

    weights = save_weights(confident_tiny_model("maskrcnn"), tmp_path / "model.safetensors")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    process = subprocess.Popen(
        [sys.executable, "-m", "refinemask.cli", "serve", "--weights", str(weights), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    held = []
    try:
        line = process.stdout.readline()
        parts = urlsplit(line.split(" on ", 1)[1].split()[0])
        address = (parts.hostname, parts.port)
        idle = socket.create_connection(address, timeout=30)  # a browser's spare connection
        keep_alive = socket.create_connection(address, timeout=30)  # a tab after its last request
        keep_alive.sendall(b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert keep_alive.recv(65536).startswith(b"HTTP/1.1 200")
        slow = socket.create_connection(address, timeout=30)  # an upload that stalls mid-body
        slow.sendall(b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                     b"Content-Length: 100000\r\n\r\n\x89PNG")
        held = [idle, keep_alive, slow]
        process.send_signal(signal.SIGTERM)
        # the server gives requests in flight GRACEFUL_S (4 s), then drops them
        out, err = process.communicate(timeout=20)
    finally:
        for connection in held:
            connection.close()
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "stopped" in out
