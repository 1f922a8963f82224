"""``refinemask serve --weights W``: a web page to try a model on your own images.

    refinemask serve --weights model_final.safetensors            # http://127.0.0.1:7860/
    refinemask serve --weights model_final.safetensors --example street.jpg

Upload an image and see its masks; a slider sets the score threshold, a switch shows the
coarse 28x28 masks of a RefineMask model instead of the final 112x112 ones or both side by
side, to see what the refinement adds, and another draws the masks filled or as outlines.
The server listens on 127.0.0.1 (this computer only) unless --host says otherwise.
"""
from __future__ import annotations

import argparse

EPILOG = """\
pages:  /  the demo;  /?example=1&threshold=0.3&mode=compare&draw=outline  opens the --example
        image (mode: final, coarse or compare = side by side; draw: fill or outline)
api:    POST /api/predict with a form (curl -F file=@image.jpg URL/api/predict) or the file's
        bytes (-H "Content-Type: image/jpeg" --data-binary @image.jpg) -> JSON detections (see
        refinemask.serve); GET /api/info -> the model and the upload limits
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from refinemask.serve import (
        DEFAULT_HOST,
        DEFAULT_PORT,
        DEFAULT_QUEUE,
        MAX_PIXELS,
        MAX_UPLOAD_BYTES,
    )

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument(
        "--weights", required=True, metavar="W",
        help="model file: a .safetensors model (training, convert) or a checkpoint_*.pth",
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}: this computer only; 0.0.0.0 opens it to the network)",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any free port)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--example", metavar="IMAGE", help="an image the page offers as an example")
    parser.add_argument(
        "--max-upload-mb", type=float, default=MAX_UPLOAD_BYTES / 2**20, metavar="MB",
        help=f"largest upload in MB (default {MAX_UPLOAD_BYTES / 2**20:g})",
    )
    parser.add_argument(
        "--max-megapixels", type=float, default=MAX_PIXELS / 1e6, metavar="MP",
        help=f"largest image in megapixels (default {MAX_PIXELS / 1e6:g})",
    )
    parser.add_argument(
        "--queue", type=int, default=DEFAULT_QUEUE, metavar="N",
        help=f"uploads held at once, being received, waiting or running (default {DEFAULT_QUEUE}); "
        "more are answered 503 with Retry-After",
    )
    parser.add_argument(
        "--token", metavar="T",
        help="require 'Authorization: Bearer T' on the API; the page takes it from the printed address (#token=T)",
    )
    parser.add_argument(
        "--allow-host", action="append", default=[], metavar="NAME",
        help="a host name the server may be reached by (repeatable); IP addresses and localhost always are",
    )


def run(args: argparse.Namespace) -> int:
    import logging
    import os
    import signal
    import sys

    import torch

    from refinemask.errors import RefineMaskError
    from refinemask.model_files import load_model
    from refinemask.serve import is_loopback, make_server

    if not 0 <= args.port <= 65535:
        raise RefineMaskError(f"--port must be between 0 and 65535, got {args.port}")
    if args.max_upload_mb <= 0 or args.max_megapixels <= 0:
        raise RefineMaskError("--max-upload-mb and --max-megapixels must be positive")
    if args.token is not None and not args.token.strip():
        raise RefineMaskError("--token is empty; give a secret, e.g. --token $(python -c 'import secrets; print(secrets.token_urlsafe())')")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise RefineMaskError("--device cuda: no CUDA device is available; use --device cpu")
    model = load_model(args.weights, device=args.device)
    server = make_server(
        model, args.host, args.port, example=args.example,
        max_upload_bytes=int(args.max_upload_mb * 2**20), max_pixels=int(args.max_megapixels * 1e6),
        token=args.token, queue_size=args.queue, allowed_hosts=args.allow_host,
    )
    if not is_loopback(args.host):
        guard = "the API needs --token's bearer token" if args.token else "anyone who can reach it can upload images; add --token"
        print(f"warning: listening on {args.host}, open to the network: {guard}", file=sys.stderr)
    address = server.url + (f"#token={args.token}" if args.token else "")
    print(f"serving the RefineMask demo on {address} (Ctrl+C to stop)", flush=True)
    # stop on Ctrl-C and on SIGTERM even when started from a shell that ignores SIGINT (background
    # jobs of non-interactive shells inherit it ignored); uvicorn puts its own handlers in place
    # while it serves, which do the same, and calls these again once it has stopped
    signal.signal(signal.SIGINT, server.request_stop)
    signal.signal(signal.SIGTERM, server.request_stop)
    server.serve_forever()
    finished = server.server_close()
    print("stopped" if finished else "stopped (a prediction still running was abandoned)", flush=True)
    # leave without the interpreter's teardown: with torch loaded it took 2.5-5 s on a busy
    # machine, and a prediction abandoned above may still be running on its daemon thread;
    # nothing is left to write (the model is read-only, every answer has been sent or dropped)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
