"""Shared helpers of the bad-input catalogue (``test_bad_*.py``).

A *map-ready* folder holds what ``forestnet map`` checks before any flow starts: a config
over the tiny world, a scene index file and a model bundle (random weights). Tests break
one of them and read the one-line error; nothing here starts Prefect or Dask.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.tiny_config import write_tiny_config

#: A small encoder: these bundles are only ever loaded, never trained.
ENCODER = "resnet18"
NORMALISATION = {"mean": [0.05, 0.06, 0.04, 0.25, 0.15, 0.08], "std": [0.03] * 6}


def one_line_error(result) -> str:
    """A CliRunner result that failed as bad input: exit 2, one line on stderr, no trace."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    text = result.stderr.strip()
    assert "Traceback" not in result.output, result.output
    assert len(text.splitlines()) == 1, text
    assert text.startswith("error: "), text
    return text


def save_random_bundle(out: Path) -> Path:
    """A valid bundle (6 input bands, random seeded weights) at ``out``."""
    import torch

    from forestnet_model.bundle import save_bundle
    from forestnet_model.model import ModelSpec, build_model

    torch.manual_seed(0)
    spec = ModelSpec(encoder=ENCODER)
    return save_bundle(build_model(spec).eval(), {"model": spec, "normalisation": NORMALISATION},
                       out)


def map_ready(folder: Path, world: Path, bundle: Path, **overrides: dict) -> Path:
    """A config under ``folder`` that passes ``forestnet map``'s checks; returns its path.

    The scene index is an empty file (the checks only look for it); ``bundle`` is copied
    to ``<workdir>/model/bundle``.
    """
    config = write_tiny_config(folder, world, **overrides)
    work = folder / "work"
    (work / "scenes.zarr").mkdir(parents=True, exist_ok=True)
    (work / "scenes.zarr" / "index.parquet").write_bytes(b"")
    shutil.copytree(bundle, work / "model" / "bundle")
    return config


def listing(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for folders): a snapshot to compare."""
    folder = Path(folder)
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def temporaries(folder: Path) -> list[str]:
    """Leftover temporary outputs (``pipeline.core.atomic`` and GeoPackage temp names)."""
    return sorted(str(p) for p in Path(folder).rglob("*") if ".tmp-" in p.name)
