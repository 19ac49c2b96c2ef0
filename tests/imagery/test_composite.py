"""The numba composite kernel against a plain numpy reference (np.nanmedian of masked copies)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from pipeline.imagery.composite import composite


def _reference(stack: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """What ``composite`` promises, spelled out with np.nanmedian."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
        of_usable = np.nanmedian(np.where(usable[:, None], stack, np.nan), axis=0)
        of_all = np.nanmedian(stack, axis=0)
    out = np.where(usable.any(axis=0)[None], of_usable, of_all)
    return np.where(np.isnan(out), 0.0, out).astype(np.float32)


def _random_views(n: int, seed: int,
                  shape: tuple[int, int] = (23, 31)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    stack = rng.uniform(0, 0.6, (n, 3, *shape)).astype(np.float32)
    stack[:, :, :, :4] = np.nan  # a strip outside every scene
    stack[rng.random(stack.shape) < 0.1] = np.nan  # scattered holes, per band
    usable = rng.random((n, *shape)) < 0.6
    # As scene_on_grid makes it: usable implies a value in every band.
    usable &= np.isfinite(stack).all(axis=1)
    usable[:, 5:9, 10:16] = False  # cloudy in every view: falls back to all values
    return stack, usable


@pytest.mark.parametrize("n", range(1, 9))
def test_composite_matches_nanmedian_of_masked_copies(n: int) -> None:
    for seed in range(3):  # odd and even counts of usable views turn up at every n > 1
        stack, usable = _random_views(n, seed=10 * n + seed)
        got = composite(stack, usable)
        assert got.dtype == np.float32 and got.shape == stack.shape[1:]
        assert np.isfinite(got).all()
        np.testing.assert_array_equal(got, _reference(stack, usable))


def test_even_counts_take_the_mean_of_the_middle_two() -> None:
    image = np.array([0.1, 0.4, 0.2, 0.9], dtype=np.float32).reshape(4, 1, 1, 1)
    usable = np.ones((4, 1, 1), dtype=bool)
    assert composite(image, usable)[0, 0, 0] == np.float32((0.2 + 0.4) / 2)
    usable[3] = False  # three left: the middle one
    assert composite(image, usable)[0, 0, 0] == np.float32(0.2)


def test_all_cloudy_pixels_use_every_views_values_and_nothing_is_zero() -> None:
    image = np.array([[0.3, np.nan], [np.nan, np.nan], [0.5, np.nan]], dtype=np.float32)
    expected = np.array([(0.3 + 0.5) / 2, 0.0], dtype=np.float32)
    got = composite(image.reshape(3, 1, 1, 2), np.zeros((3, 1, 2), bool))
    np.testing.assert_allclose(got[0, 0], expected, atol=1e-7)


def test_composite_keeps_float32_for_float64_views() -> None:
    stack, usable = _random_views(3, seed=1)
    got = composite(stack.astype(np.float64), usable)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, composite(stack, usable))


@pytest.mark.parametrize("n", [3, 7])  # both kernels: up to 5 views, and more
def test_picked_views_give_the_median_of_a_copy_of_them(n: int) -> None:
    stack, _ = _random_views(n + 2, seed=n)
    picked = np.random.default_rng(n).permutation(n + 2)[:n]
    _, usable = _random_views(n, seed=n + 1)
    usable &= np.isfinite(stack[picked]).all(axis=1)
    np.testing.assert_array_equal(composite(stack, usable, picked),
                                  composite(stack[picked], usable))
    with pytest.raises(ValueError, match="picked from"):
        composite(stack, usable, np.append(picked[1:], n + 2))


def test_no_view_gives_zeros() -> None:
    got = composite(np.zeros((0, 2, 3, 4), np.float32), np.zeros((0, 3, 4), bool))
    assert got.shape == (2, 3, 4) and not got.any()
