"""The demo page in headless Chromium: it uploads the example image and draws the masks.

The page reads ``?example=1&threshold=T&mode=M``, fetches the server's example image, uploads
it as a user's file would be (``POST /api/predict``), draws the masks on a canvas and writes
what it drew into ``#summary``'s data attributes, including the number of mask pixels read
back from the canvas. ``chromium --dump-dom`` with a virtual-time budget returns the page once
that has run (virtual time waits for the pending requests).
"""
from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

from refinemask.overlay import mask_edges
from refinemask.serve import make_server
from tests.serve.running import Running

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Chromium (Debian: apt-get install -y chromium); CI installs it"
)


def dump_dom(url: str, profile) -> str:
    """The page's DOM after its scripts ran, from a fresh headless Chromium."""
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--no-default-browser-check", f"--user-data-dir={profile}",
        "--virtual-time-budget=60000", "--dump-dom", url,
    ]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def element(dom: str, element_id: str) -> tuple[dict[str, str], str]:
    """(attributes, text) of the element with this id (the page's elements hold no markup)."""
    match = re.search(rf'<(\w+) id="{element_id}"([^>]*)>([^<]*)<', dom)
    assert match, f"no #{element_id} in the page"
    attributes = dict(re.findall(r'([\w-]+)="([^"]*)"', match.group(2)))
    return attributes, match.group(3)


def body_state(dom: str) -> str:
    match = re.search(r'<body data-state="(\w+)"', dom)
    return match.group(1) if match else ""


def masks_of(answer: dict, stage: str, threshold: float) -> list[np.ndarray]:
    """bool (H, W) masks of the stage of the detections scoring >= threshold."""
    masks = []
    for d in answer["detections"]:
        entry = d["masks"][stage]
        if d["score"] >= threshold and entry["png"]:
            crop = np.asarray(Image.open(io.BytesIO(base64.b64decode(entry["png"]))))[:, :, 3] > 0
            h, w = crop.shape
            mask = np.zeros((answer["height"], answer["width"]), dtype=bool)
            mask[entry["y"] : entry["y"] + h, entry["x"] : entry["x"] + w] = crop
            masks.append(mask)
    return masks


def union_of_masks(answer: dict, stage: str, threshold: float) -> int:
    """Pixels under at least one mask of the stage among detections scoring >= threshold."""
    return int(np.logical_or.reduce([np.zeros((answer["height"], answer["width"]), dtype=bool),
                                     *masks_of(answer, stage, threshold)]).sum())


def union_of_outlines(answer: dict, stage: str, threshold: float) -> int:
    """Pixels under at least one outline or halo (as ``predict``'s overlays define them)."""
    line = max(1, round(max(answer["width"], answer["height"]) / 400))  # the page's line width
    union = torch.zeros(answer["height"], answer["width"], dtype=torch.bool)
    for mask in masks_of(answer, stage, threshold):
        outline, halo = mask_edges(torch.from_numpy(mask), line)
        union |= outline | halo
    return int(union.sum())


@pytest.fixture(scope="module")
def answer(running, example) -> dict:
    """The server's JSON for the example image, as the page receives it."""
    request = urllib.request.Request(
        running.url + "api/predict", data=example.read_bytes(), method="POST", headers={"Content-Type": "image/png"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


@pytest.mark.parametrize("stage", ["final", "coarse"])
def test_the_page_draws_the_masks_of_the_detections_above_the_slider(running, answer, tmp_path, stage):
    scores = sorted(d["score"] for d in answer["detections"])
    threshold = round((scores[0] + scores[-1]) / 2, 2)  # between the lowest and highest score
    dom = dump_dom(f"{running.url}?example=1&threshold={threshold}&mode={stage}", tmp_path / "profile")
    assert body_state(dom) == "done", element(dom, "error")[1]
    summary, text = element(dom, "summary")
    expected_shown = sum(score >= threshold for score in scores)
    assert 0 < expected_shown < len(scores)
    assert summary["data-stage"] == stage and summary["data-threshold"] == f"{threshold:.2f}"
    assert int(summary["data-shown"]) == expected_shown and int(summary["data-total"]) == len(scores)
    # the canvas holds exactly the union of the shown masks of that stage
    assert int(summary["data-painted"]) == union_of_masks(answer, stage, threshold) > 0
    assert f"{stage} {'112x112' if stage == 'final' else '28x28'} masks" in text
    other = "coarse" if stage == "final" else "final"
    assert "hidden" in element(dom, f"figure-{other}")[0] and "hidden" not in element(dom, f"figure-{stage}")[0]


@pytest.mark.parametrize("draw", ["fill", "outline"])
def test_the_side_by_side_view_draws_the_final_and_the_coarse_masks(running, answer, tmp_path, draw):
    threshold = 0.0
    dom = dump_dom(f"{running.url}?example=1&threshold={threshold}&mode=compare&draw={draw}", tmp_path / "profile")
    assert body_state(dom) == "done", element(dom, "error")[1]
    summary, text = element(dom, "summary")
    assert summary["data-stage"] == "compare" and summary["data-draw"] == draw
    assert int(summary["data-shown"]) == len(answer["detections"]) > 0
    count = union_of_masks if draw == "fill" else union_of_outlines
    final, coarse = count(answer, "final", threshold), count(answer, "coarse", threshold)
    assert int(summary["data-painted-final"]) == final > 0
    assert int(summary["data-painted-coarse"]) == coarse > 0
    assert final != coarse
    assert "final 112x112 beside coarse 28x28 masks" in text
    # both canvases shown, each under its caption
    assert "hidden" not in element(dom, "figure-final")[0] and "hidden" not in element(dom, "figure-coarse")[0]
    assert element(dom, "caption-final")[1] == "final 112x112 masks"
    assert element(dom, "caption-coarse")[1] == "coarse 28x28 masks"


def test_outlines_are_fewer_pixels_than_the_filled_masks(answer):
    # what the outline run compares against must differ from the fill, or the switch shows nothing new
    assert 0 < union_of_outlines(answer, "final", 0.0) < union_of_masks(answer, "final", 0.0)


def test_the_final_and_coarse_views_paint_different_pixels(answer):
    # what the two runs above compare against must differ, or the toggle shows nothing new
    assert union_of_masks(answer, "final", 0.0) != union_of_masks(answer, "coarse", 0.0)


def test_the_page_shows_the_servers_json_error_for_a_refused_upload(model, tmp_path):
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("these are notes, not pixels")
    server = make_server(model, "127.0.0.1", 0, quiet=True)
    server.example = not_an_image  # the page uploads it as if a user had chosen it
    running = Running(server)
    try:
        dom = dump_dom(f"{running.url}?example=1", tmp_path / "profile")
    finally:
        running.stop()
    assert body_state(dom) == "error"
    assert "the upload is not an image" in element(dom, "error")[1]


def test_the_page_sends_the_token_of_its_address_with_each_api_request(model, example, tmp_path):
    # `refinemask serve --token T` prints http://127.0.0.1:PORT/#token=T
    running = Running(make_server(model, "127.0.0.1", 0, example=example, quiet=True, token="s3cret"))
    try:
        with_token = dump_dom(f"{running.url}?example=1#token=s3cret", tmp_path / "profile")
        without = dump_dom(f"{running.url}?example=1", tmp_path / "profile2")
    finally:
        running.stop()
    assert body_state(with_token) == "done", element(with_token, "error")[1]
    assert int(element(with_token, "summary")[0]["data-total"]) > 0
    assert "needs its token" in element(without, "error")[1]
