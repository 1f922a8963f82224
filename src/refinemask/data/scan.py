"""The scan of a data set's image files before training: a bad file never ends a run after hours.

Every image file of a data set is decoded once, in parallel threads, at the start of training
(and by ``refinemask check-data``): missing, unreadable or truncated files and files of another
size than the json says become :class:`~refinemask.data.validation.Problem` s; the training
leaves those images out and lists them once. The value range of every image of more than 8 bits
is measured on the way, so that a set which uses a small part of its range (a 12-bit camera, a
faint signal in 16-bit files) is reported.

The result is cached, as Ultralytics does, in ``$REFINEMASK_CACHE`` (default
``~/.cache/refinemask``) under ``scans/``: one file per (annotation json, image folder, decode
mode), valid while the json and every image file keep their sizes and modification times.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refinemask.data.images import DEFAULT_MAX_PIXELS
from refinemask.data.validation import Problem, ValueRange, map_image_files

CACHE_VERSION = 1
# a set whose brightest pixel is below this fraction of its type's range "uses a small part" of it:
# divided by the full range, its images would be darker than 1/8 of white
SMALL_RANGE_FRACTION = 1 / 8


@dataclass
class ScanResult:
    """What the scan found: problems (file order) and the value ranges of >8-bit images."""

    problems: list[Problem] = field(default_factory=list)
    ranges: dict[int, ValueRange] = field(default_factory=dict)  # image id -> (min, max, top)
    num_images: int = 0
    cached: bool = False

    def bad_image_ids(self, data: dict[str, Any]) -> set[int]:
        return {data["images"][p.image_index]["id"] for p in self.problems if p.image_index is not None}

    def range_note(self) -> str | None:
        """One line when the >8-bit images use a small part of their type's range, else None."""
        if not self.ranges:
            return None
        low = min(r[0] for r in self.ranges.values())
        high = max(r[1] for r in self.ranges.values())
        top = max(r[2] for r in self.ranges.values())
        if high >= SMALL_RANGE_FRACTION * top:
            return None
        # only a set whose white point is 65535 gets here: above it the white point is the peak
        return (
            f"{len(self.ranges)} of {self.num_images} images are 16-bit and use values {low}-{high} of 0-{top} "
            f"({100 * high / top:.2g}% of the range)"
        )


def cache_dir() -> Path:
    return Path(os.environ.get("REFINEMASK_CACHE") or Path.home() / ".cache" / "refinemask") / "scans"


def _fingerprint(ann_file: Path, image_dir: Path, images: list[dict]) -> str:
    """Changes when the json or any image file changes size or modification time."""
    digest = hashlib.sha1()
    for path in [ann_file] + [image_dir / str(image.get("file_name")) for image in images]:
        try:
            stat = path.stat()
            digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}|missing\n".encode())
    return digest.hexdigest()


def scan_image_files(
    data: dict[str, Any],
    image_dir: str | Path,
    ann_file: str | Path | None = None,
    decode: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    workers: int = 0,
    use_cache: bool = True,
) -> ScanResult:
    """Check every image file of ``data`` (see the module docstring); cached when ``ann_file`` is given."""
    image_dir = Path(image_dir)
    cache_path = fingerprint = None
    if use_cache and ann_file is not None:
        ann_file = Path(ann_file).resolve()
        ids = hashlib.sha1(repr([image.get("id") for image in data["images"]]).encode()).hexdigest()
        key = f"{ann_file}|{image_dir.resolve()}|{ids}|{decode}|{max_pixels}|{CACHE_VERSION}"
        cache_path = cache_dir() / f"{hashlib.sha1(key.encode()).hexdigest()}.json"
        fingerprint = _fingerprint(ann_file, image_dir.resolve(), data["images"])
        cached = _read_cache(cache_path, fingerprint, data)
        if cached is not None:
            return cached
    checked = map_image_files(data, image_dir, decode, max_pixels, workers)
    result = ScanResult(num_images=len(checked))
    for index, (problem, value_range) in checked.items():
        if problem is not None:
            result.problems.append(problem)
        if value_range is not None:
            result.ranges[data["images"][index]["id"]] = value_range
    if cache_path is not None:
        _write_cache(cache_path, fingerprint, result)
    return result


def _read_cache(path: Path, fingerprint: str, data: dict[str, Any]) -> ScanResult | None:
    try:
        stored = json.loads(path.read_text())
        if stored.get("fingerprint") != fingerprint:
            return None
        return ScanResult(
            problems=[Problem(**p) for p in stored["problems"]],
            ranges={int(k): tuple(v) for k, v in stored["ranges"].items()},
            num_images=int(stored["num_images"]),
            cached=True,
        )
    except (OSError, ValueError, KeyError, TypeError):  # no cache, or an unreadable one: scan again
        return None


def _write_cache(path: Path, fingerprint: str, result: ScanResult) -> None:
    from dataclasses import asdict

    payload = {
        "fingerprint": fingerprint,
        "problems": [asdict(p) for p in result.problems],
        "ranges": {str(k): list(v) for k, v in result.ranges.items()},
        "num_images": result.num_images,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(payload))
        tmp.replace(path)
    except OSError:  # a read-only home: the scan still worked, it is just not remembered
        pass
