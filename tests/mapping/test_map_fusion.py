"""Mapping with a fusion bundle gives the drivers evaluation gives, even across tile seams.

The map path (``infer_tiles`` -> part -> seam merge -> ``event_driver_probabilities``) and
evaluation's ``predict_events`` are fed the same chip; an event split into two pieces must
merge back into the probabilities of the whole.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box

from forestnet_model.bundle import BundleError
from forestnet_model.predict import predict_events
from pipeline.mapping.event_drivers import event_driver_probabilities
from pipeline.mapping.fusion_inputs import merge_fusion_inputs, piece_band_moments, scalar_names
from pipeline.mapping.inference import infer_tiles
from pipeline.mapping.parts import read_pieces
from pipeline.mapping.piece_merge import merge_pieces
from pipeline.mapping.tile_inputs import TileInput, TileSample
from pipeline.training_set.auxiliary import region_stats
from tests.map_job import untrained_bundle

FEATURES = ("elevation_mean", "elevation_std", "street_dist_km")
SIZE = 64


@pytest.fixture(scope="module")
def fusion_bundle(tmp_path_factory) -> Path:
    return untrained_bundle(tmp_path_factory.mktemp("fusion") / "bundle", FEATURES)


@pytest.fixture(scope="module")
def chip() -> dict:
    """One event chip: image, loss mask, elevation, and the mask's left/right halves."""
    rng = np.random.default_rng(7)
    image = rng.normal(0.12, 0.06, (6, SIZE, SIZE)).astype(np.float32)
    elevation = rng.normal(40.0, 15.0, (SIZE, SIZE))
    mask = np.zeros((SIZE, SIZE), bool)
    mask[10:40, 12:50] = True
    left, right = mask.copy(), mask.copy()
    left[:, 30:], right[:, :30] = False, False
    return {"image": image, "mask": mask, "elevation": elevation, "halves": (left, right)}


def scalars_of(chip: dict, region: np.ndarray, street_km: float) -> list[float]:
    mean, std, _, _ = region_stats(chip["elevation"], region)
    return [mean, std, street_km]


def mapped(tmp_path: Path, bundle: Path, chip: dict, regions: list[np.ndarray],
           scalars: list[list[float]], cpu_runtime: str = "auto") -> np.ndarray:
    """Probabilities of the map path for one event made of ``regions`` (touching pieces)."""
    n = len(regions)
    pieces = gpd.GeoDataFrame({
        "piece_id": [f"t_{k:04d}" for k in range(1, n + 1)], "tile_id": "t", "loss_year": 2015,
        "province": "Riau", "n_pixels": [int(r.sum()) for r in regions], "touches_edge": n > 1},
        geometry=[box(101 + 0.01 * k, 0.5, 101.01 + 0.01 * k, 0.51) for k in range(n)],
        crs="EPSG:4326")
    labels = np.zeros(chip["mask"].shape, np.int32)
    for k, region in enumerate(regions):
        labels[region] = k + 1
    sample = TileSample(image=chip["image"], labels=labels, pieces=list(range(n)),
                        scene_ids=["s"], scene_dates=["2016-01-01"],
                        scalars=np.asarray(scalars, np.float64))
    part = tmp_path / "t.parquet"
    infer_tiles([TileInput("t", pieces, samples=[sample])], bundle, {"t": str(part)},
                cpu_runtime=cpu_runtime)
    events = merge_pieces(read_pieces([part]), scalar_names(FEATURES))
    assert len(events) == 1
    return event_driver_probabilities(events, bundle)


def test_the_map_and_evaluation_give_the_same_fused_probabilities(tmp_path, fusion_bundle,
                                                                  chip) -> None:
    scalars = scalars_of(chip, chip["mask"], 2.5)
    expected, _ = predict_events(fusion_bundle, chip["image"][None], chip["mask"][None],
                                 device="cpu", scalars=np.asarray([scalars]))
    got = mapped(tmp_path, fusion_bundle, chip, [chip["mask"]], [scalars])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # The head matters: other scalars give other probabilities.
    other, _ = predict_events(fusion_bundle, chip["image"][None], chip["mask"][None],
                              device="cpu", scalars=np.asarray([[90.0, 1.0, 30.0]]))
    assert np.abs(other - expected).max() > 1e-3


def test_the_map_and_evaluation_agree_whichever_cpu_runtime_runs_the_network(
        tmp_path, fusion_bundle, chip) -> None:
    # The map on ONNX Runtime against evaluation on eager PyTorch, and the other way round.
    scalars = scalars_of(chip, chip["mask"], 2.5)
    for map_runtime, evaluation_runtime in [("onnxruntime", "eager"), ("eager", "onnxruntime")]:
        expected, _ = predict_events(fusion_bundle, chip["image"][None], chip["mask"][None],
                                     device="cpu", scalars=np.asarray([scalars]),
                                     cpu_runtime=evaluation_runtime)
        got = mapped(tmp_path, fusion_bundle, chip, [chip["mask"]], [scalars], map_runtime)
        np.testing.assert_allclose(got, expected, atol=1e-3)


def test_in_a_full_tile_a_piece_is_seen_in_its_event_window_as_evaluation_sees_it(
        tmp_path, fusion_bundle) -> None:
    rng = np.random.default_rng(3)
    size = 332  # a map tile: the piece's event window (about 160 px) fits inside it
    mask = np.zeros((size, size), bool)
    mask[200:220, 90:130] = True
    tile = {"image": rng.normal(0.12, 0.06, (6, size, size)).astype(np.float32), "mask": mask,
            "elevation": rng.normal(40.0, 15.0, (size, size))}
    scalars = scalars_of(tile, mask, 2.5)
    expected, _ = predict_events(fusion_bundle, tile["image"][None], mask[None], device="cpu",
                                 scalars=np.asarray([scalars]))
    got = mapped(tmp_path, fusion_bundle, tile, [mask], [scalars])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # Imagery outside the window (rows 0-99: the window spans rows 130-290) changes nothing.
    tile["image"][:, :100] = 0.5
    np.testing.assert_allclose(mapped(tmp_path, fusion_bundle, tile, [mask], [scalars]),
                               expected, atol=1e-5)


def test_an_event_split_by_a_tile_seam_merges_into_the_whole_events_probabilities(
        tmp_path, fusion_bundle, chip) -> None:
    left, right = chip["halves"]
    whole, _ = predict_events(fusion_bundle, chip["image"][None], chip["mask"][None],
                              device="cpu", scalars=np.asarray([scalars_of(chip, chip["mask"],
                                                                           2.5)]))
    # The road is 2.5 km from the left half and 4 km from the right: the event's is 2.5.
    got = mapped(tmp_path, fusion_bundle, chip, [left, right],
                 [scalars_of(chip, left, 2.5), scalars_of(chip, right, 4.0)])
    np.testing.assert_allclose(got, whole, atol=1e-5)


def test_merged_statistics_equal_those_of_the_whole_region() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 20, 20))
    labels = rng.integers(1, 4, size=(20, 20))
    mean, var = piece_band_moments(x, labels, 3)
    counts = np.bincount(labels.ravel())[1:]
    elevation = rng.normal(50, 10, size=(20, 20))
    names = scalar_names(("elevation_std", "elevation_max", "city_dist_km"))
    assert names == ("elevation_std", "elevation_max", "city_dist_km", "elevation_mean")
    per_piece = np.array([[*np.array(region_stats(elevation, labels == k))[[1, 3]], 10.0 - k,
                           region_stats(elevation, labels == k)[0]] for k in (1, 2, 3)])
    m, v, aux = merge_fusion_inputs(counts, mean, var, per_piece, names)
    np.testing.assert_allclose(m, x.reshape(3, -1).mean(axis=1))
    np.testing.assert_allclose(v, x.reshape(3, -1).var(axis=1))
    np.testing.assert_allclose(aux, [elevation.std(), elevation.max(), 7.0, elevation.mean()])
    # A piece with no value (NaN) does not vote; an all-NaN scalar stays NaN.
    per_piece[0, 0], per_piece[:, 2] = np.nan, np.nan
    _, _, aux = merge_fusion_inputs(counts, mean, var, per_piece, names)
    rest = labels > 1
    assert aux[0] == pytest.approx(elevation[rest].std()) and np.isnan(aux[2])


def test_a_bundle_asking_for_scalars_the_map_cannot_make_is_refused(tmp_path) -> None:
    import json

    from flows.config.input_checks import check_map_bundle

    bundle = untrained_bundle(tmp_path / "bundle", ("elevation_mean",))
    check_map_bundle(bundle)
    manifest = bundle / "bundle.json"
    meta = json.loads(manifest.read_text())
    meta["model"]["fusion_features"] = ["soil_carbon"]
    manifest.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=r"model.fusion_features \['soil_carbon'\] are not "
                                          "inputs the map can make"):
        check_map_bundle(bundle)
