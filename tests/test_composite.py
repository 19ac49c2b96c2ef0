"""The numba composite kernel against a plain numpy reference (np.nanmedian of masked copies)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from pipeline.chips import SceneView
from pipeline.composite import composite, nanmedian_views


def _reference(stack: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """What ``composite`` promises, spelled out with np.nanmedian."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
        of_usable = np.nanmedian(np.where(usable[:, None], stack, np.nan), axis=0)
        of_all = np.nanmedian(stack, axis=0)
    out = np.where(usable.any(axis=0)[None], of_usable, of_all)
    return np.where(np.isnan(out), 0.0, out).astype(np.float32)


def _random_views(n: int, seed: int, shape: tuple[int, int] = (23, 31)) -> list[SceneView]:
    rng = np.random.default_rng(seed)
    stack = rng.uniform(0, 0.6, (n, 3, *shape)).astype(np.float32)
    stack[:, :, :, :4] = np.nan  # a strip outside every scene
    stack[rng.random(stack.shape) < 0.1] = np.nan  # scattered holes, per band
    usable = rng.random((n, *shape)) < 0.6
    # As scene_on_grid makes it: usable implies a value in every band.
    usable &= np.isfinite(stack).all(axis=1)
    usable[:, 5:9, 10:16] = False  # cloudy in every view: falls back to all values
    return [SceneView(f"s{i}", "2020-01-01", stack[i], usable[i]) for i in range(n)]


@pytest.mark.parametrize("n", range(1, 9))
def test_composite_matches_nanmedian_of_masked_copies(n: int) -> None:
    for seed in range(3):  # odd and even counts of usable views turn up at every n > 1
        views = _random_views(n, seed=10 * n + seed)
        stack = np.stack([v.image for v in views])
        usable = np.stack([v.usable for v in views])
        got = composite(views, pool=5)
        assert got.dtype == np.float32 and got.shape == stack.shape[1:]
        assert np.isfinite(got).all()
        np.testing.assert_array_equal(got, _reference(stack, usable))


def test_even_counts_take_the_mean_of_the_middle_two() -> None:
    image = np.array([0.1, 0.4, 0.2, 0.9], dtype=np.float32).reshape(4, 1, 1, 1)
    usable = np.ones((4, 1, 1), dtype=bool)
    views = [SceneView(f"s{i}", "", image[i], usable[i]) for i in range(4)]
    assert composite(views, pool=5)[0, 0, 0] == np.float32((0.2 + 0.4) / 2)
    views[3].usable[...] = False  # three left: the middle one
    assert composite(views, pool=5)[0, 0, 0] == np.float32(0.2)


def test_all_cloudy_pixels_use_every_views_values_and_nothing_is_zero() -> None:
    image = np.array([[0.3, np.nan], [np.nan, np.nan], [0.5, np.nan]], dtype=np.float32)
    views = [SceneView(f"s{i}", "", image[i].reshape(1, 1, 2), np.zeros((1, 2), bool))
             for i in range(3)]
    expected = np.array([(0.3 + 0.5) / 2, 0.0], dtype=np.float32)
    np.testing.assert_allclose(composite(views, pool=5)[0, 0], expected, atol=1e-7)


def test_composite_keeps_float32_for_float64_views() -> None:
    views = _random_views(3, seed=1)
    wide = [SceneView(v.scene_id, v.date, v.image.astype(np.float64), v.usable) for v in views]
    got = composite(wide, pool=5)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, composite(views, pool=5))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nanmedian_views_keeps_shape_and_dtype(dtype) -> None:
    rng = np.random.default_rng(3)
    stack = rng.random((6, 2, 5, 7)).astype(dtype)
    stack[rng.random(stack.shape) < 0.5] = np.nan
    stack[:, 0, 0, 0] = np.nan  # no value at all: NaN, as np.nanmedian
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.nanmedian(stack.astype(np.float32), axis=0)
    got = nanmedian_views(stack)
    assert got.dtype == dtype and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-7, equal_nan=True)
    assert np.isnan(got[0, 0, 0])
    np.testing.assert_allclose(nanmedian_views(stack[:, 1, 2]), expected[1, 2], atol=1e-7,
                               equal_nan=True)
