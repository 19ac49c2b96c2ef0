"""Region statistics and the random-forest baseline, on the tiny chip store and on a
synthetic store whose classes are separable only inside the loss region."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from forestnet_model.baseline import (
    fit_random_forest,
    impute,
    select_forest,
    train_medians,
)
from forestnet_model.data import split_indices
from forestnet_model.region_features import (
    FEATURE_SETS,
    STATS,
    FeatureTable,
    event_features,
    feature_names,
    ndvi,
    region_stats,
    split_features,
)
from pipeline.core.drivers import DRIVER_CLASSES
from pipeline.imagery.views import CHIP_BANDS
from pipeline.training_set.auxiliary import AUX_SCALARS
from pipeline.training_set.chip_store import (
    open_chips,
)
from tests.model import synthetic_chips as training_chips

#: One point: the grid search itself is tested with a two-point grid below.
SMALL_GRID = {"n_estimators": (50,), "max_depth": (None,), "max_features": ("sqrt",)}


#: Per-class spectra (red, green, blue, nir, swir1, swir2) inside the loss region.
SPECTRA = np.array([
    [0.04, 0.07, 0.03, 0.30, 0.15, 0.07],
    [0.08, 0.09, 0.06, 0.25, 0.20, 0.12],
    [0.12, 0.12, 0.09, 0.20, 0.25, 0.18],
    [0.16, 0.14, 0.12, 0.15, 0.30, 0.24],
], np.float32)


def write_synthetic_chips(
    path: Path, n_per_class: int = 25, size: int = 16, seed: int = 0,
    splits: tuple[str, ...] = ("train", "train", "train", "val", "test"),
) -> Path:
    """A chips.zarr-like store: noise outside the loss region, the class's spectrum inside.

    Event 0 has an empty loss mask (features fall back to the whole chip); event 1 has
    NaN pixels inside its region; the last event's chip failed (``chip_ok`` 0).
    """
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), n_per_class)
    rng.shuffle(labels)
    n = len(labels)
    image = rng.uniform(0.02, 0.4, size=(n, 2, len(CHIP_BANDS), size, size)).astype(np.float32)
    masks = np.zeros((n, size, size), np.uint8)
    for i, c in enumerate(labels):
        r, k = rng.integers(0, size - 5, size=2)
        masks[i, r:r + 4, k:k + 5] = 1
        inside = masks[i].astype(bool)
        image[i, 0][:, inside] = (SPECTRA[c][:, None]
                                  + rng.normal(0, 0.005, (len(CHIP_BANDS), inside.sum())))
    masks[0] = 0
    image[1, 0, 2][masks[1].astype(bool)] = np.where(np.arange(20) % 3 == 0, np.nan, 0.07)
    ok = np.ones(n, np.uint8)
    ok[-1] = 0
    ds = xr.Dataset(
        {
            "image": (("event", "view", "band", "y", "x"), image),
            "loss_mask": (("event", "y", "x"), masks),
            "aux": (("event", "aux_band", "y", "x"),
                    rng.normal(10, 2, (n, 1, size, size)).astype(np.float32)),
            "aux_scalar": (("event", "feature"), rng.normal(0, 1, (n, 2)).astype(np.float32)),
            "chip_ok": (("event",), ok),
        },
        coords={
            "event_id": ("event", np.array([f"ev{i}" for i in range(n)], dtype=object)),
            "merged_label": ("event", np.array([DRIVER_CLASSES[c] for c in labels], object)),
            "split": ("event", np.array([splits[i % len(splits)] for i in range(n)], object)),
            "band": np.array(CHIP_BANDS, dtype=object),
            "aux_band": np.array(["slope"], dtype=object),
            "feature": np.array(["noise_a", "noise_b"], dtype=object),
        },
        attrs={"radiometry": "surface"},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr: consolidated metadata is not in the v3 spec
        ds.to_zarr(str(path), zarr_format=3, consolidated=True)
    return path


@pytest.fixture(scope="module")
def tiny_chips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return training_chips.synthetic_chip_store(tmp_path_factory.mktemp("baseline") / "chips.zarr")


@pytest.fixture(scope="module")
def synthetic_chips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_chips(tmp_path_factory.mktemp("synthetic") / "chips.zarr")


def _direct_stats(values: np.ndarray, mask: np.ndarray) -> list[float]:
    """The statistics of one band, the plain way: boolean index, drop NaN, numpy."""
    region = mask.astype(bool) if mask.any() else np.ones(mask.shape, bool)
    pixels = values[region]
    pixels = pixels[np.isfinite(pixels)].astype(np.float64)
    return [pixels.min(), pixels.max(), pixels.mean(), pixels.std(), np.median(pixels)]


# --- region statistics ----------------------------------------------------------------------


def test_region_stats_skip_nan_and_fall_back_to_the_whole_chip():
    values = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    values[1, 1, 1] = np.nan
    mask = np.zeros((4, 4), np.uint8)
    mask[1:3, 1:3] = 1
    stats = region_stats(values, mask)
    assert stats.shape == (2, len(STATS))
    np.testing.assert_allclose(stats[0], [5, 10, 7.5, np.std([5, 6, 9, 10]), 7.5])
    np.testing.assert_allclose(stats[1], [22, 26, np.mean([22, 25, 26]), np.std([22, 25, 26]), 25])
    whole = region_stats(values, np.zeros((4, 4)))
    np.testing.assert_allclose(whole[0], [0, 15, 7.5, np.std(np.arange(16)), 7.5])
    all_nan = region_stats(np.full((1, 4, 4), np.nan), mask)
    assert np.isnan(all_nan).all()


def test_ndvi_is_nan_where_the_sum_is_not_positive():
    red, nir = np.array([0.1, 0.0, -0.1]), np.array([0.3, 0.0, 0.05])
    np.testing.assert_allclose(ndvi(red, nir), [0.5, np.nan, np.nan])


def test_store_features_equal_a_direct_computation(synthetic_chips):
    chips = open_chips(synthetic_chips)
    image, masks = chips["image"].values[:, 0], chips["loss_mask"].values
    sample = np.array([0, 1, 7, 42, 98])  # 0: empty mask; 1: NaN inside the region
    X, names = event_features(chips, sample, "visible+aux", batch_size=2)
    assert len(names) == X.shape[1] == 7 * len(STATS) + 2
    assert names[:2] == ("red_min", "red_max") and names[-1] == "aux_noise_b"
    for row, event in zip(X, sample, strict=True):
        red, nir = image[event, 0], image[event, 3]
        bands = [*image[event], ndvi(red, nir)]
        expected = [s for b in bands for s in _direct_stats(b, masks[event])]
        np.testing.assert_allclose(row[:-2], expected, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(row[-2:], chips["aux_scalar"].values[event], rtol=1e-6)
    assert np.isfinite(X).all()  # NaN pixels were skipped, not propagated


def test_features_of_the_real_store_layout(tiny_chips):
    chips = open_chips(tiny_chips)
    table = split_features(chips, "train", "visible")
    assert table.names == feature_names(FEATURE_SETS["visible"])
    assert table.X.shape == (4, 3 * len(STATS))
    assert table.y.tolist() == [0, 1, 2, 3]
    assert table.event_ids == tuple(f"2015_ev{i}" for i in range(4))
    inputs, _, _ = training_chips.synthetic_chips(training_chips.synthetic_events())
    for row, event in zip(table.X, split_indices(chips, "train"), strict=True):
        composite, mask = inputs[event].image[0], inputs[event].loss_mask
        expected = [s for b in range(3) for s in _direct_stats(composite[b], mask)]
        np.testing.assert_allclose(row, expected, atol=1e-4)  # int16 storage, step 1e-4
    full = split_features(chips, "val", "visible+aux")
    assert full.X.shape == (2, 7 * len(STATS) + len(AUX_SCALARS))


def test_unknown_feature_set_lists_the_valid_ones(tiny_chips):
    with pytest.raises(ValueError, match="visible, visible\\+aux"):
        event_features(open_chips(tiny_chips), np.array([0]), "rgb")


# --- the forest -----------------------------------------------------------------------------


def test_imputation_uses_train_medians_only():
    train = np.array([[1.0, np.nan, np.nan], [3.0, 5.0, np.nan], [np.nan, 7.0, np.nan]])
    medians = train_medians(train)
    np.testing.assert_allclose(medians, [2.0, 6.0, 0.0])
    other = np.array([[np.nan, np.inf, 1.0]])
    np.testing.assert_allclose(impute(other, medians), [[2.0, 6.0, 1.0]])


def test_forest_on_the_tiny_store_reports_valid_numbers(tiny_chips):
    result = fit_random_forest(tiny_chips, "visible+aux", seed=0, grid=SMALL_GRID)
    assert result.feature_set == "visible+aux" and result.n_train == 4
    for report in (result.val, result.test):
        assert report["n"] == 2
        assert 0.0 <= report["accuracy"] <= 1.0 and 0.0 <= report["macro_f1"] <= 1.0
        assert np.asarray(report["confusion_matrix"]).sum() == 2
        assert sum(report["support_per_class"]) == 2
    assert result.params == {"n_estimators": 50, "max_depth": None, "max_features": "sqrt"}
    again = fit_random_forest(tiny_chips, "visible+aux", seed=0, grid=SMALL_GRID)
    assert again == result  # deterministic for a seed


def test_forest_separates_classes_that_differ_inside_the_region(synthetic_chips):
    grid = {"n_estimators": (20, 60), "max_depth": (None,), "max_features": ("sqrt",)}
    result = fit_random_forest(synthetic_chips, "visible", seed=1, grid=grid)
    assert result.n_train == 60
    assert result.val["n"] == 20 and result.test["n"] == 19  # the failed chip is left out
    assert result.test["accuracy"] >= 0.85 and result.test["macro_f1"] >= 0.8  # chance: 0.25
    assert result.val["macro_f1"] == max(s["val_macro_f1"] for s in result.grid_scores)
    assert [s["params"]["n_estimators"] for s in result.grid_scores] == [20, 60]
    assert result.top_features[0][0].split("_")[0] in ("red", "green", "blue")


def test_grid_search_picks_the_best_validation_point():
    # A single stump can tell at most 2 of the 4 classes apart; a full tree all of them.
    rng = np.random.default_rng(0)

    def table(n: int) -> FeatureTable:
        y = np.arange(n) % 4
        X = np.c_[y + rng.normal(0, 0.1, n), rng.normal(0, 1, (n, 3))]
        return FeatureTable(X, y, tuple(f"f{i}" for i in range(4)), tuple(map(str, range(n))))

    tables = {"train": table(80), "val": table(40), "test": table(40)}
    grid = {"n_estimators": (1,), "max_depth": (1, None), "max_features": (None,)}
    result = select_forest(tables, "toy", seed=0, grid=grid)
    scores = {s["params"]["max_depth"]: s["val_macro_f1"] for s in result.grid_scores}
    assert scores[1] < 0.7 < scores[None]
    assert result.params["max_depth"] is None
    assert result.val["macro_f1"] == scores[None]
    assert result.test["accuracy"] > 0.9
    assert result.top_features[0][0] == "f0"
    with pytest.raises(ValueError, match="val split has no labelled events"):
        select_forest({**tables, "val": table(0)}, "toy", grid=grid)
