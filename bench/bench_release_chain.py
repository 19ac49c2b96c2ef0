"""The release chain on the demo world: is a model trained on the release as good on the map?

    uv run python bench/bench_release_chain.py [--out DIR]

The demo recipe trains on the pipeline's own chips of the demo world (as the accuracy test
does). The same chips are written in the published release's layout and scaling, and the
user's chain runs through the real CLI: ``import-forestnet`` -> ``train`` -> ``map``. Both
bundles also map the demo world, so each gets two scores on the held-out events:
evaluation's (``predict_events`` on the chips) and the map's (the driver of the mapped event
at each event's anchor), and the share of events where the two agree.

Prints one JSON document with the issue's targets beside the figures: chain map accuracy
>= 0.85 and within 0.05 of the own-chips model's; map and evaluation agree on >= 90%.
About 9 minutes on 2 cores (two trainings of the demo recipe).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from forestnet_model.baseline import fit_random_forest  # noqa: E402
from forestnet_model.bundle import load_bundle  # noqa: E402
from pipeline.training_set.chip_store import open_chips  # noqa: E402
from pipeline.training_set.release_writer import write_release  # noqa: E402
from tests.map_job import forestnet, geopackages, read_map  # noqa: E402
from tests.release_chain import (  # noqa: E402
    bundle_predictions,
    held_out,
    mapped_classes,
    own_chips_and_model,
)
from tests.tiny_config import write_demo_config  # noqa: E402


def cli(*args: str) -> tuple[list[Path], float]:
    """One ``forestnet`` run (Prefect's temporary API, as a user's default); its
    GeoPackages and seconds."""
    started = time.perf_counter()
    result = forestnet(*args, timeout=1800)
    if result.returncode:
        raise SystemExit(f"forestnet {args[0]} failed:\n{result.stderr[-3000:]}")
    return geopackages(result), time.perf_counter() - started


def scores(bundle: Path, chips: Path, maps: list[Path]) -> dict:
    """Evaluation's and the map's accuracy on the held-out events, and their agreement."""
    rows, truth = held_out(chips)
    evaluated = bundle_predictions(bundle, chips, rows)
    mapped = mapped_classes([read_map(p) for p in maps], chips, rows)
    return {"test_events": len(rows),
            "evaluate_accuracy": round(float(np.mean(evaluated == truth)), 4),
            "map_accuracy": round(float(np.mean(mapped == truth)), 4),
            "map_agrees_with_evaluate": round(float(np.mean(mapped == evaluated)), 4),
            "events_off_the_map": int((mapped < 0).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="keep outputs here")
    args = parser.parse_args()
    folder = args.out or Path(tempfile.mkdtemp(prefix="bench-chain-"))
    seconds = {}
    started = time.perf_counter()
    own = own_chips_and_model(folder)
    seconds["own_chips_and_training"] = time.perf_counter() - started
    forests = {f"rf_{name}": fit_random_forest(own["chips"], name, seed=0).test["accuracy"]
               for name in ("visible", "visible+aux")}

    started = time.perf_counter()
    release = write_release(open_chips(own["chips"]), folder / "release")
    seconds["write_release"] = time.perf_counter() - started
    config = str(own["config"])
    _, seconds["import"] = cli("import-forestnet", str(release), "--config", config)
    _, seconds["train"] = cli("train", "--config", config)
    chain_maps, seconds["map"] = cli("map", "--config", config)

    # The own-chips bundle maps the same world from a workdir of its own.
    own_work = folder / "own-map"
    own_work.mkdir(exist_ok=True)
    own_config = write_demo_config(own_work, own["world"])
    (own_work / "work" / "model").mkdir(parents=True, exist_ok=True)
    if not (own_work / "work" / "scenes.zarr").exists():
        (own_work / "work" / "scenes.zarr").symlink_to(own["cfg"].scene_store)
        shutil.copytree(own["bundle"], own_work / "work" / "model" / "bundle")
    own_maps, _ = cli("map", "--config", str(own_config))

    cfg = own["cfg"]
    chain = scores(cfg.bundle_path, cfg.chips_path, chain_maps)
    mine = scores(own["bundle"], own["chips"], own_maps)
    _, chain_meta = load_bundle(cfg.bundle_path)
    report = {
        "own_chips": mine, "release_chain": chain, **forests,
        "bundle_test_accuracy": {"own_chips": load_bundle(own["bundle"])[1].metrics["test"]
                                 ["accuracy"], "release_chain": chain_meta.metrics["test"]
                                 ["accuracy"]},
        "targets_met": {
            "chain_map_accuracy_>=_0.85": chain["map_accuracy"] >= 0.85,
            "chain_within_0.05_of_own": abs(chain["map_accuracy"]
                                            - mine["evaluate_accuracy"]) <= 0.05,
            "map_agrees_with_evaluate_>=_0.9": min(chain["map_agrees_with_evaluate"],
                                                  mine["map_agrees_with_evaluate"]) >= 0.9},
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "outputs": str(folder),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
