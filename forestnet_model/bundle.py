"""Model bundle: a folder with ``weights.safetensors`` and ``bundle.json``. Never unpickles."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

from forestnet_model.bundle_meta import (
    MANIFEST,
    WEIGHTS,
    BundleError,
    BundleMeta,
    git_sha,
    is_complete,
    package_versions,
    read_bundle_meta,
    spec_fingerprint,
    weights_hash,
)
from forestnet_model.model import build_model
from forestnet_model.specs import ModelSpec
from pipeline.core.atomic import atomic_output

__all__ = ["MANIFEST", "WEIGHTS", "BundleError", "BundleMeta", "is_complete", "load_bundle",
           "read_bundle_meta", "save_bundle"]


def save_bundle(model: nn.Module, meta: dict, out: Path) -> Path:
    """Write the bundle atomically; ``meta`` holds BundleMeta fields except model_id."""
    out = Path(out)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_output(out) as tmp:
        tmp.mkdir(parents=True)
        save_file(state, str(tmp / WEIGHTS))
        full = BundleMeta(
            model_id=f"forestnet-{weights_hash(tmp)}", versions=package_versions(),
            git_sha=git_sha(), spec_hash=spec_fingerprint(ModelSpec.model_validate(meta["model"])),
            created=datetime.now(UTC).isoformat(timespec="seconds"), **meta,
        )
        (tmp / MANIFEST).write_text(full.model_dump_json(indent=2))
    return out


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
