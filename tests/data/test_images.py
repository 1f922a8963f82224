import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from refinemask.data.images import (
    as_image_tensor,
    as_rgb_array,
    image_to_array,
    load_image,
    read_image_size,
    scaling_options,
)
from refinemask.errors import RefineMaskError

EXIF_ORIENTATION = 0x0112


def test_rgb_loads_as_float_chw_in_unit_range(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert image.dtype == torch.float32 and image.shape == (3, 5, 7)
    assert torch.allclose(image, torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)


def test_grayscale_gives_three_equal_channels(tmp_path: Path) -> None:
    gray = np.array([[0, 128], [255, 64]], dtype=np.uint8)
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    image = load_image(tmp_path / "g.png")
    assert image.shape == (3, 2, 2)
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    assert image[0, 1, 0].item() == pytest.approx(1.0)


def test_rgba_drops_alpha_and_keeps_colour(tmp_path: Path) -> None:
    pixels = np.zeros((2, 2, 4), dtype=np.uint8)
    pixels[..., 0] = 255  # red, fully transparent
    Image.fromarray(pixels, mode="RGBA").save(tmp_path / "t.png")
    image = load_image(tmp_path / "t.png")
    assert image.shape == (3, 2, 2)
    assert torch.all(image[0] == 1.0) and torch.all(image[1:] == 0.0)


def test_palette_image_with_transparency_loads_without_warning(tmp_path: Path) -> None:
    palette = Image.new("P", (3, 3))
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    palette.putpixel((1, 1), 1)
    palette.save(tmp_path / "p.png", transparency=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = load_image(tmp_path / "p.png")
    assert image[:, 1, 1].tolist() == [0.0, 1.0, 0.0]


def test_sixteen_bit_grayscale_at_full_range_is_scaled_by_65535_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 1000], [32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "d.png")  # PIL writes mode I;16 as a 16-bit PNG
    assert Image.open(tmp_path / "d.png").mode == "I;16"
    image = load_image(tmp_path / "d.png", scaling="full")
    expected = torch.from_numpy(values.astype(np.float32) / 65535)
    assert torch.allclose(image[0], expected)
    assert image[0, 0, 1].item() < 0.02  # would be 1.0 with PIL's clipping convert("RGB")


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    raw = np.zeros((2, 4, 3), dtype=np.uint8)
    raw[0, 0] = [255, 255, 255]
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # display = raw rotated 90 degrees clockwise
    Image.fromarray(raw).save(tmp_path / "r.jpg", exif=exif, quality=100)
    image = load_image(tmp_path / "r.jpg")
    assert image.shape == (3, 4, 2)
    brightest = divmod(int(image[0].argmax()), 2)
    assert brightest == (0, 1)  # the raw top-left corner is now top-right


def test_read_image_size_applies_exif_orientation(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 8
    Image.new("RGB", (6, 3)).save(tmp_path / "r.jpg", exif=exif)
    assert read_image_size(tmp_path / "r.jpg") == (6, 3)


def test_missing_file_raises_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(RefineMaskError, match="not found.*nope.png"):
        load_image(tmp_path / "nope.png")


def test_non_image_file_raises_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "junk.jpg").write_bytes(b"this is not a jpeg at all")
    with pytest.raises(RefineMaskError, match="junk.jpg"):
        load_image(tmp_path / "junk.jpg")


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_file_raises_error_naming_it(tmp_path: Path, suffix: str) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    path = tmp_path / f"cut{suffix}"
    Image.fromarray(pixels).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RefineMaskError, match=f"cut{suffix}"):
        load_image(path)


def test_image_above_the_pixel_limit_is_refused(tmp_path: Path) -> None:
    Image.new("RGB", (20, 10)).save(tmp_path / "big.png")
    with pytest.raises(RefineMaskError, match="200 pixels.*limit of 100"):
        load_image(tmp_path / "big.png", max_pixels=100)


def _png_declaring_size(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header claims width x height (its data is far too short)."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13])))
    path.write_bytes(bytes(data))


def test_decompression_bomb_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    _png_declaring_size(tmp_path / "bomb.png", 30000, 30000)  # above PIL's own error limit
    with pytest.raises(RefineMaskError, match="bomb.png.*30000x30000.*decompression bomb"):
        load_image(tmp_path / "bomb.png")


def test_own_limit_replaces_pil_guard(tmp_path: Path) -> None:
    _png_declaring_size(tmp_path / "large.png", 30000, 30000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image_size(tmp_path / "large.png", max_pixels=None) == (30000, 30000)
    assert Image.MAX_IMAGE_PIXELS is not None  # PIL's global guard is restored


@pytest.mark.parametrize(
    ("mode", "suffix"), [("1", ".png"), ("LA", ".png"), ("CMYK", ".jpg"), ("I", ".tif"), ("F", ".tif")]
)
def test_other_pixel_modes_load_as_rgb_in_unit_range(tmp_path: Path, mode: str, suffix: str) -> None:
    Image.new(mode, (5, 4), 1).save(tmp_path / f"m{suffix}")
    image = load_image(tmp_path / f"m{suffix}")
    assert image.shape == (3, 4, 5) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0


def test_32_bit_integer_image_beyond_16_bits_at_full_range_is_scaled_by_its_maximum() -> None:
    values = np.array([[0, 70000], [140000, 35000]], dtype=np.int32)
    array = image_to_array(Image.fromarray(values, mode="I"), scaling="full")
    assert np.allclose(array[..., 0], [[0.0, 0.5], [1.0, 0.25]])


def test_float_image_in_unit_range_at_full_range_is_kept() -> None:
    values = np.array([[0.0, 0.25], [0.5, 1.0]], dtype=np.float32)
    assert np.array_equal(image_to_array(Image.fromarray(values, mode="F"), scaling="full")[..., 1], values)


def low_range_16_bit(tmp_path: Path, suffix: str) -> tuple[Path, np.ndarray]:
    """A 16-bit image whose values span 0-235 (a faint microscopy signal), as PNG or TIFF."""
    values = np.random.default_rng(0).integers(0, 236, size=(40, 50)).astype(np.uint16)
    values[0, 0], values[0, 1] = 0, 235
    path = tmp_path / f"faint{suffix}"
    if suffix == ".tif":
        import tifffile

        tifffile.imwrite(path, values)
    else:
        Image.fromarray(values).save(path)
    return path, values


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_low_range_16_bit_images_fill_the_unit_range_by_default(tmp_path: Path, suffix: str) -> None:
    path, values = low_range_16_bit(tmp_path, suffix)
    image = load_image(path)  # default: percentiles 1 and 99.8
    low, high = np.percentile(values.astype(np.float64), [1.0, 99.8])
    expected = np.clip((values - low) / (high - low), 0, 1)
    # float32 rounding of the same arithmetic
    assert np.allclose(image[0].numpy(), expected, atol=1e-6)
    assert image.min() == 0.0 and image.max() == 1.0
    assert load_image(path, scaling="full").max() < 0.004  # what dividing by 65535 shows the network


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_minmax_maps_the_images_own_extremes_to_0_and_1(tmp_path: Path, suffix: str) -> None:
    path, values = low_range_16_bit(tmp_path, suffix)
    image = load_image(path, scaling="minmax")
    assert np.allclose(image[1].numpy(), values / 235.0, atol=1e-6)


def test_percentiles_clip_a_hot_pixel() -> None:
    values = np.full((20, 20), 100, dtype=np.uint16)
    values[:10] = 200
    values[0, 0] = 60000  # one hot pixel of 400: above the 99th percentile
    array = image_to_array(Image.fromarray(values), percentiles=(1.0, 99.0))
    assert array[19, 19, 0] == 0.0 and array[1, 1, 0] == 1.0 and array[0, 0, 0] == 1.0
    assert image_to_array(Image.fromarray(values), scaling="minmax")[1, 1, 0] < 0.002  # the hot pixel sets the scale


def test_a_constant_high_bit_image_is_black_not_nan() -> None:
    array = image_to_array(Image.fromarray(np.full((4, 4), 700, dtype=np.uint16)))
    assert np.array_equal(array, np.zeros((4, 4, 3), dtype=np.float32))


def test_an_unknown_scaling_is_one_line() -> None:
    with pytest.raises(RefineMaskError, match="choose one of percentiles, minmax, full"):
        image_to_array(Image.fromarray(np.zeros((2, 2), dtype=np.uint16)), scaling="log")


# -- any image a predictor takes: one conversion ------------------------------------------------


def test_a_file_a_pil_image_an_array_and_a_tensor_give_the_same_input(tmp_path: Path) -> None:
    pixels = np.random.default_rng(1).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    expected = load_image(tmp_path / "a.png")
    for image in (tmp_path / "a.png", str(tmp_path / "a.png"), Image.fromarray(pixels), pixels,
                  torch.from_numpy(pixels).permute(2, 0, 1), expected):
        tensor = as_image_tensor(image)
        assert tensor.dtype == torch.float32 and torch.equal(tensor, expected), type(image)
        assert np.array_equal(as_rgb_array(image), expected.permute(1, 2, 0).numpy()), type(image)


def test_float_arrays_are_taken_as_unit_range_and_alpha_and_gray_are_handled() -> None:
    rgba = np.random.default_rng(2).random((4, 6, 4))
    assert torch.equal(as_image_tensor(rgba), torch.from_numpy(rgba[:, :, :3]).permute(2, 0, 1).float())
    gray = np.full((3, 2), 0.25, dtype=np.float32)
    assert as_rgb_array(gray).shape == (3, 2, 3) and (as_rgb_array(gray) == 0.25).all()


def test_a_pil_image_of_16_bits_is_scaled_as_asked() -> None:
    image = Image.fromarray(np.full((4, 4), 700, dtype=np.uint16))
    full = as_image_tensor(image, **scaling_options({"high_bit_scaling": "full"}))
    assert torch.allclose(full, torch.full((3, 4, 4), 700 / 65535))


def test_16_bit_arrays_and_tensors_are_scaled_as_the_same_data_in_a_file(tmp_path) -> None:
    # a faint 16-bit frame (values 0-235) as tifffile or OpenCV would hand it over
    frame = np.random.default_rng(4).integers(0, 236, size=(12, 10)).astype(np.uint16)
    path = tmp_path / "faint.png"
    Image.fromarray(frame).save(path)
    for scaling in ("percentiles", "minmax", "full"):
        options = scaling_options({"high_bit_scaling": scaling})
        from_file = as_image_tensor(path, **options)
        assert torch.equal(as_image_tensor(frame, **options), from_file), scaling
        # three channels share one scale; percentiles of three copies differ by less than a grey level
        rgb = torch.from_numpy(np.repeat(frame[:, :, None], 3, axis=2).astype(np.int32)).permute(2, 0, 1)
        assert torch.allclose(as_image_tensor(rgb, **options), from_file, atol=1 / 235), scaling
    assert float(as_image_tensor(frame).max()) == 1.0  # percentiles: not near black, as /65535 would be


@pytest.mark.parametrize(
    ("image", "message"),
    [(np.zeros((4, 4, 2), dtype=np.uint8), "numpy image must be"),
     (torch.zeros(4, 4, 3), "tensor image must be"),
     ([[0, 1], [1, 0]], "cannot read an image from a list")],
)
def test_an_unusable_image_is_one_line(image, message) -> None:
    for convert in (as_image_tensor, as_rgb_array):
        with pytest.raises(RefineMaskError, match=message) as info:
            convert(image)
        assert "\n" not in str(info.value)
