"""The official mask-head state-dict layout, written out from docs/design.md §7.1 (keys after the prefix)."""


def official_mask_head_shapes(num_classes: int, last_stage_classes: int | None = None) -> dict[str, tuple]:
    last = num_classes if last_stage_classes is None else last_stage_classes
    shapes = {}

    def conv(name, out_c, in_c, k):
        shapes[name + ".weight"] = (out_c, in_c, k, k)
        shapes[name + ".bias"] = (out_c,)

    for i in range(2):
        conv(f"instance_convs.{i}.conv", 256, 256, 3)
    for i in range(4):
        conv(f"semantic_convs.{i}.conv", 256, 256, 3)
    c = 256
    for k in range(3):
        p = f"stages.{k}"
        conv(p + ".semantic_transform_in", c, 256, 1)
        conv(p + ".semantic_transform_out", c, c, 1)
        conv(p + ".instance_logits", num_classes, c, 1)
        conv(p + ".fuse_conv.0", c, 2 * c + 2, 1)
        for j in (1, 2, 3):
            conv(f"{p}.fuse_conv.1.dilation_conv_{j}.conv", c, c, 3)
        conv(p + ".fuse_conv.1.merge_conv.conv", c, c, 1)
        conv(p + ".fuse_transform_out", c // 2 - 2, c, 1)
        c //= 2
    conv("final_instance_logits", last, 32, 1)
    conv("semantic_logits", 1, 256, 1)
    return shapes


def official_simple_mask_head_shapes(
    num_classes: int, last_stage_classes: int = 1, num_convs_instance: int = 2, num_convs_semantic: int = 4
) -> dict[str, tuple]:
    """SimpleRefineMaskHead's 62 keys (official faster-better config), from docs/design.md §7.1."""
    shapes = {}

    def conv(name, out_c, in_c, k):
        shapes[name + ".weight"] = (out_c, in_c, k, k)
        shapes[name + ".bias"] = (out_c,)

    for i in range(num_convs_instance):
        conv(f"instance_convs.{i}.conv", 256, 256, 3)
    for i in range(num_convs_semantic):
        conv(f"semantic_convs.{i}.conv", 256, 256, 3)
    c = 256
    for k in range(3):
        p = f"stages.{k}"
        conv(p + ".semantic_transform_in", c, 256, 1)
        conv(p + ".fuse_conv.0", c, 2 * c + 1, 1)
        for j in (1, 2, 3):
            conv(f"{p}.fuse_conv.1.dilation_conv_{j}.conv", c, c, 3)
        conv(p + ".fuse_conv.1.merge_conv.conv", c, c, 1)
        conv(p + ".fuse_transform_out", c // 2 - 1, c, 1)
        c //= 2
    for k, (channels, classes) in enumerate(zip((256, 128, 64, 32), (num_classes,) * 3 + (last_stage_classes,))):
        conv(f"stage_instance_logits.{k}", classes, channels, 1)
    return shapes
