"""Tests for the chip Dataset (SDA, crops, padding, normalisation) and the training loop."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import torch
from pydantic import ValidationError
from shapely.geometry import box

from forestnet_model.bundle import load_bundle
from forestnet_model.data import ChipDataset, normalisation_stats, split_indices
from forestnet_model.model import ModelSpec
from forestnet_model.train import TrainSpec, train_model
from pipeline.auxiliary import AUX_BANDS, AUX_SCALARS
from pipeline.chip_store import finalize_chip_store, init_chip_store, open_chips, write_chip_batch
from pipeline.chips import CHIP_BANDS, ChipSpec, EventChip, chip_geobox
from pipeline.drivers import DRIVER_CLASSES

#: 48 px chips: not a multiple of 32, so evaluation has to pad them (to 64).
SPEC = ChipSpec(size=48, max_single_views=2)
SPLITS = ["train", "train", "train", "train", "val", "val", "test", "test"]
CLASSES = [0, 1, 2, 3, 0, 1, 2, 3]  # 2 events per class
MODEL = ModelSpec(encoder="efficientnet-b0")
BANDS = tuple(CHIP_BANDS)


def _events() -> gpd.GeoDataFrame:
    lons = 113.50 + 0.01 * np.arange(len(SPLITS))
    return gpd.GeoDataFrame({
        "event_id": [f"2015_ev{i}" for i in range(len(SPLITS))],
        "loss_year": [2015] * len(SPLITS),
        "label": [DRIVER_CLASSES[c] for c in CLASSES],
        "merged_label": [DRIVER_CLASSES[c] for c in CLASSES],
        "split": SPLITS,
        "geometry": [box(x - 0.0005, -1.9504, x + 0.0005, -1.9496) for x in lons],
    }, crs="EPSG:4326")


def _chips(events: gpd.GeoDataFrame):
    """View v holds about v + 0.1 everywhere, so a sample's view can be read off its values."""
    rng = np.random.default_rng(0)
    s, v = SPEC.size, SPEC.n_views
    chips, aux, scalars = [], [], []
    for i, geom in enumerate(events.geometry):
        image = (0.1 + np.arange(v)[:, None, None, None]
                 + 0.02 * rng.standard_normal((v, len(CHIP_BANDS), s, s))).astype(np.float32)
        mask = np.zeros((s, s), np.uint8)
        mask[22:28, 20:30] = 1  # around the centre pixel (24, 24), as real chips are
        mask[10:14, 30:40] = 1
        image[0, :, mask.astype(bool)] += 0.05 * CLASSES[i]  # a class signal in the region
        if SPLITS[i] == "train":
            image[0, 2, :3, :5] = np.nan  # no data in a corner
        a = rng.normal(50.0, 5.0, size=(len(AUX_BANDS), s, s)).astype(np.float32)
        a[0, -4:] = np.nan
        chips.append(EventChip(
            geobox=chip_geobox(geom, SPEC), image=image,
            view_dates=["composite", "2017-06-12", ""], view_cloud=[0.2, 0.1, 1.0],
            scene_ids=["scene"], loss_mask=mask, region=geom,
        ))
        aux.append(a)
        scalars.append(np.zeros(len(AUX_SCALARS), np.float32))
    return chips, aux, scalars


@pytest.fixture(scope="module")
def chips_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    final = tmp_path_factory.mktemp("train") / "chips.zarr"
    events = _events()
    chips, aux, scalars = _chips(events)
    init_chip_store(final, events, SPEC)
    write_chip_batch(final, 0, chips[:4], aux[:4], scalars[:4])
    write_chip_batch(final, 4, chips[4:], aux[4:], scalars[4:])
    return finalize_chip_store(final, [(0, 4), (4, 8)])


IDENTITY = {"mean": [0.0] * 6, "std": [1.0] * 6}


# --- dataset --------------------------------------------------------------------------------


def test_split_indices(chips_path):
    chips = open_chips(chips_path)
    assert split_indices(chips, "train").tolist() == [0, 1, 2, 3]
    assert split_indices(chips, "val").tolist() == [4, 5]
    assert split_indices(chips, "test").tolist() == [6, 7]


def test_train_items_are_crops_that_see_the_loss_region(chips_path):
    ds = ChipDataset(str(chips_path), "train", BANDS, (), IDENTITY, train=True, crop=32, seed=3)
    assert len(ds) == 4
    for _ in range(10):
        for i in range(len(ds)):
            item = ds[i]
            assert item["image"].shape == (6, 32, 32)
            assert item["image"].dtype == torch.float32
            assert item["mask"].shape == (32, 32)
            assert item["mask"].any()
            assert torch.isfinite(item["image"]).all()  # NaN became the channel mean
            assert item["label"].item() == CLASSES[i]


def test_sda_draws_only_views_with_a_date(chips_path):
    ds = ChipDataset(str(chips_path), "train", BANDS, (), IDENTITY, train=True, crop=32, seed=0)
    drawn = set()
    for _ in range(12):
        for i in range(len(ds)):
            drawn.add(round(float(ds[i]["image"].median()) - 0.1))
    assert drawn == {0, 1}  # view 2 has no date: never drawn

    no_sda = ChipDataset(str(chips_path), "train", BANDS, (), IDENTITY, train=True, crop=32,
                         sda=False)
    assert {round(float(no_sda[i]["image"].median()) - 0.1) for i in range(4)} == {0}


def test_eval_items_are_the_composite_padded_to_a_multiple_of_32(chips_path):
    stats = {"mean": [0.1] * 6, "std": [0.5] * 6}
    ds = ChipDataset(str(chips_path), "val", BANDS, (), stats, train=False)
    item = ds[0]
    assert item["image"].shape == (6, 64, 64)
    assert item["mask"].shape == (64, 64)
    chips = open_chips(chips_path)
    composite = chips["image"].isel(event=4, view=0).values
    image = item["image"].numpy()
    np.testing.assert_allclose(image[:, 8:56, 8:56], (composite - 0.1) / 0.5, atol=1e-5)
    assert not image[:, :8].any() and not image[:, 56:].any()
    mask = item["mask"].numpy()
    np.testing.assert_array_equal(mask[8:56, 8:56], chips["loss_mask"].values[4].astype(bool))
    assert mask.sum() == chips["loss_mask"].values[4].sum()
    assert item["label"].item() == CLASSES[4]


def test_aux_bands_are_appended(chips_path):
    stats = {"mean": [0.0] * 7, "std": [1.0] * 6 + [10.0]}
    ds = ChipDataset(str(chips_path), "test", BANDS, ("slope",), stats, train=False)
    image = ds[1]["image"].numpy()
    assert image.shape == (7, 64, 64)
    slope = open_chips(chips_path)["aux"].sel(aux_band="slope").values[7]
    np.testing.assert_allclose(image[6, 8:56, 8:56], slope / 10.0, rtol=1e-6)


def test_normalisation_stats_ignore_nan(chips_path):
    chips = open_chips(chips_path)
    train = split_indices(chips, "train")
    stats = normalisation_stats(chips, train, BANDS, ("elevation",))
    events = _events()
    inputs, aux, _ = _chips(events)
    composites = np.stack([inputs[i].image[0] for i in train])  # (event, band, y, x)
    elevation = np.stack([aux[i][0] for i in train])
    assert np.isnan(composites).any() and np.isnan(elevation).any()
    expected_mean = [np.nanmean(composites[:, b]) for b in range(6)] + [np.nanmean(elevation)]
    expected_std = [np.nanstd(composites[:, b]) for b in range(6)] + [np.nanstd(elevation)]
    assert len(stats["mean"]) == len(stats["std"]) == 7
    np.testing.assert_allclose(stats["mean"], expected_mean, atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(stats["std"], expected_std, atol=1e-4, rtol=1e-4)


# --- training -------------------------------------------------------------------------------


def test_train_spec_validation():
    with pytest.raises(ValidationError, match="multiple of 32"):
        TrainSpec(crop=100)
    with pytest.raises(ValidationError, match="learning_rate"):
        TrainSpec(learning_rate=0.1)
    assert TrainSpec(crop=64).crop == 64


def _spec(epochs: int) -> TrainSpec:
    return TrainSpec(epochs=epochs, crop=32, batch_size=4, seed=7, num_threads=1, device="cpu")


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(chips_path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    bundle = train_model(chips_path, out, MODEL, _spec(epochs=2))
    assert bundle == out / "bundle"
    return out


def test_training_writes_bundle_metrics_and_checkpoint(trained, chips_path):
    assert (trained / "checkpoint.pt").exists()
    records = _metrics(trained)
    assert [r["epoch"] for r in records] == [0, 1]
    assert all(np.isfinite(r["train_loss"]) and r["train_loss"] > 0 for r in records)
    checkpoint = torch.load(trained / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 1

    model, meta = load_bundle(trained / "bundle")
    assert meta.model == MODEL
    assert meta.training["epochs"] == 2 and meta.training["crop"] == 32
    chips = open_chips(chips_path)
    expected = normalisation_stats(chips, split_indices(chips, "train"), BANDS, ())
    assert meta.normalisation == expected
    assert set(meta.metrics) >= {"val", "test"}
    assert meta.metrics["val"]["n"] == 2 and meta.metrics["test"]["n"] == 2
    assert meta.data_hash == chips.attrs["events_fingerprint"]
    with torch.no_grad():
        assert model(torch.zeros(1, 6, 64, 64)).shape == (1, 4, 64, 64)


def test_rerun_with_more_epochs_resumes_from_the_checkpoint(trained, chips_path):
    before = _metrics(trained)
    train_model(chips_path, trained, MODEL, _spec(epochs=3))
    after = _metrics(trained)
    assert len(after) == len(before) + 1
    assert after[:2] == before
    assert after[-1]["epoch"] == 2
    assert torch.load(trained / "checkpoint.pt", weights_only=True)["epoch"] == 2
    _, meta = load_bundle(trained / "bundle")
    assert meta.training["epochs"] == 3


def test_same_seed_gives_identical_losses(trained, chips_path, tmp_path):
    # A fresh run with the same seed repeats the first epoch of the module's run exactly.
    again = tmp_path / "again"
    train_model(chips_path, again, MODEL, _spec(epochs=1))
    first = _metrics(trained)[0]
    assert _metrics(again)[0]["train_loss"] == first["train_loss"]
    assert _metrics(again)[0]["val_macro_f1"] == first["val_macro_f1"]
    other = tmp_path / "other"
    train_model(chips_path, other, MODEL, _spec(epochs=1).model_copy(update={"seed": 8}))
    assert _metrics(other)[0]["train_loss"] != first["train_loss"]
