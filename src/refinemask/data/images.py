"""Reading image files robustly.

Every image the data layer reads goes through :func:`open_image`, which turns anything a bad file
can do (missing, not an image, truncated, absurdly large, odd pixel format) into a one-line
:class:`~refinemask.errors.RefineMaskError` that names the file. :func:`load_image` then gives the
tensor of the data contract: float32 (3, H, W) RGB in [0, 1].

Pixel formats:
* grayscale, palette and bilevel images are expanded to RGB; CMYK and YCbCr are converted;
* an alpha channel is dropped (as OpenCV's ``imread(..., IMREAD_COLOR)`` does in the official
  pipeline), the colour under it is kept;
* images of more than 8 bits (16-bit ``I;16*``, 32-bit integer ``I``, float ``F``; never
  clipped at 255 as PIL's own ``convert("RGB")`` would) are scaled to [0, 1] as ``scaling``
  says (``model.high_bit_scaling``, saved with the weights so predictions scale alike):

  - ``"percentiles"`` (the default): the image's own ``percentiles`` (1 and 99.8) map to 0 and
    1, values beyond are clipped. Low-range data (a 12-bit camera, a faint signal: values 0-235
    in a 16-bit file) fills the network's input range, and a few hot pixels do not set the
    scale. It is what microscopy tools do by default (CSBDeep/StarDist normalise at 1 and 99.8).
  - ``"minmax"``: the image's own minimum and maximum map to 0 and 1.
  - ``"full"``: the type's range (divide by 65535; 32-bit integer images holding 16-bit data
    the same way; float images as they are when in [0, 1], else divided by their maximum).
    Keeps brightness comparable between images, but low-range data comes out nearly black;

  8-bit images are always divided by 255 (the ImageNet-pretrained backbones expect that);
* 16-bit RGB PNGs are reduced to 8 bits by Pillow itself (its ``RGB`` mode keeps the high byte),
  so they are scaled correctly too;
* the EXIF orientation tag is applied, so the tensor is the image as a viewer shows it.

Images larger than a pixel limit are refused before any pixel is decoded (a small compressed
file can declare a huge size: a "decompression bomb"). The limit is ours, configurable per call,
and replaces PIL's global ``Image.MAX_IMAGE_PIXELS`` guard so that a user who raises it does not
then hit PIL's.
"""
from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps

from refinemask.errors import RefineMaskError

if TYPE_CHECKING:
    import torch

# 100 megapixels (10000 x 10000): well above any detection benchmark image (COCO about 0.3 MP,
# Cityscapes 2 MP) and already 1.2 GB as a float32 RGB tensor.
DEFAULT_MAX_PIXELS = 100_000_000

# EXIF orientations 5-8 include a transpose: width and height swap.
_EXIF_ORIENTATION_TAG = 0x0112
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})

HIGH_BIT_SCALINGS = ("percentiles", "minmax", "full")
DEFAULT_HIGH_BIT_SCALING = "percentiles"
DEFAULT_PERCENTILES = (1.0, 99.8)


def scaling_options(model_config) -> dict:
    """``scaling`` and ``percentiles`` keyword arguments from a model config (see the module docstring).

    ``model_config`` is a ``ModelConfig`` or its dict (as an exported ONNX file stores it).
    """
    get = model_config.get if isinstance(model_config, dict) else lambda key, default: getattr(model_config, key, default)
    return {
        "scaling": get("high_bit_scaling", DEFAULT_HIGH_BIT_SCALING),
        "percentiles": tuple(get("high_bit_percentiles", DEFAULT_PERCENTILES)),
    }


def scale_high_bit(values: np.ndarray, top: float, scaling: str, percentiles: tuple[float, float]) -> np.ndarray:
    """(H, W) float32 in [0, 1] from the values of an image of more than 8 bits.

    ``top`` is the value that means white for ``scaling="full"``.
    """
    values = values.astype(np.float64, copy=False)
    if scaling == "full":
        low, high = 0.0, top
    elif scaling == "minmax":
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    elif scaling == "percentiles":
        low, high = (float(v) for v in np.percentile(values, percentiles)) if values.size else (0.0, 1.0)
        if high <= low and values.size:  # nearly constant image: fall back to its extremes
            low, high = float(values.min()), float(values.max())
    else:
        raise RefineMaskError(f"unknown high-bit scaling {scaling!r}; choose one of {', '.join(HIGH_BIT_SCALINGS)}")
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)  # a constant image carries no contrast
    return np.clip((values - low) / (high - low), 0.0, 1.0).astype(np.float32)

# Guards the moment PIL's global pixel guard is lifted (see _open_lazily).
_PIL_GUARD_LOCK = threading.Lock()


def _open_lazily(path: Path) -> Image.Image:
    """Open ``path`` reading the header only; PIL's own bomb guard does not apply.

    Our limit (checked by the caller on ``image.size``) replaces PIL's. PIL warns above its limit
    and raises above twice its limit while opening, i.e. before we could apply a larger limit of
    ours; in that case the header is read again with PIL's guard lifted for that one call. Only
    the header is read, so nothing large is allocated.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(path)
        except Image.DecompressionBombError:
            pass
    with _PIL_GUARD_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _oriented_size(image: Image.Image) -> tuple[int, int]:
    """(height, width) after the EXIF orientation is applied, from the header only."""
    width, height = image.size
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except Exception:  # broken EXIF block: PIL raises a zoo of types; the pixels may be fine
        orientation = 1
    if orientation in _TRANSPOSING_ORIENTATIONS:
        return width, height
    return height, width


def _check_pixel_limit(path: Path, image: Image.Image, max_pixels: int | None) -> None:
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise RefineMaskError(
            f"image {path} is {width}x{height} = {width * height:,} pixels, more than the limit of "
            f"{max_pixels:,} (a possible decompression bomb); shrink the image or raise the limit "
            "(max_pixels)"
        )


def _check_is_file(path: Path) -> None:
    if not path.exists():
        raise RefineMaskError(f"image file not found: {path}; check the image directory and file_name")
    if not path.is_file():
        raise RefineMaskError(f"image path is not a file: {path}")


def read_image_size(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(height, width) of the image file as :func:`load_image` would return it.

    Reads the header only (fast; a truncated body is not noticed). EXIF orientation is applied.
    Raises :class:`RefineMaskError` for a missing, unreadable or oversized file.
    """
    path = Path(path)
    _check_is_file(path)
    try:
        with _open_lazily(path) as image:
            _check_pixel_limit(path, image, max_pixels)
            return _oriented_size(image)
    except RefineMaskError:
        raise
    except Exception as err:  # PIL plugins raise OSError, SyntaxError, ValueError, struct.error...
        raise RefineMaskError(f"cannot read image {path}: {_describe(err)}") from err


def open_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open, size-check, fully decode and EXIF-orient an image file.

    Returns a PIL image in its own pixel mode (see :func:`image_to_array` for the conversion).
    ``max_pixels=None`` disables the size limit. Raises :class:`RefineMaskError` naming the file
    for a missing, non-image, truncated or oversized file.
    """
    path = Path(path)
    _check_is_file(path)
    try:
        with _open_lazily(path) as image:
            _check_pixel_limit(path, image, max_pixels)
            image.load()  # decodes now, so a truncated file fails here and not later
            # exif_transpose returns a new image (a plain copy when there is nothing to do),
            # which outlives the file closed on leaving this block
            return ImageOps.exif_transpose(image)
    except RefineMaskError:
        raise
    except Exception as err:  # PIL plugins raise OSError, SyntaxError, ValueError, struct.error...
        raise RefineMaskError(f"cannot read image {path}: {_describe(err)}") from err


def _describe(err: Exception) -> str:
    text = str(err).strip().rstrip(".")
    if not text:
        return type(err).__name__
    if isinstance(err, Image.UnidentifiedImageError):
        return "not an image file PIL can read (corrupt, or an unsupported format)"
    return text


def image_to_array(
    image: Image.Image,
    scaling: str = DEFAULT_HIGH_BIT_SCALING,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
) -> np.ndarray:
    """(H, W, 3) float32 RGB in [0, 1] from a decoded PIL image of any supported mode.

    ``scaling`` and ``percentiles`` say how images of more than 8 bits are scaled (module docstring).
    """
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        gray = _integer_to_unit(np.asarray(image), scaling, percentiles)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        values = np.clip(np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0), 0.0, None)
        peak = float(values.max()) if values.size else 0.0
        top = 1.0 if peak <= 1.0 else peak  # float data in [0, 1] is taken as it is
        gray = scale_high_bit(values, top, scaling, tuple(percentiles))
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("P", "PA") and "transparency" in image.info:
        # PIL warns when a palette image with transparency goes straight to RGB
        image = image.convert("RGBA")
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return np.asarray(rgb, dtype=np.float32) / 255.0


def load_image(
    path: str | Path,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    scaling: str = DEFAULT_HIGH_BIT_SCALING,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
) -> torch.Tensor:
    """The image file as a float32 (3, H, W) RGB tensor in [0, 1] (see the module docstring).

    Raises :class:`RefineMaskError` naming the file when it cannot be used.
    """
    return _channels_first(_file_to_array(path, max_pixels, scaling, percentiles))


def as_rgb_array(
    image: Any,
    scaling: str = DEFAULT_HIGH_BIT_SCALING,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """(H, W, 3) float32 RGB in [0, 1] from any image a user hands to a predictor.

    Accepts a file path, a PIL image, an (H, W, 3), (H, W, 4) or (H, W) numpy array, or a
    (3, H, W) tensor. uint8 arrays and tensors are divided by 255; other integer types (a
    16-bit camera frame read with tifffile or OpenCV) are scaled as ``scaling`` says, like a
    16-bit file; floats are taken as they are, in [0, 1]. The PyTorch predictor,
    ``refinemask serve`` and the ONNX runners all convert through here, so that one image gives
    one input everywhere.
    """
    if isinstance(image, (str, Path)):
        return _file_to_array(image, max_pixels, scaling, percentiles)
    if isinstance(image, Image.Image):
        return image_to_array(image, scaling, percentiles)
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim == 2 and np.issubdtype(array.dtype, np.integer) and array.dtype != np.uint8:
            # scaled as one channel, as a 16-bit grey file is (three copies would move the percentiles)
            return np.repeat(_integer_to_unit(array, scaling, percentiles)[:, :, None], 3, axis=2)
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        if array.ndim != 3 or array.shape[2] not in (3, 4):
            raise RefineMaskError(f"a numpy image must be (H, W, 3) RGB, got shape {array.shape}")
        array = array[:, :, :3]  # an alpha channel is dropped, as for files
        # astype copies: the caller's array may be read-only, and is never written through
        if array.dtype == np.uint8:
            return array.astype(np.float32) / 255.0
        if np.issubdtype(array.dtype, np.integer):
            return _integer_to_unit(array, scaling, percentiles)
        return array.astype(np.float32)
    return as_image_tensor(image).detach().cpu().permute(1, 2, 0).numpy()


def as_image_tensor(
    image: Any,
    scaling: str = DEFAULT_HIGH_BIT_SCALING,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> torch.Tensor:
    """float32 (3, H, W) RGB in [0, 1] from any image :func:`as_rgb_array` accepts.

    A tensor stays where it is (a CUDA image is not copied through the host).
    """
    import torch

    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise RefineMaskError(f"a tensor image must be (3, H, W) RGB, got shape {tuple(image.shape)}")
        if image.dtype == torch.uint8:
            return image.float() / 255.0
        if not image.dtype.is_floating_point and image.dtype != torch.bool:  # 16-bit and wider integers
            array = image.detach().cpu().permute(1, 2, 0).numpy()
            return _channels_first(_integer_to_unit(array, scaling, percentiles)).to(image.device)
        return image.float()
    if not isinstance(image, (str, Path, Image.Image, np.ndarray)):
        raise RefineMaskError(
            f"cannot read an image from a {type(image).__name__}; give a path, a PIL image, a numpy array or a tensor"
        )
    return _channels_first(as_rgb_array(image, scaling, percentiles, max_pixels))


def _integer_to_unit(array: np.ndarray, scaling: str, percentiles: tuple[float, float]) -> np.ndarray:
    """float32 in [0, 1], the shape of ``array``, from integers of more than 8 bits (16-bit and 32-bit
    files, arrays and tensors alike).

    ``full`` scaling divides by 65535 when the data fits 16 bits (32-bit images holding 16-bit
    data, as older Pillow opened 16-bit PNGs), else by the image's maximum.
    """
    values = np.clip(array.astype(np.float64), 0.0, None)
    peak = float(values.max()) if values.size else 0.0
    return scale_high_bit(values, integer_white_point(peak), scaling, tuple(percentiles))


def integer_white_point(peak: float) -> float:
    """The value that means white in an integer image of more than 8 bits whose largest value is
    ``peak``: 65535 when the data fits 16 bits, else the peak itself.

    The one rule for both the loader's ``full`` scaling and check-data's range note. 2^32 - 1
    would turn real 32-bit data (say a 20-bit sensor) nearly black, so it is never used.
    """
    return 65535.0 if peak <= 65535.0 else peak


def _file_to_array(
    path: str | Path, max_pixels: int | None, scaling: str, percentiles: tuple[float, float]
) -> np.ndarray:
    image = open_image(path, max_pixels)
    try:
        return image_to_array(image, scaling, percentiles)
    except RefineMaskError:
        raise
    except Exception as err:  # e.g. a PIL mode with no conversion to RGB
        raise RefineMaskError(
            f"cannot convert image {path} (mode {image.mode}) to RGB: {_describe(err)}"
        ) from err


def _channels_first(array: np.ndarray) -> torch.Tensor:
    """(H, W, 3) array -> (3, H, W) tensor, sharing the array's memory when it can."""
    # torch is imported here so that `refinemask check-data` (PIL only) starts fast
    import torch

    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
