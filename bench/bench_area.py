"""Area by driver with confidence intervals on the demo world: do the 95% CIs cover the truth?

    uv run python bench/bench_area.py [--seeds 20] [--n 400] [--job DIR]

The demo recipe's map of the demo world (the accuracy job's own arm: the demo world chipped,
trained on, mapped; reused from ``--job DIR`` when it holds one) is the map an analyst
reports on. For each sample seed: ``forestnet sample-design --n 400`` (min50 over the mapped
drivers) -> every point labelled from the world's truth (``truth/loss_driver.tif``) ->
``forestnet area``. Each driver's 95% CI is checked against its true area over the map's
loss pixels.

Prints the coverage over seeds x drivers (target: close to 95%, at least 68 of 80 for 20
seeds), the mean half-width of the CIs, and the map's own (pixel-count) error per driver
beside the estimate's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.accuracy_job import DONE  # noqa: E402
from tests.area_truth import area_run, true_areas  # noqa: E402
from tests.release_chain import own_chips, train_and_map  # noqa: E402


def demo_map(folder: Path) -> tuple[list[Path], Path]:
    """The demo model's maps and its world: from the accuracy job's ``done.json`` in
    ``folder`` if there is one, else trained and mapped here (its own arm)."""
    done = folder / DONE
    if done.exists():
        job = json.loads(done.read_text())
        return [Path(p) for p in job["maps"]], Path(job["world"])
    own = own_chips(folder)
    _, maps = train_and_map(own["config"], own["chips"], folder / "own")
    return maps, own["world"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--job", type=Path, default=None,
                        help="folder of an accuracy job (python -m tests.accuracy_job DIR)")
    args = parser.parse_args()
    folder = args.job or Path(tempfile.mkdtemp(prefix="bench-area-"))
    started = time.perf_counter()
    maps, world = demo_map(folder)
    truth = true_areas(maps, world)
    runs = [area_run(maps, world, truth, folder / "area-bench", seed, args.n)
            for seed in range(args.seeds)]
    covered = sum(int(r["covered"].sum()) for r in runs)
    intervals = sum(len(r) for r in runs)
    first = runs[0]
    per_driver = {
        name: {
            "true_ha": round(float(first.loc[name, "true_area"]), 1),
            "mapped_ha": round(float(first.loc[name, "mapped_area"]), 1),
            "mean_estimate_ha": round(float(np.mean([r.loc[name, "area"] for r in runs])), 1),
            "mean_ci95_half_width_ha": round(float(np.mean(
                [(r.loc[name, "ci95_high"] - r.loc[name, "ci95_low"]) / 2 for r in runs])), 1),
            "covered": f"{sum(bool(r.loc[name, 'covered']) for r in runs)}/{len(runs)}",
        }
        for name in first.index
    }
    print(json.dumps({
        "maps": [str(m) for m in maps], "n": args.n, "seeds": args.seeds,
        "coverage": f"{covered}/{intervals}", "coverage_fraction": round(covered / intervals, 3),
        "target": f">= {int(np.ceil(0.85 * intervals))} of {intervals} (95% nominal)",
        "drivers": per_driver, "wall_s": round(time.perf_counter() - started, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
