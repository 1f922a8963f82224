import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from torchvision import tv_tensors
from torchvision.transforms import v2

from refinemask.data.coco import CocoDetection
from refinemask.data.transforms import Compose, RandomHorizontalFlip, horizontal_flip

H, W = 24, 32
L_SHAPE = [2.0, 2.0, 12.0, 2.0, 12.0, 6.0, 6.0, 6.0, 6.0, 16.0, 2.0, 16.0]
SLANTED = [4.5, 3.25, 25.7, 5.1, 17.2, 20.9, 6.1, 14.4]


def rasterise(polygons: list, height: int, width: int) -> np.ndarray:
    coordinates = [np.asarray(p, np.float64).tolist() for p in polygons]
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(coordinates, height, width)))


def sample(polygon: list[float]) -> tuple[torch.Tensor, dict]:
    """An image with one polygon instance, its mask rasterised by pycocotools."""
    xs, ys = polygon[0::2], polygon[1::2]
    image = tv_tensors.Image(torch.rand(3, H, W))
    target = {
        "boxes": tv_tensors.BoundingBoxes([[min(xs), min(ys), max(xs), max(ys)]], format="XYXY", canvas_size=(H, W)),
        "labels": torch.tensor([1]),
        "masks": tv_tensors.Mask(torch.from_numpy(rasterise([polygon], H, W))[None]),
        "polygons": [[np.asarray(polygon, np.float32)]],
        "image_id": 5,
    }
    return image, target


def test_flipped_polygon_rasterises_to_the_flipped_mask() -> None:
    image, target = sample(L_SHAPE)
    _, flipped = horizontal_flip(image, target)
    assert np.array_equal(rasterise(flipped["polygons"][0], H, W), flipped["masks"][0].numpy())
    assert np.array_equal(flipped["masks"][0].numpy(), target["masks"][0].numpy()[:, ::-1])


def test_flipped_slanted_polygon_matches_the_flipped_mask_up_to_edge_rounding() -> None:
    image, target = sample(SLANTED)
    _, flipped = horizontal_flip(image, target)
    mask = flipped["masks"][0].numpy()
    differing = (rasterise(flipped["polygons"][0], H, W) != mask).sum()
    assert differing <= 0.05 * mask.sum()  # pycocotools rounds slanted edges asymmetrically


def test_flip_moves_boxes_to_the_mirrored_position() -> None:
    image, target = sample(L_SHAPE)
    _, flipped = horizontal_flip(image, target)
    assert flipped["boxes"].tolist() == [[W - 12.0, 2.0, W - 2.0, 16.0]]
    ys, xs = np.nonzero(flipped["masks"][0].numpy())
    assert (xs.min(), xs.max() + 1) == (W - 12, W - 2)  # the flipped box bounds the flipped mask


def test_flip_mirrors_the_image() -> None:
    image, target = sample(L_SHAPE)
    flipped_image, _ = horizontal_flip(image, target)
    assert torch.equal(flipped_image, image.flip(-1))


def test_flipping_twice_restores_everything() -> None:
    image, target = sample(SLANTED)
    back_image, back = horizontal_flip(*horizontal_flip(image, target))
    assert torch.equal(back_image, image) and torch.equal(back["masks"], target["masks"])
    assert torch.allclose(back["boxes"], target["boxes"])
    assert np.allclose(back["polygons"][0][0], target["polygons"][0][0], atol=1e-5)


def test_flip_keeps_rle_instances_without_polygons() -> None:
    image, target = sample(L_SHAPE)
    target["polygons"] = [None]
    _, flipped = horizontal_flip(image, target)
    assert flipped["polygons"] == [None] and flipped["labels"].tolist() == [1] and flipped["image_id"] == 5


@pytest.mark.parametrize(("p", "flips"), [(0.0, False), (1.0, True)])
def test_random_flip_follows_its_probability(p: float, flips: bool) -> None:
    image, target = sample(L_SHAPE)
    out, _ = RandomHorizontalFlip(p)(image, target)
    assert torch.equal(out, image.flip(-1)) == flips


def test_random_flip_flips_about_half_the_time() -> None:
    flip = RandomHorizontalFlip(0.5, generator=torch.Generator().manual_seed(0))
    image, target = sample(L_SHAPE)
    flipped = sum(not torch.equal(flip(image, target)[0], image) for _ in range(200))
    assert 70 < flipped < 130


def test_v2_photometric_transform_in_compose_leaves_the_target_alone() -> None:
    image, target = sample(L_SHAPE)
    out, out_target = Compose([v2.ColorJitter(brightness=0.5), RandomHorizontalFlip(0.0)])(image, target)
    assert out.shape == image.shape and not torch.equal(out, image)
    assert out_target["polygons"][0][0].tolist() == L_SHAPE and torch.equal(out_target["masks"], target["masks"])


def test_dataset_flip_keeps_image_and_target_together(tiny_coco) -> None:
    plain = CocoDetection(*tiny_coco)
    flipped = CocoDetection(*tiny_coco, transforms=RandomHorizontalFlip(1.0))
    image, target = plain[1]
    flipped_image, flipped_target = flipped[1]
    assert torch.equal(flipped_image, image.flip(-1))
    assert torch.equal(flipped_target["masks"], target["masks"].flip(-1))
    assert np.array_equal(
        rasterise(flipped_target["polygons"][0], 36, 20), flipped_target["masks"][0].numpy()
    )


# --- training crops (data.crop_size) -----------------------------------------------------------

def test_crop_keeps_image_masks_boxes_and_polygons_together() -> None:
    from refinemask.data.transforms import crop

    image, target = sample(L_SHAPE)
    window = (4, 5, 10, 12)  # top, left, h, w: cuts the L through both arms
    cropped_image, cropped = crop(image, target, window)
    assert torch.equal(cropped_image, image[:, 4:14, 5:17])
    assert torch.equal(cropped["masks"][0], target["masks"][0, 4:14, 5:17])
    # the shifted polygon, rasterised in the window, is the cropped mask: nothing needs clipping
    assert np.array_equal(rasterise(cropped["polygons"][0], 10, 12), cropped["masks"][0].numpy())
    assert cropped["boxes"].tolist() == [[0.0, 0.0, 7.0, 10.0]] and cropped["boxes"].canvas_size == (10, 12)


def test_crop_drops_instances_left_without_pixels_in_the_window() -> None:
    from refinemask.data.transforms import crop

    image, target = sample(L_SHAPE)
    _, cropped = crop(image, target, (18, 20, 6, 12))  # bottom right: the L is not there
    assert len(cropped["boxes"]) == len(cropped["labels"]) == len(cropped["masks"]) == len(cropped["polygons"]) == 0


def test_crop_windows_hold_an_instance_centre_and_stay_in_the_image() -> None:
    from refinemask.data.transforms import crop_window

    boxes = torch.tensor([[900.0, 100.0, 960.0, 140.0], [100.0, 1500.0, 180.0, 1580.0]])
    g = torch.Generator().manual_seed(0)
    centres = set()
    for _ in range(40):
        top, left, h, w = crop_window(2000, 1200, 512, boxes, g)
        assert (h, w) == (512, 512) and 0 <= top <= 2000 - 512 and 0 <= left <= 1200 - 512
        inside = [k for k, (x0, y0, x1, y1) in enumerate(boxes.tolist())
                  if left <= (x0 + x1) / 2 < left + w and top <= (y0 + y1) / 2 < top + h]
        assert inside
        centres.update(inside)
    assert centres == {0, 1}  # every instance gets its turn
    assert crop_window(300, 200, 512, boxes[:0], g) == (0, 0, 300, 200)  # smaller than a crop: whole


def test_training_samples_crop_reproducibly_from_their_key(tiny_coco) -> None:
    from refinemask.engine.data import TrainingSamples

    dataset = CocoDetection(*tiny_coco)
    samples = TrainingSamples(dataset, flip_prob=0.5, crop_size=16)
    image, target = samples[(0, 123)]
    again, target_again = samples[(0, 123)]
    assert image.shape[-2] <= 16 and image.shape[-1] <= 16 and torch.equal(image, again)
    assert torch.equal(target["masks"], target_again["masks"]) and len(target["boxes"]) >= 1
    assert target["masks"].shape[-2:] == image.shape[-2:]


def test_a_window_loaded_from_the_dataset_is_the_crop_of_the_whole_sample(tiny_coco) -> None:
    from refinemask.data.transforms import crop

    dataset = CocoDetection(*tiny_coco)
    window = (0, 0, 14, 20)  # image 1 (40x30): holds some instances, not all
    image, target = dataset.load_sample(0, window)
    expected_image, expected = crop(*dataset[0], window)
    assert torch.equal(image, expected_image)
    assert torch.equal(target["masks"], expected["masks"]) and torch.equal(target["labels"], expected["labels"])
    assert torch.equal(torch.as_tensor(target["boxes"]), torch.as_tensor(expected["boxes"]))
    assert 0 < len(dataset.load_target(0, window=window)["labels"]) < len(dataset.load_target(0)["labels"])
    assert torch.equal(dataset.instance_boxes(0), torch.as_tensor(dataset.load_target(0)["boxes"]))


def test_training_crops_decode_each_image_once_within_the_cache(tiny_coco) -> None:
    from refinemask.engine.data import TrainingSamples

    dataset = CocoDetection(*tiny_coco)
    reads = []
    load_image = dataset.load_image
    dataset.load_image = lambda index: reads.append(index) or load_image(index)
    samples = TrainingSamples(dataset, flip_prob=0.0, crop_size=16)
    for seed in range(5):
        samples[(0, seed)]
    assert reads == [0]
    small = TrainingSamples(dataset, flip_prob=0.0, crop_size=16, cache_bytes=1)  # holds one image
    for index in (0, 1, 0):
        small[(index, 0)]
    assert reads == [0, 0, 1, 0]
