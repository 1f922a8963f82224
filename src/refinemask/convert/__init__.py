"""Official-checkpoint conversion: mmdetection v2.3 RefineMask checkpoints -> refinemask models."""
from refinemask.convert.files import Conversion, convert_checkpoint, read_official_checkpoint
from refinemask.convert.mmdet import OfficialModel, inspect_official, official_to_refinemask

__all__ = [
    "Conversion",
    "OfficialModel",
    "convert_checkpoint",
    "inspect_official",
    "official_to_refinemask",
    "read_official_checkpoint",
]
