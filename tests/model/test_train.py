"""Tests for the chip Dataset (SDA, crops, padding, normalisation) and the training loop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from forestnet_model.bundle import load_bundle
from forestnet_model.data import ChipDataset, normalisation_stats, split_indices
from forestnet_model.model import ModelSpec
from forestnet_model.model_inputs import normalise
from forestnet_model.train import TrainSpec, train_model
from pipeline.core.radiometry import DISPLAY_MAX
from pipeline.training_set.chip_store import open_chips
from tests.model.synthetic_chips import (
    BANDS,
    CLASSES,
    MODEL,
    synthetic_chip_store,
    synthetic_chips,
    synthetic_events,
)


@pytest.fixture(scope="module")
def chips_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_chip_store(tmp_path_factory.mktemp("train") / "chips.zarr")


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
    events = synthetic_events()
    inputs, aux, _ = synthetic_chips(events)
    composites = np.stack([inputs[i].image[0] for i in train])  # (event, band, y, x)
    elevation = np.stack([aux[i][0] for i in train])
    assert np.isnan(composites).any() and np.isnan(elevation).any()
    expected_mean = [np.nanmean(composites[:, b]) for b in range(6)] + [np.nanmean(elevation)]
    expected_std = [np.nanstd(composites[:, b]) for b in range(6)] + [np.nanstd(elevation)]
    assert len(stats["mean"]) == len(stats["std"]) == 7
    np.testing.assert_allclose(stats["mean"], expected_mean, atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(stats["std"], expected_std, atol=1e-4, rtol=1e-4)


def test_bands_are_clipped_to_the_release_display_range_before_standardising(chips_path):
    """The release holds no visible reflectance above 0.4 nor any below 0: a model sees
    chips the pipeline built as it would see them through the release."""
    chips = open_chips(chips_path).load()
    train = split_indices(chips, "train")
    chips["image"] = chips["image"] * 4  # hazy: visible partly above 0.4
    composites = chips["image"].isel(event=train, view=0).values
    stats = normalisation_stats(chips, train, BANDS, ("elevation",))
    assert stats["display_max"] == [0.4, 0.4, 0.4, 1.0, 1.0, 1.0]
    shown = [np.clip(composites[:, b], 0, DISPLAY_MAX[band]) for b, band in enumerate(BANDS)]
    assert np.nanmax(composites[:, 0]) > 0.4 > np.nanmin(composites[:, 0])
    np.testing.assert_allclose(stats["mean"][:6], [np.nanmean(c) for c in shown], rtol=1e-5)
    np.testing.assert_allclose(stats["std"][:6], [np.nanstd(c) for c in shown], rtol=1e-4)
    mean, std = np.array(stats["mean"]), np.array(stats["std"])
    x = np.full((7, 2, 2), 0.9, np.float32)
    x[:, 0, 0], x[6], x[0, 1, 1] = -0.05, 900.0, np.nan
    seen = normalise(x, stats) * std[:, None, None] + mean[:, None, None]
    np.testing.assert_allclose(seen[0, 0, 1], 0.4, rtol=1e-5)  # a cloud in red
    np.testing.assert_allclose(seen[3, 0, 1], 0.9, rtol=1e-5)  # bright nir is in range
    np.testing.assert_allclose(seen[:6, 0, 0], 0.0, atol=1e-6)  # dark water's negative SR
    np.testing.assert_allclose(seen[6], 900.0, rtol=1e-5)  # aux bands are not clipped
    assert normalise(x, stats)[0, 1, 1] == 0.0  # no data is still the channel mean
    before = {k: stats[k] for k in ("mean", "std")}  # a bundle from before the clip
    np.testing.assert_allclose((normalise(x, before) * std[:, None, None])[0, 0, 1] + mean[0],
                               0.9, rtol=1e-5)


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
    assert meta.metrics["test_accuracy"] == meta.metrics["test"]["accuracy"]
    assert meta.metrics["test_macro_f1"] == meta.metrics["test"]["macro_f1"]
    assert meta.radiometry == "surface"  # the synthetic store's, recorded
    assert meta.metrics["train_events"] == len(split_indices(chips, "train"))
    assert meta.data_hash == chips.attrs["events_fingerprint"]
    # The kept model: the best val macro F1, a tie going to the lower val NLL; its weights
    # are the ones the bundle holds (val's NLL before calibration is that epoch's).
    best = max(records, key=lambda r: (r["val_macro_f1"], -r["val_nll"]))
    assert meta.metrics["best_epoch"] == best["epoch"]
    assert meta.calibration["val_nll_before"] == pytest.approx(best["val_nll"], abs=1e-4)
    # One temperature fitted on val, recorded with what it did to val's NLL and ECE.
    calibration = meta.calibration
    assert calibration["method"] == "temperature" and calibration["n_val"] == 2
    assert calibration["temperature"] > 0
    assert {"val_ece_before", "val_ece_after", "test_ece_before", "test_ece_after"} \
        <= set(calibration)
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


# --- sampling, seeding, workers ---------------------------------------------------------------


def test_epoch_sampler_depends_only_on_seed_and_epoch():
    from forestnet_model.data import EpochSampler

    a, b = EpochSampler(5, 12, seed=3), EpochSampler(5, 12, seed=3)
    a.set_epoch(2)
    list(b)  # drawing epoch 0 first changes nothing for epoch 2
    b.set_epoch(2)
    assert list(a) == list(b) and len(list(a)) == 12
    a.set_epoch(3)
    assert list(a) != list(b)
    whole = EpochSampler(5, None, seed=3)
    assert sorted(i for i, _ in whole) == [0, 1, 2, 3, 4]


def test_batches_do_not_depend_on_the_number_of_workers(chips_path):
    from torch.utils.data import DataLoader

    from forestnet_model.data import EpochSampler, seed_worker

    ds = ChipDataset(str(chips_path), "train", BANDS, ("slope",), {"mean": [0.0] * 7,
                     "std": [1.0] * 7}, train=True, crop=32)
    batches = {}
    for workers in (0, 2):
        sampler = EpochSampler(len(ds), 8, seed=1)
        loader = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=workers,
                            worker_init_fn=seed_worker)
        batches[workers] = [b["image"] for b in loader]
    for x, y in zip(batches[0], batches[2], strict=True):
        assert torch.equal(x, y)


def test_progress_bar_only_on_a_terminal_and_never_in_a_dask_worker(monkeypatch):
    import forestnet_model.progress as progress

    assert progress.progress_enabled("on") and not progress.progress_enabled("off")
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(progress, "in_dask_worker", lambda: False)
    assert progress.progress_enabled("auto")
    monkeypatch.setattr(progress, "in_dask_worker", lambda: True)
    assert not progress.progress_enabled("auto")
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False, raising=False)
    monkeypatch.setattr(progress, "in_dask_worker", lambda: False)
    assert not progress.progress_enabled("auto")


def test_item_scalars_are_normalised_fusion_features(chips_path):
    stats = {**IDENTITY, "scalar_mean": [1.0], "scalar_std": [2.0]}
    ds = ChipDataset(str(chips_path), "val", BANDS, (), stats, train=False,
                     scalar_features=("peat_fraction",))
    assert ds[0]["scalars"].tolist() == [-0.5]  # the store holds 0.0
    with pytest.raises(ValueError, match="available"):
        ChipDataset(str(chips_path), "val", BANDS, (), stats, train=False,
                    scalar_features=("no_such_feature",))


# --- fusion, losses, metrics files ----------------------------------------------------------------

FUSION_MODEL = ModelSpec(encoder="efficientnet-b0", fusion=True,
                         fusion_features=("elevation_mean", "peat_fraction"))


def test_fusion_training_with_focal_dice_writes_scalar_stats_and_csv(chips_path, tmp_path):
    spec = _spec(epochs=1).model_copy(update={"loss": "focal_dice", "metrics_csv": True,
                                              "class_weights": (1.0, 1.0, 2.0, 1.0)})
    bundle = train_model(chips_path, tmp_path, FUSION_MODEL, spec)
    model, meta = load_bundle(bundle)
    # The store's scalars are all 0: constant, so both are dropped and the bundle says so.
    assert meta.model == FUSION_MODEL.model_copy(update={"fusion_features": ()})
    assert sorted(meta.fusion_inputs["dropped"]) == sorted(FUSION_MODEL.fusion_features)
    assert "scalar_mean" not in meta.normalisation
    assert meta.training["loss"] == "focal_dice"
    assert meta.provenance["chips"] == str(chips_path.resolve())
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",") == list(_metrics(tmp_path)[0])
    assert len(rows) == 2
    from forestnet_model.data import event_scalars
    from forestnet_model.predict import predict_events

    chips = open_chips(chips_path)
    idx = split_indices(chips, "test")
    images = chips["image"].isel(event=idx, view=0).values
    probs, _ = predict_events(bundle, images, chips["loss_mask"].values[idx], device="cpu",
                              scalars=event_scalars(chips, idx, meta.model.fusion_features))
    assert probs.shape == (2, 4)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_checkpoint_for_another_model_is_refused(trained, chips_path):
    with pytest.raises(ValueError, match="another model spec"):
        train_model(chips_path, trained, FUSION_MODEL, _spec(epochs=5))


# --- resume after a kill ------------------------------------------------------------------------

_RUN = """
import sys, torch
from pathlib import Path
from forestnet_model.specs import ModelSpec, TrainSpec
from forestnet_model.train import train_model
torch.set_num_threads(1)
spec = TrainSpec.model_validate_json(sys.argv[3])
train_model(Path(sys.argv[1]), Path(sys.argv[2]), ModelSpec(encoder="efficientnet-b0"), spec)
"""


def _killed_after_first_epoch(chips_path: Path, out: Path, spec: TrainSpec) -> None:
    """Run training in a subprocess and SIGKILL it once epoch 0's checkpoint is on disk."""
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", _RUN, str(chips_path), str(out),
                             spec.model_dump_json()], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 400
    try:
        while not (out / "checkpoint.pt").exists():
            if proc.poll() is not None:
                raise AssertionError(f"training exited early: {proc.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("no checkpoint within the time limit")
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def test_resume_after_kill_finishes_with_the_same_metrics_as_an_uninterrupted_run(
    chips_path, tmp_path
):
    # The demo's recipe: the weights' moving average is what val judges, so a resume that
    # lost the average would show in the resumed epoch's val metrics.
    spec = _spec(epochs=2).model_copy(update={"samples_per_epoch": 48, "ema_decay": 0.9,
                                              "lr_schedule": "cosine"})
    killed = tmp_path / "killed"
    _killed_after_first_epoch(chips_path, killed, spec)
    assert torch.load(killed / "checkpoint.pt", weights_only=True)["epoch"] == 0
    assert [r["epoch"] for r in _metrics(killed)] == [0]  # killed during epoch 1
    assert not (killed / "bundle").exists()

    bundle = train_model(chips_path, killed, MODEL, spec)
    resumed = _metrics(killed)
    assert [r["epoch"] for r in resumed] == [0, 1]
    assert all(list(r) == list(resumed[0]) for r in resumed)  # one schema throughout
    assert load_bundle(bundle)[1].metrics["epochs_run"] == 2

    straight = tmp_path / "straight"
    train_model(chips_path, straight, MODEL, spec)
    expected = _metrics(straight)
    assert list(expected[0]) == list(resumed[0])
    for got, want in zip(resumed, expected, strict=True):
        for key in ("train_loss", "val_accuracy", "val_macro_f1", "best_val_macro_f1"):
            assert got[key] == pytest.approx(want[key], rel=1e-5), key
    averages = [torch.load(run / "checkpoint.pt", weights_only=True)["average"]
                for run in (killed, straight)]
    assert averages[0]["updates"] == averages[1]["updates"]
    for name, tensor in averages[1]["module"].items():
        assert torch.allclose(averages[0]["module"][name].float(), tensor.float(),
                              atol=1e-5), name
