"""Model bundle: a folder with ``weights.safetensors`` and ``bundle.json``. Never unpickles."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from safetensors.torch import load_file, save_file
from torch import nn

from forestnet_model.model import build_model
from forestnet_model.specs import ModelSpec
from pipeline.core.atomic import atomic_output
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
    normalisation: dict[str, list[float]]
    classes: list[str] = Field(default_factory=lambda: list(DRIVER_CLASSES))
    merge_scheme: dict[str, str] = Field(default_factory=lambda: dict(FINE_TO_MERGED))
    training: dict = Field(default_factory=dict)
    metrics: dict = Field(default_factory=dict)
    data_hash: str = Field("", description="fingerprint of the training chip store's events")
    # Bundles from before the radiometry contract were trained on Level-1 TOA chips.
    radiometry: Radiometry = Field("toa", description="radiometry of the chips it was trained "
                                   "on (pipeline.core.radiometry); maps must use the same")
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
        n_scalars = len(spec.fusion_features)
        for key in ("scalar_mean", "scalar_std"):
            if n_scalars and len(norm.get(key, ())) != n_scalars:
                raise ValueError(f"normalisation.{key} needs {n_scalars} values "
                                 "(one per fusion feature)")
        if len(self.classes) != spec.n_classes:
            raise ValueError(f"{len(self.classes)} class names for {spec.n_classes} outputs")
        return self


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


def save_bundle(model: nn.Module, meta: dict, out: Path) -> Path:
    """Write the bundle atomically; ``meta`` holds BundleMeta fields except model_id."""
    out = Path(out)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_output(out) as tmp:
        tmp.mkdir(parents=True)
        save_file(state, str(tmp / WEIGHTS))
        digest = hashlib.sha256((tmp / WEIGHTS).read_bytes()).hexdigest()[:16]
        full = BundleMeta(
            model_id=f"forestnet-{digest}", versions=package_versions(), git_sha=git_sha(),
            created=datetime.now(UTC).isoformat(timespec="seconds"), **meta,
        )
        (tmp / MANIFEST).write_text(full.model_dump_json(indent=2))
    return out


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


def load_bundle(path: Path) -> tuple[nn.Module, BundleMeta]:
    """Rebuild the model from its spec and load the safetensors weights (eval mode)."""
    path = Path(path)
    meta = read_bundle_meta(path)
    weights = path / WEIGHTS
    if not weights.exists():
        raise BundleError(f"{weights}: missing weights file")
    model = build_model(meta.model.model_copy(update={"encoder_weights": None}))
    try:
        state = load_file(str(weights))
        model.load_state_dict(state)
    except Exception as exc:  # safetensors and torch raise several types for bad files
        raise BundleError(f"{weights}: weights do not match the bundle's model ({exc})") from exc
    model.eval()
    return model, meta
