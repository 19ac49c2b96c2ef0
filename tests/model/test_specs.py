"""Tests for the model/training specs: validation, re-exports, and no torch at config time."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from forestnet_model.specs import ModelSpec, TrainSpec


def test_loading_the_config_module_does_not_import_torch():
    heavy = ("torch", "segmentation_models_pytorch")
    code = ("import sys, flows.config.schema, forestnet_model.specs; "
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True)
    assert out.stdout.strip() == "[]"


def test_specs_are_re_exported_where_they_used_to_live():
    from forestnet_model.model import ModelSpec as FromModel
    from forestnet_model.train import TrainSpec as FromTrain

    assert FromModel is ModelSpec and FromTrain is TrainSpec


def test_train_spec_defaults_and_new_keys():
    spec = TrainSpec()
    assert (spec.loss, spec.class_weights, spec.focal_gamma) == ("ce", "balanced", 2.0)
    assert spec.worker_resources == {"GPU": 1.0}
    assert spec.progress == "auto" and not spec.metrics_csv and not spec.tensorboard
    custom = TrainSpec(loss="focal_dice", class_weights=[1, 2, 3, 4], focal_gamma=1.5,
                       worker_resources={"GPU": 1, "MEMORY": 8e9})
    assert custom.class_weights == (1.0, 2.0, 3.0, 4.0)
    assert TrainSpec.model_validate(custom.model_dump(mode="json")) == custom


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"loss": "dice"}, "loss"),
    ({"class_weights": "inverse"}, "class_weights"),
    ({"class_weights": [0, 0]}, "non-negative"),
    ({"focal_gamma": -1}, "focal_gamma"),
    ({"progress": "maybe"}, "progress"),
    ({"crop": 100}, "multiple of 32"),
    ({"learning_rate": 0.1}, "learning_rate"),
])
def test_train_spec_rejects_bad_values(kwargs, match):
    with pytest.raises(ValidationError, match=match):
        TrainSpec(**kwargs)


def test_model_spec_fusion_defaults_and_round_trip():
    spec = ModelSpec(fusion=True, fusion_features=("peat_fraction",))
    assert spec.fusion_hidden == (128, 128) and spec.fusion_dropout == pytest.approx(0.2)
    assert ModelSpec.model_validate_json(spec.model_dump_json()) == spec
    # A bundle written before fusion existed still validates.
    old = {"architecture": "fpn", "encoder": "efficientnet-b2", "in_bands": ["red"],
           "aux_bands": [], "n_classes": 4, "encoder_weights": None}
    assert not ModelSpec.model_validate(old).fusion


def test_a_maps_bundle_check_needs_torch_only_for_a_bundle_changed_since_saving(tmp_path):
    import json

    from flows.config.input_checks import check_map_bundle
    from forestnet_model.bundle_meta import BundleError, read_bundle_meta, saved_together
    from tests.map_job import untrained_bundle

    bundle = untrained_bundle(tmp_path / "bundle", ("elevation_mean",))
    assert saved_together(bundle, read_bundle_meta(bundle))
    code = ("import sys; from flows.config.input_checks import check_map_bundle; "
            f"check_map_bundle({str(bundle)!r}); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.stdout.strip() == "False", out.stderr[-2000:]
    # A manifest edited after saving: the weights are checked by rebuilding the model.
    manifest = bundle / "bundle.json"
    meta = json.loads(manifest.read_text())
    meta["model"]["encoder"] = "resnet34"
    manifest.write_text(json.dumps(meta))
    assert not saved_together(bundle, read_bundle_meta(bundle))
    with pytest.raises(BundleError, match="weights do not match the bundle's model"):
        check_map_bundle(bundle)
