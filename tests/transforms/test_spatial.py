"""In-plane resampling: the torch path for upsampling is the scipy mapping (prediction's fast path)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from segshift.transforms import spatial


def _scipy_linear(stack: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """The reference: scipy's order-1 affine transform with the module's half-pixel mapping (no filter: upsampling)."""
    (in_h, in_w), (out_h, out_w) = stack.shape[-2:], out_hw
    rh, rw = in_h / out_h, in_w / out_w
    lead = stack.ndim - 2
    return ndi.affine_transform(
        stack.astype(np.float32),
        np.array([1.0] * lead + [rh, rw]),
        offset=np.array([0.0] * lead + [0.5 * rh - 0.5, 0.5 * rw - 0.5]),
        output_shape=stack.shape[:-2] + out_hw,
        order=1,
        mode="nearest",
        prefilter=False,
    )


@pytest.mark.parametrize(("shape", "out_hw"), [((4, 3, 17, 23), (40, 41)), ((2, 100, 100), (197, 100)), ((5, 5), (12, 9))])
def test_torch_upsampling_equals_the_scipy_mapping(shape, out_hw):
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    got = spatial.resize_inplane(x, out_hw, order=1)
    assert got.dtype == np.float32 and got.shape == shape[:-2] + out_hw
    np.testing.assert_allclose(got, _scipy_linear(x, out_hw), atol=1e-5)  # float32 coordinates in torch, float64 in scipy
    assert got[..., 0, 0] == pytest.approx(x[..., 0, 0])  # the edges clamp, as mode="nearest"


def test_downsampling_keeps_the_anti_aliased_scipy_path():
    x = np.zeros((1, 40, 40), np.float32)
    x[0, ::2] = 1.0  # a stripe pattern that plain linear decimation would alias
    got = spatial.resize_inplane(x, (20, 20), order=1)
    assert np.ptp(got) < 0.3  # the Gaussian pre-filter smoothed the stripes
    assert not np.allclose(got, _scipy_linear(x, (20, 20)))
