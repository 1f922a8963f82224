import pytest
import torch

from tests.convert.official_checkpoint import VARIANTS, official_checkpoint, official_state_dict
from tests.scratch import scratch_dir



@pytest.fixture(scope="session")
def official_state():
    """variant -> random official-layout state dict (made once per session)."""
    cache = {}

    def get(variant: str) -> dict:
        if variant not in cache:
            num_classes, depth, last = VARIANTS[variant]
            cache[variant] = official_state_dict(num_classes, depth, last, seed=list(VARIANTS).index(variant))
        return cache[variant]

    return get


@pytest.fixture(scope="session")
def converted_state(official_state):
    """variant -> the official state dict converted to our keys (made once per session)."""
    from refinemask.convert import official_to_refinemask

    cache = {}

    def get(variant: str) -> dict:
        if variant not in cache:
            cache[variant] = official_to_refinemask(official_state(variant), VARIANTS[variant][0])
        return cache[variant]

    return get


@pytest.fixture(scope="package")
def official_file(official_state, tmp_path_factory):
    """variant -> path of the official checkpoint {'meta', 'state_dict'} written with torch.save
    (removed when this folder's tests end)."""
    paths = {}
    with scratch_dir(tmp_path_factory, "official") as root:

        def get(variant: str, classes=None):
            key = (variant, classes)
            if key not in paths:
                path = root / f"{variant}_{len(paths)}.pth"
                torch.save(official_checkpoint(official_state(variant), classes), path)
                paths[key] = path
            return paths[key]

        yield get
