"""Official-checkpoint conversion: mmdetection v2.3 RefineMask checkpoints -> refinemask models."""
from refinemask.convert.mmdet import (
    Conversion,
    OfficialModel,
    convert_checkpoint,
    inspect_official,
    official_to_refinemask,
    read_official_checkpoint,
)

__all__ = [
    "Conversion",
    "OfficialModel",
    "convert_checkpoint",
    "inspect_official",
    "official_to_refinemask",
    "read_official_checkpoint",
]
