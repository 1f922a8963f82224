"""Reading a user's JSON file: the one place that turns a bad file into a one-line error.

Every JSON file a user hands us (a COCO annotation file, a results or boxes file, a categories
file) is read by :func:`read_json`; the caller then checks the structure it expects and names the
file again in its own messages. The module sits at the top of the package, beside
:mod:`refinemask.errors`, so that ``data``, ``evaluation``, ``engine`` and ``convert`` can all use
it without importing one another.

JSON we wrote ourselves and read back from a string (the scan cache, checkpoint and ONNX
metadata) does not come through here: a failure there is a bug or a corrupt file we made, and
those readers say so in their own terms.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from refinemask.errors import RefineMaskError


def read_json(path: str | os.PathLike, what: str) -> Any:
    """The parsed content of the JSON file at ``path``.

    ``what`` names the file's role for the message ("annotation file", "boxes file"). Raises
    :class:`RefineMaskError` with one line naming ``what`` and ``path`` when the file is missing,
    is not a regular file, cannot be read, is not UTF-8, or is not valid JSON (with the line
    and column of the first mistake).
    """
    path = Path(path)
    if not path.exists():
        raise RefineMaskError(f"{what} not found: {path}")
    if not path.is_file():
        raise RefineMaskError(f"{what} is not a file: {path}")
    try:
        with path.open("r", encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise RefineMaskError(
            f"{what} {path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})"
        ) from None
    except UnicodeDecodeError:
        raise RefineMaskError(f"{what} {path} is not UTF-8 text, so not a JSON file") from None
    except OSError as err:
        raise RefineMaskError(f"cannot read {what} {path}: {err.strerror or err}") from None
