"""The model half of mapping: tile inputs -> region-mean logits per piece -> one part per tile.

An untrained (seeded) bundle is enough: the expected logits come from running the same
bundle directly, so the test is about pooling, bookkeeping and the part's contents.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import torch
from shapely.geometry import box

from forestnet_model.bundle import load_bundle
from forestnet_model.model_inputs import normalise
from pipeline.mapping.fusion_inputs import region_means
from pipeline.mapping.inference import infer_tiles
from pipeline.mapping.parts import PART_COLUMNS, read_pieces
from pipeline.mapping.piece_merge import LOGIT_COLUMNS
from pipeline.mapping.tile_inputs import TileInput, TileSample
from tests.map_job import untrained_bundle

SIZE = 64


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return untrained_bundle(tmp_path_factory.mktemp("bundle") / "bundle")


def pieces(tile_id: str, n: int) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({
        "piece_id": [f"{tile_id}_{k:04d}" for k in range(1, n + 1)], "tile_id": tile_id,
        "loss_year": 2015, "province": "Kalimantan Tengah", "n_pixels": 10,
        "touches_edge": False}, geometry=[box(114 + k, -3, 114.001 + k, -2.999) for k in range(n)],
        crs="EPSG:4326")


def sample(rows: list[int], seed: int) -> TileSample:
    rng = np.random.default_rng(seed)
    image = rng.normal(0.1, 0.05, (6, SIZE, SIZE)).astype(np.float32)
    labels = np.zeros((SIZE, SIZE), np.int32)
    labels[5:20, 5:30] = 1
    if len(rows) > 1:
        labels[40:60, 30:34] = 2
    return TileSample(image=image, labels=labels, pieces=rows, scene_ids=["LC08_B", "LC08_A"],
                      scene_dates=["2016-05-01", "2015-03-02"])


def direct_region_means(bundle: Path, sample: TileSample) -> np.ndarray:
    model, meta = load_bundle(bundle)
    with torch.inference_mode():
        x = torch.from_numpy(normalise(sample.image, meta.normalisation))[None]
        logits = model.eval()(x)[0].numpy()
    return np.stack([logits[:, sample.labels == k].mean(axis=1)
                     for k in range(1, len(sample.pieces) + 1)])


def test_each_piece_gets_its_region_mean_logits_and_a_part_per_tile(tmp_path, bundle) -> None:
    # Tile a: two pieces in one sample; piece 3 has no imagery (no sample covers it).
    # Tile b: one piece. Tile c: failed while its inputs were prepared.
    a = TileInput("a", pieces("a", 3), samples=[sample([0, 1], seed=1)],
                  notes=["loss years [2013]: no scene within the window"])
    b = TileInput("b", pieces("b", 1), samples=[sample([0], seed=2)],
                  composites={"built": 4, "reused": 5})
    c = TileInput("c", gpd.GeoDataFrame(), error="OSError: damaged scene")
    paths = {t: str(tmp_path / f"{t}.parquet") for t in "abc"}
    results = infer_tiles([a, b, c], bundle, paths, batch_size=1)
    assert results == [
        {"tile_id": "a", "status": "done", "pieces": 3, "notes": a.notes, "composites": {}},
        {"tile_id": "b", "status": "done", "pieces": 1, "notes": [],
         "composites": {"built": 4, "reused": 5}},
        {"tile_id": "c", "status": "failed", "error": "OSError: damaged scene"},
    ]
    assert not Path(paths["c"]).exists()  # a failed tile writes nothing: a rerun retries it
    part = read_pieces([Path(paths["a"])])
    assert list(part.columns) == PART_COLUMNS
    expected = direct_region_means(bundle, a.samples[0])
    np.testing.assert_allclose(part[LOGIT_COLUMNS].to_numpy()[:2], expected, rtol=1e-4, atol=1e-5)
    assert part["logit_weight"].tolist() == [15 * 25, 20 * 4, 0]
    assert part[LOGIT_COLUMNS].iloc[2].isna().all()  # no imagery: NaN, never a guess
    assert part["scene_ids"].tolist()[:2] == ["LC08_B,LC08_A"] * 2
    assert part["scene_dates"].tolist() == ["2015-03-02,2016-05-01"] * 2 + [""]
    assert set(part["model_id"]) == {load_bundle(bundle)[1].model_id}
    np.testing.assert_allclose(read_pieces([Path(paths["b"])])[LOGIT_COLUMNS].to_numpy(),
                               direct_region_means(bundle, b.samples[0]), rtol=1e-4, atol=1e-5)


def test_batching_does_not_change_the_logits(tmp_path, bundle) -> None:
    tiles = [TileInput(t, pieces(t, 2), samples=[sample([0, 1], seed=k)])
             for k, t in enumerate("xyz")]
    one = {t: str(tmp_path / f"one-{t}.parquet") for t in "xyz"}
    four = {t: str(tmp_path / f"four-{t}.parquet") for t in "xyz"}
    infer_tiles(tiles, bundle, one, batch_size=1)
    infer_tiles(tiles, bundle, four, batch_size=4)
    for t in "xyz":
        np.testing.assert_allclose(read_pieces([Path(one[t])])[LOGIT_COLUMNS].to_numpy(),
                                   read_pieces([Path(four[t])])[LOGIT_COLUMNS].to_numpy(),
                                   rtol=1e-4, atol=1e-5)


def test_inputs_with_the_wrong_channels_are_refused_naming_the_bundle(tmp_path, bundle) -> None:
    bad = sample([0], seed=3)
    bad.image = bad.image[:3]
    with pytest.raises(ValueError, match=f"{bundle}: model expects 6 input channels"):
        infer_tiles([TileInput("a", pieces("a", 1), samples=[bad])], bundle,
                    {"a": str(tmp_path / "a.parquet")})


def test_region_means_average_each_label_and_count_its_pixels() -> None:
    logits = np.arange(2 * 2 * 3, dtype=np.float64).reshape(2, 2, 3)  # (classes, y, x)
    labels = np.array([[1, 1, 0], [2, 0, 0]])
    means, counts = region_means(logits, labels, 3)
    np.testing.assert_allclose(means[:2], [[0.5, 6.5], [3.0, 9.0]])
    assert np.isnan(means[2]).all() and counts.tolist() == [2, 1, 0]
