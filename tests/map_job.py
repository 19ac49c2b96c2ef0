"""A ready-to-map job on a generated world: scenes ingested, an untrained bundle, a config.

Mapping tests need the inputs of `forestnet map`, not a trained model: the bundle's weights
are random (seeded), which keeps these tests about tiling, merging, writing and resuming.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import geopandas as gpd
import yaml

from pipeline.export.geopackage import DRIVER_MAP_LAYER
from tests.tiny_config import write_tiny_config

#: A point on the bundled Kalimantan Tengah / Kalimantan Selatan border.
BORDER = (114.475, -3.14)
BORDER_PROVINCES = ["Kalimantan Tengah", "Kalimantan Selatan"]
#: The map job's bundle has a fusion head over these scalars, so every map test runs the
#: path of ForestNet's best model: per-piece scalars from the aux files, merged per event.
MAP_FUSION_FEATURES = ("elevation_mean", "slope_mean", "street_dist_km", "peat_fraction",
                       "precipitation_mm", "ndvi_std")


def forestnet(*args: str, timeout: int = 420) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli.app", *args], capture_output=True,
                          text=True, timeout=timeout)


def untrained_bundle(out: Path, fusion_features: tuple[str, ...] | None = None,
                     radiometry: str = "surface") -> Path:
    """A seeded, untrained resnet18 bundle for chips of ``radiometry``; with
    ``fusion_features`` (possibly empty) it has a fusion head, its weights nudged so that
    its inputs all move its outputs."""
    import torch

    from forestnet_model.bundle import save_bundle
    from forestnet_model.model import ModelSpec, build_model

    torch.manual_seed(0)
    norm = {"mean": [0.05, 0.06, 0.04, 0.25, 0.15, 0.08], "std": [0.03] * 6}
    if fusion_features is None:
        spec = ModelSpec(encoder="resnet18")
    else:
        spec = ModelSpec(encoder="resnet18", fusion=True, fusion_features=fusion_features)
        norm |= {"scalar_mean": [10.0] * len(fusion_features),
                 "scalar_std": [5.0] * len(fusion_features)}
    model = build_model(spec)
    if fusion_features is not None:
        with torch.no_grad():
            for p in model.head.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return save_bundle(model.eval(), {"model": spec, "normalisation": norm,
                                      "radiometry": radiometry}, out)


def make_map_job(folder: Path, mapping: dict, centre: tuple[float, float] = BORDER) -> dict:
    """Generate a tiny world at ``centre``, ingest it, save a bundle; return paths."""
    from pipeline.sample_world import WorldSpec, generate_world
    from tests.world_chips import ingest_world

    world = folder / "world"
    generate_world(world, replace(WorldSpec.tiny(), center_lon=centre[0], center_lat=centre[1]))
    config = write_tiny_config(folder, world, mapping=mapping)
    work = Path(yaml.safe_load(config.read_text())["workdir"])
    ingest_world(world, work / "scenes.zarr")
    untrained_bundle(work / "model" / "bundle", MAP_FUSION_FEATURES)
    return {"folder": folder, "world": world, "config": config, "work": work}


def clone_map_job(job: dict, folder: Path, mapping: dict, cluster: dict | None = None) -> dict:
    """A job of its own over ``job``'s world: a copy of its scene store and bundle, and a
    config with other mapping (and cluster) settings. Runs in the clone never touch
    ``job``'s outputs."""
    config = write_tiny_config(folder, job["world"], mapping=mapping, **(
        {"cluster": cluster} if cluster else {}))
    work = Path(yaml.safe_load(config.read_text())["workdir"])
    for name in ("scenes.zarr", "model"):
        shutil.copytree(job["work"] / name, work / name)
    return {"folder": folder, "world": job["world"], "config": config, "work": work}


def geopackages(result: subprocess.CompletedProcess) -> list[Path]:
    return [Path(line.split(": ", 1)[1]) for line in result.stdout.splitlines()
            if line.startswith("GeoPackage: ")]


def read_map(path: Path) -> gpd.GeoDataFrame:
    return gpd.read_file(path, layer=DRIVER_MAP_LAYER)
