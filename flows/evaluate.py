"""Evaluate flow: a bundle on a chip-store split, the random-forest baselines, one report.

The model's predictions and the two forests run as three Dask tasks side by side (the
model on a GPU worker when there is one); the report is written by the flow process from
their small results.
"""

from __future__ import annotations

from pathlib import Path

from distributed import Client
from prefect import flow, get_run_logger, task

from flows.config.schema import ConfigError
from flows.runtime.cluster import gpu_resources
from forestnet_model.baseline import fit_random_forest
from forestnet_model.bundle_meta import read_bundle_meta
from forestnet_model.data import split_indices
from forestnet_model.evaluation import evaluate_bundle, missing_inputs
from forestnet_model.region_features import FEATURE_SETS
from forestnet_model.report import write_evaluation_report
from pipeline.accuracy.map_agreement import check_driver_map, map_beside_evaluation
from pipeline.core.radiometry import require_same, store_radiometry
from pipeline.training_set.chip_store import is_complete, open_chips

SPLITS = ("train", "val", "test")


def check_evaluation_inputs(bundle: Path, chips: Path, split: str, baseline: bool,
                            maps: tuple[str, ...] = ()) -> None:
    """One-line errors, before any cluster starts, for inputs the evaluation cannot use."""
    if split not in SPLITS:
        raise ConfigError(f"--split {split!r}: expected one of {', '.join(SPLITS)}")
    for path in maps:
        check_driver_map(Path(path))
    meta = read_bundle_meta(Path(bundle))  # BundleError names bundle.json when it is missing
    chips = Path(chips)
    if not is_complete(chips):
        raise ConfigError(f"{chips}: no chip store here (zarr.json missing); run "
                          "`forestnet build-training-set` or `forestnet import-forestnet`")
    store = open_chips(chips)
    # A model scored on numbers of another kind scores noise: refuse, naming both.
    require_same(store_radiometry(store.attrs), f"the chip store {chips}", meta.radiometry,
                 f"the model bundle {bundle}")
    gap = missing_inputs(meta, store)
    if gap:
        raise ConfigError(f"{chips}: the bundle {bundle} needs {gap} that the chip store lacks")
    needed = [split] + (["train", "val"] if baseline else [])
    for name in dict.fromkeys(needed):
        if not len(split_indices(store, name)):
            hint = "" if name == split else (
                " (the random-forest baselines need it; pass --no-baseline to skip them)")
            raise ConfigError(f"{chips}: split {name!r} has no labelled events with "
                              f"chips{hint}")


def evaluate_on_cluster(
    client: Client, bundle: Path, chips: Path, split: str, out: Path, baseline: bool = True,
    seed: int = 0, maps: tuple[str, ...] = (),
) -> dict:
    """Run the evaluation and baselines on ``client``'s workers; write the report. With
    ``maps`` (driver GeoPackages of the same area), the report sets the map's accuracy on
    the split's events beside evaluation's."""
    model = client.submit(evaluate_bundle, Path(bundle), Path(chips), split,
                          resources=gpu_resources(client), pure=False)
    forests = [client.submit(fit_random_forest, Path(chips), name, seed, pure=False)
               for name in (FEATURE_SETS if baseline else ())]
    report = model.result()
    if maps:
        report["map"] = map_beside_evaluation([Path(m) for m in maps], open_chips(chips), report)
    baselines = client.gather(forests)
    paths = write_evaluation_report(Path(out), report, baselines)
    return {
        "report": str(paths["markdown"]), "confusion_matrix": str(paths["confusion_matrix"]),
        "json": str(paths["json"]), "model_id": report["model_id"], "split": split,
        "n": report["n"], "accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
        "baselines": {b.feature_set: {"val": b.val["macro_f1"], "test": b.test["macro_f1"]}
                      for b in baselines},
        "calibration": {k: report["calibration"][k] for k in ("temperature", "ece_before",
                                                               "ece_after")},
        **({"map": {k: v for k, v in report["map"].items() if k != "events"}} if maps else {}),
    }


def run_evaluation(
    client_address: str, bundle: str, chips: str, split: str, out: str,
    baseline: bool = True, seed: int = 0, maps: tuple[str, ...] = (),
) -> dict:
    """The flow's work as a plain function: check the inputs, attach, evaluate, report."""
    check_evaluation_inputs(Path(bundle), Path(chips), split, baseline, maps)
    with Client(client_address, set_as_default=False) as client:
        return evaluate_on_cluster(client, Path(bundle), Path(chips), split, Path(out),
                                   baseline, seed, maps)


def summary_lines(summary: dict) -> list[str]:
    """What the flow logs about a finished evaluation."""
    lines = [f"model {summary['model_id']} on {summary['split']} ({summary['n']} events): "
             f"accuracy {summary['accuracy']:.3f}, macro F1 {summary['macro_f1']:.3f}"]
    lines += [f"random forest {name}: macro F1 val {f1['val']:.3f}, test {f1['test']:.3f}"
              for name, f1 in summary["baselines"].items()]
    calibration = summary.get("calibration")
    if calibration:
        lines.append(f"calibration: T = {calibration['temperature']:.3f}, ECE "
                     f"{calibration['ece_before']:.3f} -> {calibration['ece_after']:.3f}")
    if "map" in summary:
        m = summary["map"]
        lines.append(f"map: accuracy {m['map_accuracy']:.3f} on the same events "
                     f"(evaluation {m['evaluation_accuracy']:.3f}); drivers agree on "
                     f"{m['agreement']:.3f}, {m['missing']} missing from the map")
    lines.append(f"report: {summary['report']}")
    return lines


@task(name="evaluate-model")
def evaluate_task(client_address: str, bundle: str, chips: str, split: str, out: str,
                  baseline: bool, seed: int, maps: tuple[str, ...] = ()) -> dict:
    return run_evaluation(client_address, bundle, chips, split, out, baseline, seed, maps)


@flow(name="evaluate", log_prints=True)
def evaluate_flow(client_address: str, bundle: str, chips: str, split: str, out: str,
                  baseline: bool = True, seed: int = 0, maps: tuple[str, ...] = ()) -> dict:
    """Evaluate ``bundle`` on ``split`` of ``chips`` (and the driver ``maps`` on the same
    events); write the report into ``out``."""
    logger = get_run_logger()
    summary = evaluate_task(client_address, bundle, chips, split, out, baseline, seed, maps)
    for line in summary_lines(summary):
        logger.info(line)
    return summary
