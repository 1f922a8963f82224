"""Print and save metrics.

Metrics are nested dicts ``{row: {metric: value}}`` with values in [0, 1] (NaN = undefined),
as returned by :func:`refinemask.evaluation.coco.evaluate_coco` and friends.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from refinemask.errors import RefineMaskError

# column order; a column is shown when at least one row has it
TABLE_COLUMNS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")


def format_metrics_table(metrics: Mapping[str, Mapping[str, Any]], title: str = "IoU type") -> str:
    """One table: a row per key of ``metrics`` (e.g. bbox, segm, boundary), a column per metric.

    Values are shown in percent with one decimal, as papers report them; "-" marks a metric
    that is undefined (NaN) or absent. Entries that are not metric dicts are skipped.
    """
    rows = {name: values for name, values in metrics.items() if isinstance(values, Mapping)}
    columns = [c for c in TABLE_COLUMNS if any(c in values for values in rows.values())]
    if not rows or not columns:
        return "(no metrics)"
    name_width = max(len(title), *(len(name) for name in rows))
    header = f"{title:<{name_width}}" + "".join(f"{c:>8}" for c in columns)
    lines = [header, "-" * len(header)]
    for name, values in rows.items():
        cells = "".join(f"{_percent(values.get(c)):>8}" for c in columns)
        lines.append(f"{name:<{name_width}}{cells}")
    lines.append("(AP in percent)")
    return "\n".join(lines)


def save_metrics_json(metrics: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write metrics as JSON: values in [0, 1], NaN as null (so any JSON parser reads it)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_nan_to_none(metrics), indent=2) + "\n", encoding="utf-8")
    except OSError as err:
        raise RefineMaskError(f"cannot write metrics to {path}: {err.strerror}") from None


def _percent(value: Any) -> str:
    if value is None or not isinstance(value, (int, float)) or math.isnan(value):
        return "-"
    return f"{100 * value:.1f}"


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalar
        return _nan_to_none(value.item())
    return value


def format_cityscapes_table(result: Mapping[str, Any]) -> str:
    """The per-class table of :func:`refinemask.evaluation.cityscapes.evaluate_cityscapes`."""
    rows = dict(result.get("classes", {}))
    rows["average"] = {"AP": result["AP"], "AP50": result["AP50"]}
    return format_metrics_table(rows, title="Cityscapes class")
