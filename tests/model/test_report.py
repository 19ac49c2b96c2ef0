"""Bundle evaluation, the evaluation report and ``forestnet evaluate``."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import flows.evaluate  # noqa: F401  (Prefect's log handlers bind to the real stderr, not CliRunner's)
from flows.cli.app import app
from flows.evaluate import run_evaluation, summary_lines
from forestnet_model.baseline import select_forest
from forestnet_model.bundle import save_bundle
from forestnet_model.data import split_indices
from forestnet_model.evaluation import evaluate_bundle
from forestnet_model.metrics import classification_report, per_class_scores
from forestnet_model.model import ModelSpec, build_model
from forestnet_model.predict import predict_events
from forestnet_model.region_features import FeatureTable
from forestnet_model.report import (
    PUBLISHED_RESULTS,
    confusion_png,
    render_confusion_markdown,
    render_metrics_markdown,
    write_evaluation_report,
)
from pipeline.core.drivers import DRIVER_CLASSES
from pipeline.core.radiometry import RadiometryMismatch
from pipeline.training_set.chip_store import open_chips
from tests.ingest_inputs import threads_cluster
from tests.model.synthetic_chips import synthetic_chip_store
from tests.model.test_baseline import write_synthetic_chips
from tests.reliability.bad_input_helpers import one_line_error

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: Bands out of store order plus an aux band: evaluation must follow the bundle, not the store.
SPEC = ModelSpec(encoder="resnet18", in_bands=("swir2", "red", "green"), aux_bands=("slope",))


def _bundle(out: Path, spec: ModelSpec = SPEC) -> Path:
    """An untrained model (seeded) with plausible normalisation: reflectance, then aux."""
    torch.manual_seed(0)
    nb, na, nf = len(spec.in_bands), len(spec.aux_bands), len(spec.fusion_features)
    normalisation = {"mean": [0.1] * nb + [50.0] * na, "std": [0.05] * nb + [5.0] * na}
    if nf:
        normalisation.update(scalar_mean=[1.0] * nf, scalar_std=[2.0] * nf)
    return save_bundle(build_model(spec), {"model": spec, "normalisation": normalisation,
                                           "radiometry": "surface"}, out)


@pytest.fixture(scope="module")
def tiny_chips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_chip_store(tmp_path_factory.mktemp("report") / "chips.zarr")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _bundle(tmp_path_factory.mktemp("bundles") / "bundle")


# --- metrics ----------------------------------------------------------------------------


def test_per_class_scores_from_a_known_matrix():
    cm = np.array([[3, 1, 0, 0], [0, 2, 1, 0], [0, 0, 0, 0], [1, 0, 0, 1]])
    scores = per_class_scores(cm)
    assert scores["support"] == [4, 3, 0, 2]
    assert scores["precision"] == [0.75, 2 / 3, 0.0, 1.0]
    assert scores["recall"][:2] == [0.75, 2 / 3] and scores["recall"][3] == 0.5
    assert scores["recall"][2] is None  # never true: no recall, not 0
    assert scores["f1"][3] == pytest.approx(2 / 3)
    never_predicted = per_class_scores(np.array([[1, 1], [0, 0]]))
    assert never_predicted["precision"] == [1.0, 0.0]
    assert per_class_scores(np.array([[1, 0], [1, 0]]))["precision"][1] is None


# --- evaluate_bundle --------------------------------------------------------------------


def test_evaluate_bundle_predicts_with_the_bundles_channels(tiny_chips, bundle):
    report = evaluate_bundle(bundle, tiny_chips, "train", batch_size=3, device="cpu")
    chips = open_chips(tiny_chips)
    events = [0, 1, 2, 3]
    # An independent read: whole arrays, plain numpy indexing.
    image = chips["image"].values[events, 0]
    order = [list(chips["band"].values).index(b) for b in SPEC.in_bands]
    slope = chips["aux"].sel(aux_band="slope").values[events][:, None]
    x = np.concatenate([image[:, order], slope], axis=1)
    expected, model_id = predict_events(bundle, x, chips["loss_mask"].values[events],
                                        device="cpu")
    got = np.array([e["probabilities"] for e in report["events"]])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert report["model_id"] == model_id and report["split"] == "train"
    assert report["n"] == 4 and report["inputs"]["bands"] == list(SPEC.in_bands)
    assert [e["event_id"] for e in report["events"]] == [f"2015_ev{i}" for i in events]
    assert [e["true"] for e in report["events"]] == list(DRIVER_CLASSES)
    predicted = [DRIVER_CLASSES[i] for i in expected.argmax(1)]
    assert [e["predicted"] for e in report["events"]] == predicted
    assert report["accuracy"] == np.mean(np.array(predicted) == np.array(DRIVER_CLASSES))
    assert sum(report["support_per_class"]) == 4
    # Channel order matters to this model: the store's own order gives other answers.
    store_order = np.concatenate([image[:, [order[1], order[2], order[0]]], slope], axis=1)
    other, _ = predict_events(bundle, store_order, chips["loss_mask"].values[events],
                              device="cpu")
    assert np.abs(other - expected).max() > 1e-4


def test_evaluate_bundle_feeds_a_fusion_head_its_aux_scalars(tmp_path):
    store = write_synthetic_chips(tmp_path / "chips.zarr", n_per_class=2)
    spec = SPEC.model_copy(update={"fusion": True, "fusion_features": ("noise_b",)})
    fusion = _bundle(tmp_path / "fusion", spec)
    report = evaluate_bundle(fusion, store, "train", device="cpu")
    chips = open_chips(store)
    events = split_indices(chips, "train")
    image = chips["image"].values[events, 0]
    order = [list(chips["band"].values).index(b) for b in SPEC.in_bands]
    slope = chips["aux"].sel(aux_band="slope").values[events][:, None]
    x, masks = np.concatenate([image[:, order], slope], axis=1), chips["loss_mask"].values[events]
    scalars = chips["aux_scalar"].values[events]  # features: noise_a, noise_b
    expected, _ = predict_events(fusion, x, masks, device="cpu", scalars=scalars[:, 1:])
    got = np.array([e["probabilities"] for e in report["events"]])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    wrong, _ = predict_events(fusion, x, masks, device="cpu", scalars=scalars[:, :1])
    assert np.abs(wrong - expected).max() > 1e-4  # the scalars reach the head


def test_evaluate_bundle_names_the_store_for_unusable_input(tmp_path, bundle):
    store = write_synthetic_chips(tmp_path / "no-test.zarr", n_per_class=2,
                                  splits=("train", "val"))
    with pytest.raises(ValueError, match="split 'test' has no labelled events") as err:
        evaluate_bundle(bundle, store, "test", device="cpu")
    assert str(store) in str(err.value)
    elevation = _bundle(tmp_path / "elevation", SPEC.model_copy(
        update={"aux_bands": ("elevation",)}))
    with pytest.raises(ValueError, match="aux bands \\['elevation'\\]"):
        evaluate_bundle(elevation, store, "train", device="cpu")


# --- the report -------------------------------------------------------------------------


def _model_report() -> dict:
    y_true = np.array([0, 0, 0, 0, 1, 1, 1, 3, 3, 3])
    y_pred = np.array([0, 0, 0, 1, 1, 1, 0, 3, 3, 1])  # class 2: never true, never predicted
    report = classification_report(y_true, y_pred, 4)
    scores = per_class_scores(np.asarray(report["confusion_matrix"]))
    report.update(model_id="forestnet-0123abcd", bundle="/b", chips="/c", split="test",
                  classes=list(DRIVER_CLASSES), inputs={"bands": ["red", "green", "blue"],
                                                        "aux_bands": []},
                  precision_per_class=scores["precision"], recall_per_class=scores["recall"],
                  support_per_class=scores["support"], events=[])
    return report


def _baseline(name: str, seed: int):
    rng = np.random.default_rng(seed)

    def table(n: int) -> FeatureTable:
        y = np.arange(n) % 4
        return FeatureTable(np.c_[y + rng.normal(0, 0.8, n)], y, ("red_mean",),
                            tuple(map(str, range(n))))

    grid = {"n_estimators": (5,), "max_depth": (2,), "max_features": (None,)}
    return select_forest({"train": table(40), "val": table(20), "test": table(20)}, name,
                         seed=seed, grid=grid)


def test_report_files_hold_our_numbers_and_the_published_ones(tmp_path):
    report = _model_report()
    baselines = [_baseline("visible", 0), _baseline("visible+aux", 1)]
    paths = write_evaluation_report(tmp_path / "eval", report, baselines)
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == [
        "confusion_matrix.png", "report.json", "report.md"]  # no temporaries left

    with Image.open(paths["confusion_matrix"]) as png:
        assert png.format == "PNG" and png.width > 300 and png.height > 300
        assert len(png.convert("RGB").getcolors(1_000_000)) > 10  # drawn, not blank

    md = paths["markdown"].read_text()
    assert "# Evaluation of forestnet-0123abcd on the test split" in md
    assert "| accuracy | 0.700 |" in md
    assert f"| macro F1 | {report['macro_f1']:.3f} |" in md
    assert "| Plantation | 0.750 | 0.750 | 0.750 | 4 |" in md
    assert "| Grassland shrubland | n/a | n/a | n/a | 0 |" in md
    assert "| Plantation | 3 | 1 | 0 | 0 |" in md and "| Other | 0 | 1 | 0 | 2 |" in md
    assert ("| ForestNet pipeline model | red, green, blue | this run (forestnet-0123abcd) "
            f"| — | 0.700 / {report['macro_f1']:.3f} |") in md
    for b, inputs in zip(baselines, ("visible", "visible + aux"), strict=True):
        row = (f"| random forest | {inputs} | this run | {b.val['accuracy']:.3f} / "
               f"{b.val['macro_f1']:.3f} | {b.test['accuracy']:.3f} / {b.test['macro_f1']:.3f} |")
        assert row in md
    assert "| random forest | visible | Irvin et al. 2020 | 0.56 / 0.49 | 0.49 / 0.44 |" in md
    assert ("| CNN + SDA + PT (ForestNet) | visible + aux | Irvin et al. 2020 | 0.84 / 0.81 "
            "| 0.80 / 0.75 |") in md
    assert md.count("Irvin et al. 2020 |") == len(PUBLISHED_RESULTS) == 4

    full = json.loads(paths["json"].read_text(), parse_constant=pytest.fail)  # strict JSON
    assert full["model"]["accuracy"] == 0.7
    assert full["model"]["f1_per_class"][2] is None
    assert [b["feature_set"] for b in full["baselines"]] == ["visible", "visible+aux"]
    assert full["published"][0]["test_macro_f1"] == 0.44


def test_report_without_baselines_and_rewritten_in_place(tmp_path):
    report = _model_report()
    write_evaluation_report(tmp_path, report, [_baseline("visible", 0)])
    report["model_id"] = "forestnet-ffff"
    paths = write_evaluation_report(tmp_path, report)
    md = paths["markdown"].read_text()
    assert "forestnet-ffff" in md and "| random forest | visible | this run" not in md
    assert "## Random forest" not in md
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


# --- artifact markdown ------------------------------------------------------------------

#: A bundle's ``metrics`` as training writes them (``classification_report`` per split).
METRICS = {
    "val": {"n": 5, "accuracy": 0.6, "macro_f1": 0.55, "f1_per_class": [0.8, 0.5, None, 0.35],
            "confusion_matrix": [[2, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]]},
    "test": {"n": 4, "accuracy": 0.75, "macro_f1": 0.625, "f1_per_class": [1.0, 0.5, None, 0.375],
             "confusion_matrix": [[1, 0, 0, 0], [0, 1, 0, 1], [0, 0, 0, 0], [0, 0, 0, 1]]},
    "best_val_macro_f1": 0.55, "epochs_run": 3, "train_events": 12,
}


def test_metrics_markdown_has_each_splits_row_with_its_numbers():
    md = render_metrics_markdown(METRICS, DRIVER_CLASSES, "Metrics of forestnet-ab")
    lines = md.splitlines()
    assert lines[0] == "### Metrics of forestnet-ab"
    header = next(line for line in lines if line.startswith("| split"))
    assert header == ("| split | events | accuracy | macro F1 | F1 Plantation | F1 Smallholder "
                      "agriculture | F1 Grassland shrubland | F1 Other |")
    assert "| val | 5 | 0.600 | 0.550 | 0.800 | 0.500 | n/a | 0.350 |" in lines
    assert "| test | 4 | 0.750 | 0.625 | 1.000 | 0.500 | n/a | 0.375 |" in lines
    assert sum(line.startswith(("| val", "| test")) for line in lines) == 2  # no scalar rows
    assert "- best validation macro F1: 0.550" in lines
    assert "- epochs run: 3" in lines and "- training events: 12" in lines


def test_metrics_markdown_without_per_class_f1_or_facts():
    metrics = {"test": {"n": 0, "accuracy": float("nan"), "macro_f1": float("nan")}}
    md = render_metrics_markdown(metrics, DRIVER_CLASSES, "t")
    assert "| test | 0 | n/a | n/a | n/a | n/a | n/a | n/a |" in md.splitlines()
    assert "- " not in md


def test_confusion_markdown_inlines_the_png_and_tabulates_the_matrix():
    cm = METRICS["test"]["confusion_matrix"]
    png = confusion_png(cm, DRIVER_CLASSES, "forestnet-ab, test split")
    md = render_confusion_markdown(cm, DRIVER_CLASSES, png, "Confusion matrix")
    (uri,) = re.findall(r"!\[confusion matrix\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", md)
    assert base64.b64decode(uri) == png
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.width > 300
    assert "| Smallholder agriculture | 0 | 1 | 0 | 1 |" in md.splitlines()


# --- the CLI ----------------------------------------------------------------------------

runner = CliRunner()


def test_cli_names_a_missing_bundle(tmp_path, tiny_chips):
    missing = tmp_path / "no-bundle"
    text = one_line_error(runner.invoke(app, [
        "evaluate", "--bundle", str(missing), "--chips", str(tiny_chips)]))
    assert str(missing) in text and "bundle.json" in text


def test_cli_names_a_missing_chip_store(tmp_path, bundle):
    missing = tmp_path / "no-chips.zarr"
    text = one_line_error(runner.invoke(app, [
        "evaluate", "--bundle", str(bundle), "--chips", str(missing)]))
    assert str(missing) in text and "no chip store" in text


def test_cli_refuses_chips_of_another_radiometry_than_the_bundles(tmp_path, tiny_chips):
    toa = _bundle(tmp_path / "toa-bundle")
    meta = json.loads((toa / "bundle.json").read_text())
    meta["radiometry"] = "toa"  # a bundle trained on Level-1 chips
    (toa / "bundle.json").write_text(json.dumps(meta))
    text = one_line_error(runner.invoke(app, [
        "evaluate", "--bundle", str(toa), "--chips", str(tiny_chips)]))
    assert text.endswith(f"the chip store {tiny_chips} is surface reflectance (Level-2) but "
                         f"the model bundle {toa} is top-of-atmosphere (Level-1); they must match")
    with pytest.raises(RadiometryMismatch):  # the library path refuses as well
        evaluate_bundle(toa, tiny_chips, "test", device="cpu")


def test_cli_names_an_unknown_split(tiny_chips, bundle):
    text = one_line_error(runner.invoke(app, [
        "evaluate", "--bundle", str(bundle), "--chips", str(tiny_chips), "--split", "testing"]))
    assert "'testing'" in text and "train, val, test" in text


def test_cli_names_an_empty_split(tmp_path, bundle):
    store = write_synthetic_chips(tmp_path / "chips.zarr", n_per_class=2,
                                  splits=("train", "test"))
    args = ["evaluate", "--bundle", str(bundle), "--chips", str(store)]
    text = one_line_error(runner.invoke(app, [*args, "--split", "val", "--no-baseline"]))
    assert str(store) in text and "split 'val' has no labelled events" in text
    text = one_line_error(runner.invoke(app, args))  # test has events; the baselines need val
    assert "split 'val'" in text and "--no-baseline" in text


def test_cli_writes_the_report_through_the_cluster(tmp_path, tiny_chips, bundle, monkeypatch):
    # The flow minus Prefect: its temporary API server would cost ~15 s per test process
    # (test_demo_flow runs real flows end to end). run_evaluation is what its task runs.
    calls = []

    def flow_without_prefect(*args):
        calls.append(args)
        return run_evaluation(*args)

    monkeypatch.setattr(flows.evaluate, "evaluate_flow", flow_without_prefect)
    out = tmp_path / "evaluation"
    with threads_cluster() as address:
        result = runner.invoke(app, [
            "evaluate", "--bundle", str(bundle), "--chips", str(tiny_chips), "--split", "test",
            "--out", str(out), "--seed", "3", "--dask-address", address])
    assert result.exit_code == 0, result.output
    assert calls == [(address, str(bundle), str(tiny_chips), "test", str(out), True, 3, ())]
    assert f"report: {out / 'report.md'}" in result.stdout
    full = json.loads((out / "report.json").read_text())
    assert full["model"]["n"] == 2 and full["model"]["split"] == "test"
    assert [b["feature_set"] for b in full["baselines"]] == ["visible", "visible+aux"]
    assert all(len(b["grid_scores"]) == 8 for b in full["baselines"])
    md = (out / "report.md").read_text()
    assert "| random forest | visible + aux | this run |" in md
    assert ("- radiometry: chips surface reflectance (Level-2); model trained on surface "
            "reflectance (Level-2)") in md.splitlines()
    assert (out / "confusion_matrix.png").stat().st_size > 0
    # Calibration before and after, on the split's events, with its reliability diagram.
    calibration = full["model"]["calibration"]
    assert calibration["temperature"] == 1.0 and calibration["method"] == "none"
    assert calibration["ece_after"] == calibration["ece_before"] >= 0
    assert "## Calibration" in md and "![reliability diagram](reliability.png)" in md
    assert (out / "reliability.png").stat().st_size > 0


def test_flow_summary_lines():
    summary = {"model_id": "forestnet-ab", "split": "test", "n": 2, "accuracy": 0.5,
               "macro_f1": float("nan"), "report": "/r/report.md",
               "baselines": {"visible": {"val": 0.25, "test": 1.0}}}
    assert summary_lines(summary) == [
        "model forestnet-ab on test (2 events): accuracy 0.500, macro F1 nan",
        "random forest visible: macro F1 val 0.250, test 1.000",
        "report: /r/report.md",
    ]
