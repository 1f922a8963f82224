"""The former home of ONNX export, kept because earlier docs showed this path: use :mod:`refinemask.export`."""
from refinemask.export import *  # noqa: F401,F403
