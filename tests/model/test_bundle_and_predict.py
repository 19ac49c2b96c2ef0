"""Tests for model bundles (safetensors + JSON, never pickle) and event prediction."""

from __future__ import annotations

import hashlib
import json
import pickle
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch

from forestnet_model.bundle import MANIFEST, WEIGHTS, BundleError, load_bundle, save_bundle
from forestnet_model.model import ModelSpec, build_model
from forestnet_model.predict import predict_events

SPEC = ModelSpec(encoder="resnet18")
NORMALISATION = {"mean": [0.05, 0.06, 0.04, 0.25, 0.15, 0.08],
                 "std": [0.02, 0.02, 0.02, 0.05, 0.04, 0.03]}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _trained_looking_model(seed: int = 0) -> torch.nn.Module:
    """A model whose weights and BatchNorm statistics differ from any fresh initialisation."""
    torch.manual_seed(seed)
    model = build_model(SPEC)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
        model.train()
        for _ in range(2):  # move the running statistics away from (0, 1)
            model(torch.randn(2, 6, 64, 64) * 3 + 1)
    return model.eval()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    model = _trained_looking_model()
    out = tmp_path_factory.mktemp("bundles") / "bundle"
    meta = {"model": SPEC, "normalisation": NORMALISATION, "metrics": {"val": {"macro_f1": 0.5}}}
    assert save_bundle(model, meta, out) == out
    return out, model


def _copy_bundle(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in (WEIGHTS, MANIFEST):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def _with_edited_manifest(src: Path, dst: Path, edit) -> Path:
    """A copy of the bundle at ``src`` whose manifest went through ``edit(dict)``."""
    folder = _copy_bundle(src, dst)
    meta = json.loads((folder / MANIFEST).read_text())
    edit(meta)
    (folder / MANIFEST).write_text(json.dumps(meta))
    return folder


def test_bundle_folder_holds_weights_and_manifest(bundle):
    path, _ = bundle
    assert sorted(p.name for p in path.iterdir()) == sorted([WEIGHTS, MANIFEST])
    meta = json.loads((path / MANIFEST).read_text())
    digest = hashlib.sha256((path / WEIGHTS).read_bytes()).hexdigest()
    assert meta["model_id"].startswith("forestnet-")
    assert digest.startswith(meta["model_id"].removeprefix("forestnet-"))
    assert meta["model"]["architecture"] == "fpn"
    assert meta["model"]["encoder"] == "resnet18"
    assert meta["model"]["in_bands"] == ["red", "green", "blue", "nir", "swir1", "swir2"]
    assert meta["normalisation"] == NORMALISATION
    assert meta["classes"] == [
        "Plantation", "Smallholder agriculture", "Grassland shrubland", "Other"
    ]
    # The ForestNet merge of the 12 fine labels (Irvin et al. 2020, Table 1).
    assert len(meta["merge_scheme"]) == 12
    assert meta["merge_scheme"]["Oil palm plantation"] == "Plantation"
    assert meta["merge_scheme"]["Small-scale oil palm plantation"] == "Smallholder agriculture"
    assert meta["merge_scheme"]["Mining"] == "Other"
    assert meta["versions"]["torch"] == torch.__version__.split("+")[0]
    assert "python" in meta["versions"]
    created = datetime.fromisoformat(meta["created"])
    assert created.tzinfo is not None
    assert abs((datetime.now(created.tzinfo) - created).total_seconds()) < 3600
    assert meta["metrics"] == {"val": {"macro_f1": 0.5}}


def test_load_bundle_round_trips_weights_exactly(bundle):
    path, model = bundle
    torch.manual_seed(123)  # a rebuilt model that ignored the file would differ
    loaded, meta = load_bundle(path)
    assert not loaded.training
    assert meta.model == SPEC
    original = model.state_dict()
    restored = loaded.state_dict()
    assert original.keys() == restored.keys()
    for name, value in original.items():
        assert torch.equal(restored[name], value), name
    x = torch.randn(2, 6, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


def test_different_weights_give_a_different_model_id(bundle, tmp_path):
    path, _ = bundle
    other = save_bundle(_trained_looking_model(seed=1), {"model": SPEC,
                                                         "normalisation": NORMALISATION},
                        tmp_path / "other")
    first = json.loads((path / MANIFEST).read_text())["model_id"]
    second = json.loads((other / MANIFEST).read_text())["model_id"]
    assert first != second


def test_pickled_weights_are_refused(bundle, tmp_path):
    path, model = bundle
    folder = _copy_bundle(path, tmp_path / "pickled")
    torch.save(model.state_dict(), folder / WEIGHTS)
    with pytest.raises(BundleError) as err:
        load_bundle(folder)
    assert str(folder / WEIGHTS) in str(err.value)


class _Payload:
    """Creates a file when unpickled: what a malicious weights file would do."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return open, (str(self.target), "w")


def test_malicious_pickle_is_refused_and_never_runs(bundle, tmp_path):
    # The payload works: unpickling it creates its file.
    control = tmp_path / "control-marker"
    pickle.loads(pickle.dumps(_Payload(control))).close()
    assert control.exists()

    path, _ = bundle
    for name, writer in [
        ("raw", lambda f, p: f.write_bytes(pickle.dumps({"weight": p}))),
        ("torch", lambda f, p: torch.save({"weight": p}, f)),
    ]:
        marker = tmp_path / f"pwned-{name}"
        folder = _copy_bundle(path, tmp_path / f"evil-{name}")
        writer(folder / WEIGHTS, _Payload(marker))
        with pytest.raises(BundleError, match=WEIGHTS):
            load_bundle(folder)
        assert not marker.exists()


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda m: m.update(colour_scheme="viridis"), "colour_scheme"),
        (lambda m: m.pop("normalisation"), "normalisation"),
        (lambda m: m["model"].update(depth=5), "depth"),
    ],
)
def test_invalid_manifest_is_refused_naming_the_file(bundle, tmp_path, edit, reason):
    path, _ = bundle
    folder = _with_edited_manifest(path, tmp_path / "edited", edit)
    with pytest.raises(BundleError, match=reason) as err:
        load_bundle(folder)
    assert str(folder / MANIFEST) in str(err.value)


def test_missing_files_are_named(bundle, tmp_path):
    path, _ = bundle
    folder = _copy_bundle(path, tmp_path / "no-weights")
    (folder / WEIGHTS).unlink()
    with pytest.raises(BundleError, match=WEIGHTS):
        load_bundle(folder)
    (folder / MANIFEST).unlink()
    with pytest.raises(BundleError, match=MANIFEST):
        load_bundle(folder)


# --- prediction ---------------------------------------------------------------------------------


def _chips(n: int, size: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unnormalised reflectance chips (not a multiple of 32: prediction pads them)."""
    rng = np.random.default_rng(seed)
    mean = np.asarray(NORMALISATION["mean"], np.float32)[:, None, None]
    images = (mean + 0.05 * rng.standard_normal((n, 6, size, size))).astype(np.float32)
    masks = np.zeros((n, size, size), dtype=np.uint8)
    for i in range(n):
        r, c = rng.integers(5, size - 10, size=2)
        masks[i, r:r + 6, c:c + 4] = 1
    return images, masks


def test_predict_events_returns_probabilities(bundle):
    path, _ = bundle
    images, masks = _chips(5)
    probs, model_id = predict_events(path, images, masks, batch_size=2, device="cpu")
    assert probs.shape == (5, 4)
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert model_id == json.loads((path / MANIFEST).read_text())["model_id"]
    # Different chips get different answers: the images reach the model.
    assert np.abs(probs[0] - probs[1]).max() > 1e-4


def test_predict_events_is_permutation_equivariant(bundle):
    path, _ = bundle
    images, masks = _chips(6, seed=1)
    probs, _ = predict_events(path, images, masks, batch_size=4, device="cpu")
    perm = np.array([5, 2, 0, 4, 1, 3])
    shuffled, _ = predict_events(path, images[perm], masks[perm], batch_size=4, device="cpu")
    np.testing.assert_allclose(shuffled, probs[perm], atol=1e-5)


def test_predict_events_rejects_wrong_channel_count_naming_the_bundle(bundle):
    path, _ = bundle
    images, masks = _chips(2)
    with pytest.raises(ValueError, match="expects 6 input channels") as err:
        predict_events(path, images[:, :4], masks, device="cpu")
    assert str(path) in str(err.value)


# --- fusion bundles -----------------------------------------------------------------------------

FUSION_SPEC = ModelSpec(encoder="resnet18", fusion=True,
                        fusion_features=("elevation_mean", "street_dist_km"))
FUSION_NORMALISATION = {**NORMALISATION, "scalar_mean": [80.0, 3.0], "scalar_std": [20.0, 1.5]}


@pytest.fixture(scope="module")
def fusion_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(5)
    model = build_model(FUSION_SPEC)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.eval()
    out = tmp_path_factory.mktemp("fusion") / "bundle"
    meta = {"model": FUSION_SPEC, "normalisation": FUSION_NORMALISATION,
            "training": {"loss": "focal"}, "data_hash": "abc123",
            "provenance": {"chips": "/data/chips.zarr"}}
    save_bundle(model, meta, out)
    return out, model


def test_fusion_bundle_manifest_records_inputs_features_and_scalar_stats(fusion_bundle):
    path, _ = fusion_bundle
    meta = json.loads((path / MANIFEST).read_text())
    assert meta["model"]["fusion"] is True
    assert meta["model"]["fusion_features"] == ["elevation_mean", "street_dist_km"]
    assert meta["normalisation"]["scalar_mean"] == [80.0, 3.0]
    assert meta["data_hash"] == "abc123" and meta["training"] == {"loss": "focal"}
    assert meta["provenance"] == {"chips": "/data/chips.zarr"}
    assert {"versions", "git_sha", "created", "classes", "merge_scheme"} <= set(meta)
    assert "safetensors" in meta["versions"]


def test_fusion_bundle_round_trips_with_the_same_predictions(fusion_bundle):
    path, model = fusion_bundle
    loaded, meta = load_bundle(path)
    assert meta.model == FUSION_SPEC and not loaded.training
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    images, masks = _chips(4, seed=3)
    scalars = np.array([[70.0, 1.0], [90.0, 5.0], [np.nan, 2.0], [85.0, 0.5]], np.float32)
    probs, _ = predict_events(path, images, masks, batch_size=3, device="cpu", scalars=scalars)
    # The same numbers by hand through the original module.
    from forestnet_model.model_inputs import normalise, normalise_scalars, pad_to_multiple

    x = torch.from_numpy(np.stack([pad_to_multiple(normalise(im, FUSION_NORMALISATION))
                                   for im in images]))
    m = torch.from_numpy(np.stack([pad_to_multiple(mk.astype(bool)) for mk in masks]))
    s = torch.from_numpy(normalise_scalars(scalars, FUSION_NORMALISATION))
    assert s[2, 0] == 0.0  # a missing scalar becomes the training mean
    with torch.no_grad():
        _, logits = model(x, m, s)
    np.testing.assert_allclose(probs, torch.softmax(logits, 1).numpy(), atol=1e-5)
    # The scalars reach the head.
    other, _ = predict_events(path, images, masks, device="cpu", scalars=scalars + 40.0)
    assert np.abs(other - probs).max() > 1e-4


def test_fusion_bundle_needs_its_scalars(fusion_bundle):
    path, _ = fusion_bundle
    images, masks = _chips(2)
    with pytest.raises(ValueError, match="street_dist_km"):
        predict_events(path, images, masks, device="cpu")
    with pytest.raises(ValueError, match=r"shape \(2, 1\)"):
        predict_events(path, images, masks, device="cpu", scalars=np.zeros((2, 1)))


@pytest.mark.parametrize(("edit", "reason"), [
    (lambda m: m["normalisation"]["mean"].pop(), "normalisation.mean needs 6"),
    (lambda m: m["normalisation"].pop("scalar_std"), "normalisation.scalar_std needs 2"),
    (lambda m: m["classes"].pop(), "3 class names for 4 outputs"),
])
def test_manifest_inconsistent_with_the_model_is_refused(fusion_bundle, tmp_path, edit, reason):
    path, _ = fusion_bundle
    folder = _with_edited_manifest(path, tmp_path / "inconsistent", edit)
    with pytest.raises(BundleError, match=reason):
        load_bundle(folder)
