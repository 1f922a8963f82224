"""The official mask-head state-dict layout, written out from docs/design.md §7.1 (keys after the prefix)."""


def official_mask_head_shapes(
    num_classes: int, last_stage_classes: int | None = None, instance_channels: int = 256, semantic_channels: int = 256
) -> dict[str, tuple]:
    """RefineMaskHead's keys; the widths are the official ``conv_out_channels_instance`` and
    ``conv_out_channels_semantic`` (256 in every official config), the input width 256."""
    last = num_classes if last_stage_classes is None else last_stage_classes
    shapes = {}

    def conv(name, out_c, in_c, k):
        shapes[name + ".weight"] = (out_c, in_c, k, k)
        shapes[name + ".bias"] = (out_c,)

    ci, cs = instance_channels, semantic_channels
    for i in range(2):
        conv(f"instance_convs.{i}.conv", ci, 256 if i == 0 else ci, 3)
    for i in range(4):
        conv(f"semantic_convs.{i}.conv", cs, 256 if i == 0 else cs, 3)
    c = ci
    for k in range(3):
        p = f"stages.{k}"
        conv(p + ".semantic_transform_in", c, cs, 1)
        conv(p + ".semantic_transform_out", c, c, 1)
        conv(p + ".instance_logits", num_classes, c, 1)
        conv(p + ".fuse_conv.0", c, 2 * c + 2, 1)
        for j in (1, 2, 3):
            conv(f"{p}.fuse_conv.1.dilation_conv_{j}.conv", c, c, 3)
        conv(p + ".fuse_conv.1.merge_conv.conv", c, c, 1)
        conv(p + ".fuse_transform_out", c // 2 - 2, c, 1)
        c //= 2
    conv("final_instance_logits", last, c, 1)
    conv("semantic_logits", 1, cs, 1)
    return shapes


def official_simple_mask_head_shapes(
    num_classes: int, last_stage_classes: int = 1, num_convs_instance: int = 2, num_convs_semantic: int = 4,
    instance_channels: int = 256, semantic_channels: int = 256,
) -> dict[str, tuple]:
    """SimpleRefineMaskHead's 62 keys (official faster-better config), from docs/design.md §7.1;
    the widths as in :func:`official_mask_head_shapes`."""
    shapes = {}

    def conv(name, out_c, in_c, k):
        shapes[name + ".weight"] = (out_c, in_c, k, k)
        shapes[name + ".bias"] = (out_c,)

    ci, cs = instance_channels, semantic_channels
    for i in range(num_convs_instance):
        conv(f"instance_convs.{i}.conv", ci, 256 if i == 0 else ci, 3)
    for i in range(num_convs_semantic):
        conv(f"semantic_convs.{i}.conv", cs, 256 if i == 0 else cs, 3)
    c = ci
    for k in range(3):
        p = f"stages.{k}"
        conv(p + ".semantic_transform_in", c, cs, 1)
        conv(p + ".fuse_conv.0", c, 2 * c + 1, 1)
        for j in (1, 2, 3):
            conv(f"{p}.fuse_conv.1.dilation_conv_{j}.conv", c, c, 3)
        conv(p + ".fuse_conv.1.merge_conv.conv", c, c, 1)
        conv(p + ".fuse_transform_out", c // 2 - 1, c, 1)
        c //= 2
    widths = (ci, ci // 2, ci // 4, ci // 8)
    for k, (channels, classes) in enumerate(zip(widths, (num_classes,) * 3 + (last_stage_classes,))):
        conv(f"stage_instance_logits.{k}", classes, channels, 1)
    return shapes
