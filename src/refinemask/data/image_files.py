"""Which files are the images of ``refinemask predict``, and their COCO image ids."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from refinemask.errors import RefineMaskError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files named by ``inputs``: files as given, folders' image files sorted by name.

    A folder without images among several inputs is skipped with a warning line (one empty
    folder should not stop a batch over many); if no input has an image, that is the error.
    """
    files: list[Path] = []
    empty_folders: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                empty_folders.append(path)
                if len(inputs) > 1:
                    logger.warning("skipped %s: no image file (%s) in it", path, ", ".join(IMAGE_SUFFIXES))
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise RefineMaskError(f"image or folder not found: {path}")
    if not files:
        if empty_folders:
            raise RefineMaskError(
                f"no image file ({', '.join(IMAGE_SUFFIXES)}) in folder {', '.join(map(str, empty_folders))}"
            )
        raise RefineMaskError("no image given")
    return files


def image_ids(files: Sequence[Path], annotations: str | Path | None) -> list[int]:
    """COCO image ids of ``files``: from ``annotations`` (matched by file name), else 1..N."""
    if annotations is None:
        return list(range(1, len(files) + 1))
    from refinemask.data.validation import load_annotation_json

    data = load_annotation_json(annotations)
    by_name: dict[str, int] = {}
    for entry in data["images"]:
        if isinstance(entry, dict) and "file_name" in entry and "id" in entry:
            by_name.setdefault(str(entry["file_name"]), int(entry["id"]))
            by_name.setdefault(Path(str(entry["file_name"])).name, int(entry["id"]))
    ids = []
    for path in files:
        if path.name not in by_name:
            raise RefineMaskError(f"image {path} is not listed in {annotations} (matched by file name)")
        ids.append(by_name[path.name])
    return ids
