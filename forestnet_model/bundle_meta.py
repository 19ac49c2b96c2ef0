"""A model bundle's manifest (``bundle.json``): read and validated without torch.

Flows check a bundle (its radiometry, model, scalars) in the client process, which never
runs the model: keeping torch out of this module keeps the model stack out of the CLI.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from forestnet_model.specs import ModelSpec
from pipeline.core.drivers import DRIVER_CLASSES, FINE_TO_MERGED
from pipeline.core.errors import ForestNetError
from pipeline.core.radiometry import Radiometry

WEIGHTS = "weights.safetensors"
MANIFEST = "bundle.json"
_PACKAGES = ("torch", "segmentation-models-pytorch", "timm", "safetensors", "numpy", "xarray",
             "zarr", "rasterio", "prefect", "dask")


class BundleError(ForestNetError, ValueError):
    """A bundle that cannot be loaded; the message names the file and the reason."""


class BundleMeta(BaseModel):
    """Everything needed to reuse and audit a trained model."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    format_version: int = 1
    model_id: str = Field(description="hash of the weights")
    model: ModelSpec
    normalisation: dict[str, list[float | None]]
    classes: list[str] = Field(default_factory=lambda: list(DRIVER_CLASSES))
    merge_scheme: dict[str, str] = Field(default_factory=lambda: dict(FINE_TO_MERGED))
    training: dict = Field(default_factory=dict)
    metrics: dict = Field(default_factory=dict)
    data_hash: str = Field("", description="fingerprint of the training chip store's events")
    spec_hash: str = Field("", description="fingerprint of ``model`` as saved with the weights "
                           "(spec_fingerprint); '' in bundles saved before it existed")
    # Bundles from before the radiometry contract were trained on Level-1 TOA chips.
    radiometry: Radiometry = Field("toa", description="radiometry of the chips it was trained "
                                   "on (pipeline.core.radiometry); maps must use the same")
    calibration: dict = Field(
        default_factory=dict, description="temperature scaling of the event logits, fitted on "
        "val (forestnet_model.calibration); empty in older bundles: temperature 1")
    fusion_inputs: dict = Field(
        default_factory=dict, description="the fusion features requested, ``kept`` (those in "
        "``model.fusion_features``), ``dropped`` with the reason (constant, or mostly missing "
        "on the training events) and each one's ``missing_fraction`` there")
    provenance: dict[str, str] = Field(default_factory=dict,
                                       description="training store, device, encoder weights")
    versions: dict[str, str] = Field(default_factory=dict)
    git_sha: str = ""
    created: str = ""

    @model_validator(mode="after")
    def _normalisation_fits_the_model(self) -> BundleMeta:
        # A bundle whose statistics do not match its inputs would predict garbage silently.
        norm, spec = self.normalisation, self.model
        for key in ("mean", "std"):
            if len(norm.get(key, ())) != spec.in_channels:
                raise ValueError(f"normalisation.{key} needs {spec.in_channels} values "
                                 f"(one per input channel), has {len(norm.get(key, ()))}")
        if len(norm.get("display_max", spec.in_bands)) != len(spec.in_bands):
            raise ValueError(f"normalisation.display_max needs {len(spec.in_bands)} values "
                             "(one per band)")
        n_scalars = len(spec.fusion_features)
        for key in ("scalar_mean", "scalar_std"):
            if n_scalars and len(norm.get(key, ())) != n_scalars:
                raise ValueError(f"normalisation.{key} needs {n_scalars} values "
                                 "(one per fusion feature)")
        if len(self.classes) != spec.n_classes:
            raise ValueError(f"{len(self.classes)} class names for {spec.n_classes} outputs")
        return self


def is_complete(path: Path) -> bool:
    """Whether a finished bundle is at ``path`` (bundles appear by an atomic rename)."""
    return (Path(path) / MANIFEST).exists()


def read_bundle_meta(path: Path) -> BundleMeta:
    """Validate ``bundle.json``."""
    manifest = Path(path) / MANIFEST
    if not manifest.exists():
        raise BundleError(f"{manifest}: missing; a bundle folder holds {MANIFEST} and {WEIGHTS}")
    try:
        return BundleMeta.model_validate(json.loads(manifest.read_text()))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise BundleError(f"{manifest}: invalid bundle manifest ({exc})") from exc


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape the model's numbers."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_sha() -> str:
    """Commit of the code that trained the model ('' outside a git checkout)."""
    try:
        # Asked in the package's own folder: the caller's working directory may be any repo.
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5, check=False, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def spec_fingerprint(spec: ModelSpec) -> str:
    """A short hash of a model spec, recorded beside the weights it was saved with."""
    text = json.dumps(spec.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def weights_hash(path: Path) -> str:
    """The model id's hash: the first 16 hex digits of the weights file's SHA-256."""
    digest = hashlib.sha256()
    with open(Path(path) / WEIGHTS, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def saved_together(path: Path, meta: BundleMeta) -> bool:
    """True when the weights and the manifest's model spec are those saved together.

    Then the weights fit the spec without rebuilding the model (and without loading
    torch): the check that a map's client process makes. False for a bundle saved
    before ``spec_hash`` existed, or one whose manifest or weights changed since.
    """
    if not meta.spec_hash or meta.spec_hash != spec_fingerprint(meta.model):
        return False
    try:
        return meta.model_id == f"forestnet-{weights_hash(path)}"
    except OSError:
        return False
