"""The built-in synthetic data set: thin, bent shapes on textured backgrounds, in COCO format.

Shapes: S the side of a (square) image; H = W = S.

Five categories of objects whose thin parts make boundary quality matter: ``stroke`` (a curved
line), ``star`` (bent, tapering spikes), ``comb`` (a curved spine with thin teeth), ``ring`` (thin,
closed or open) and ``tailed_blob`` (a blob with curling tails). Every object is a union of
vector polygons; its pixels are the polygons rasterised by pycocotools, the same rasteriser that
reads the annotation back, so an unoccluded object's annotation matches its pixels exactly (hard
edges, no anti-aliasing). A consumer must read a multi-polygon annotation as the union of its
polygons (pycocotools ``merge``), not with an even-odd fill: the parts overlap.
Backgrounds and object fills are textured (smooth noise, stripes, gradients) so that colour
alone does not give a mask away.

Objects are painted one over the other; an annotation is the *visible* part only: the object's
polygons when nothing covers it, otherwise the visible pixels as compressed RLE. ``bbox`` is the
tight box and ``area`` the pixel count of the visible mask; ``iscrowd`` is 0.

Files written by :func:`make_synthetic`::

    OUT/images/train_000000.png ...     the images of both splits, in one folder
    OUT/annotations.json                 when there is no validation split, or
    OUT/train.json + OUT/val.json        when ``num_val_images > 0`` (images val_000000.png ...)

Image ``i`` of a split is drawn from its own random stream seeded by ``(seed, split, i)``: the
same seed gives byte-identical files, and adding a validation split leaves the training images
unchanged.

Where things live: :mod:`.presets` (categories and the two difficulty presets), :mod:`.shapes`
(the five object outlines as polygons), :mod:`.paint` (colours and textures), :mod:`.scene`
(one image: placing, painting and annotating objects), :mod:`.files` (the data set on disk:
splits, PNGs, COCO json).
"""
from refinemask.data.synthetic.files import SyntheticPaths, image_rng, make_synthetic
from refinemask.data.synthetic.presets import CATEGORY_NAMES, MAX_SIZE, MIN_SIZE, PRESETS, SyntheticPreset
from refinemask.data.synthetic.scene import SyntheticInstance, SyntheticScene, render_scene, scene_annotations

__all__ = [
    "CATEGORY_NAMES",
    "MAX_SIZE",
    "MIN_SIZE",
    "PRESETS",
    "SyntheticInstance",
    "SyntheticPaths",
    "SyntheticPreset",
    "SyntheticScene",
    "image_rng",
    "make_synthetic",
    "render_scene",
    "scene_annotations",
]
