"""Land-cover pre-training: the sample world's land-cover map, its chip-aligned aux band,
and an encoder pre-trained on it that loads into the driver model."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from safetensors.torch import load_file

from forestnet_model.model import build_model
from forestnet_model.pretrain import pretrain_encoder
from forestnet_model.specs import ModelSpec, TrainSpec
from pipeline.imagery.views import ChipSpec
from pipeline.sample_world.landcover import LANDCOVER_CLASSES
from pipeline.training_set.chip_store import open_chips
from tests.world_chips import world_chip_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EVENT_CLASS = {"Plantation": "plantation", "Smallholder agriculture": "smallholder agriculture",
               "Grassland shrubland": "grassland shrubland", "Other": "other cleared land"}


@pytest.fixture(scope="module")
def chips_path(tiny_world: Path, tiny_scene_store: Path, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("landcover-chips")
    return world_chip_store(tiny_world.parent, folder, aux_bands=("elevation", "landcover"),
                            spec=ChipSpec(max_single_views=1), scene_store=tiny_scene_store)


def test_world_writes_a_categorical_landcover_map(tiny_world: Path):
    world = tiny_world.parent
    manifest = json.loads(tiny_world.read_text())
    assert manifest["paths"]["landcover"] == "aux/landcover.tif"
    with rasterio.open(world / "aux" / "landcover.tif") as src:
        codes = src.read(1)
        assert src.dtypes[0] == "uint8" and src.nodata == 0 and src.res == (15.0, 15.0)
        regions = gpd.read_file(world / "events" / "loss_regions.gpkg").to_crs(src.crs)
        transform = src.transform
    assert set(np.unique(codes)) <= set(range(1, len(LANDCOVER_CLASSES)))
    assert (codes == LANDCOVER_CLASSES.index("forest")).mean() > 0.3
    table = json.loads((world / "aux" / "landcover_classes.json").read_text())
    assert table["0"] == "no data" and list(table.values()) == list(LANDCOVER_CLASSES)
    # Every event's polygon carries its driver's land-cover class.
    for row in regions.itertuples():
        c = row.geometry.representative_point()
        r, col = rasterio.transform.rowcol(transform, c.x, c.y)
        assert LANDCOVER_CLASSES[codes[r, col]] == EVENT_CLASS[row.merged_label]


def test_landcover_band_is_chip_aligned_class_codes(chips_path: Path):
    chips = open_chips(chips_path)
    assert list(chips["aux_band"].values) == ["elevation", "landcover"]
    for e in range(chips.sizes["event"]):
        codes = chips["aux"].isel(event=e).sel(aux_band="landcover").values
        finite = codes[np.isfinite(codes)]
        assert np.array_equal(finite, np.round(finite))  # nearest: never blended
        inside = codes[chips["loss_mask"].values[e].astype(bool)]
        expected = LANDCOVER_CLASSES.index(EVENT_CLASS[str(chips["merged_label"].values[e])])
        assert (inside == expected).mean() > 0.9  # the loss region is the event's class


def test_pretraining_lowers_the_loss_and_the_encoder_loads_into_the_driver_model(
    chips_path: Path, tmp_path: Path
):
    spec = ModelSpec(encoder="efficientnet-b0", aux_bands=("elevation",))
    train = TrainSpec(epochs=4, samples_per_epoch=24, batch_size=4, crop=64, lr=1e-3,
                      num_threads=1, device="cpu", seed=3)
    out = pretrain_encoder(chips_path, tmp_path / "encoder.safetensors", spec, train)
    summary = json.loads(out.with_suffix(".json").read_text())
    losses = summary["step_losses"]
    assert len(losses) == 24 and summary["classes"] == len(LANDCOVER_CLASSES)
    assert np.mean(losses[-6:]) < 0.8 * np.mean(losses[:6]), losses

    saved = load_file(str(out))
    assert all(not k.startswith(("decoder", "segmentation_head")) for k in saved)
    driver = build_model(spec.model_copy(update={"encoder_weights": out}))
    own = driver.encoder.state_dict()
    assert own.keys() == saved.keys()
    for name, value in saved.items():
        assert torch.equal(own[name], value), name
    fused = build_model(spec.model_copy(update={"encoder_weights": out, "fusion": True}))
    assert torch.equal(fused.encoder.state_dict()["_conv_stem.weight"],
                       saved["_conv_stem.weight"])


def test_pretraining_needs_a_landcover_band(chips_path: Path, tmp_path: Path):
    chips = open_chips(chips_path)
    assert "landcover" in chips["aux_band"].values
    with pytest.raises(ValueError, match="no 'cover' aux band"):
        pretrain_encoder(chips_path, tmp_path / "x.safetensors", ModelSpec(encoder="resnet18"),
                         TrainSpec(epochs=1, crop=64), band="cover")


def test_cli_pretrain_writes_the_encoder(chips_path: Path, tmp_path: Path):
    import yaml
    from typer.testing import CliRunner

    from flows.cli.app import app

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "workdir": str(chips_path.parent),
        "model": {"encoder": "resnet18", "aux_bands": ["elevation"]},
        "train": {"epochs": 1, "samples_per_epoch": 4, "batch_size": 2, "crop": 64,
                  "num_threads": 1, "device": "cpu"},
    }))
    out = tmp_path / "enc.safetensors"
    result = CliRunner().invoke(app, ["pretrain", "--config", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"encoder weights: {out}" in result.output
    assert "conv1.weight" in load_file(str(out))
