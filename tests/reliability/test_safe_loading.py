"""R4, safe loading: nothing the pipeline reads can make it run code.

- (a) A static scan (``ast``) of pipeline/, forestnet_model/ and flows/: no pickle loading
  except through the restricted unpickler (pipeline/training_set/safe_pickle.py),
  ``torch.load`` only with ``weights_only=True``, no ``np.load(allow_pickle=True)``,
  ``pandas.read_pickle``, ``joblib``/``dill``/``marshal``/``shelve`` loads.
  Adding an unsafe call fails this test.
- (b) A malicious ``forest_loss_region.pkl`` (its ``__reduce__`` runs a shell command that
  creates a marker file) is refused naming the file; the marker never appears.
- (c) A malicious training ``checkpoint.pt`` in a model folder: resuming training refuses it
  (``weights_only``) before anything is trained or written; no marker.
- (d) A bundle whose weights file is a pickle, not safetensors: ``load_bundle`` and
  ``forestnet map`` refuse it naming the file; no marker.
"""

from __future__ import annotations

import ast
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "forestnet_model", "flows")
SAFE_UNPICKLER = Path("pipeline/training_set/safe_pickle.py")

# --- (a) the static scan ------------------------------------------------------------------------

#: Loaders that run code from the data they read, whatever their arguments.
ALWAYS_UNSAFE = {
    "pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads",
    "_pickle.Unpickler", "cPickle.load", "cPickle.loads", "dill.load", "dill.loads",
    "joblib.load", "marshal.load", "marshal.loads", "shelve.open", "pandas.read_pickle",
}
#: Loaders that are safe only with ``weights_only=True``.
TORCH_LOADS = {"torch.load", "torch.serialization.load"}


def _aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> qualified name, from every import in the module (any scope)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _qualified(node: ast.expr, aliases: dict[str, str]) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([aliases.get(node.id, node.id), *reversed(parts)])


def _keyword_is(call: ast.Call, name: str, value: object) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value
               for k in call.keywords)


def unsafe_loads(source: str, path: Path) -> list[str]:
    """``file:line: call`` for every unsafe deserialisation in ``source``."""
    tree = ast.parse(source)
    aliases = _aliases(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and path != SAFE_UNPICKLER:
            for base in node.bases:
                if _qualified(base, aliases) in ("pickle.Unpickler", "_pickle.Unpickler"):
                    found.append(f"{path}:{node.lineno}: class {node.name}(Unpickler)")
        if not isinstance(node, ast.Call):
            continue
        name = _qualified(node.func, aliases)
        if name is None:
            continue
        if name in TORCH_LOADS:
            bad = not _keyword_is(node, "weights_only", True)
        elif name == "numpy.load":  # allow_pickle defaults to False; only False is safe
            bad = len(node.args) > 2 or any(
                k.arg in ("allow_pickle", None) and not _keyword_is(node, "allow_pickle", False)
                for k in node.keywords)
        else:
            bad = name in ALWAYS_UNSAFE
        if bad:
            found.append(f"{path}:{node.lineno}: {name}")
    return found


def _sources() -> list[Path]:
    return sorted(p.relative_to(ROOT) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_no_module_deserialises_unsafely() -> None:
    sources = _sources()
    assert len(sources) > 40 and SAFE_UNPICKLER in sources
    found = [hit for path in sources for hit in unsafe_loads((ROOT / path).read_text(), path)]
    assert found == [], "unsafe deserialisation:\n" + "\n".join(found)


def test_torch_loads_are_found_and_all_weights_only() -> None:
    """The scan sees the real loads: every ``torch.load`` in the code passes as safe."""
    calls = []
    for path in _sources():
        tree = ast.parse((ROOT / path).read_text())
        aliases = _aliases(tree)
        calls += [(str(path), _keyword_is(n, "weights_only", True)) for n in ast.walk(tree)
                  if isinstance(n, ast.Call) and _qualified(n.func, aliases) in TORCH_LOADS]
    assert calls and all(ok for _, ok in calls), calls


@pytest.mark.parametrize("source", [
    "import pickle\npickle.load(f)",
    "import pickle as pk\nobj = pk.loads(data)",
    "from pickle import load\nload(f)",
    "from pickle import Unpickler as U\nU(f).load()",
    "import pickle\nclass Mine(pickle.Unpickler):\n    pass",
    "import torch\ntorch.load(path)",
    "import torch\ntorch.load(path, weights_only=False)",
    "from torch import load\nload(path, map_location='cpu')",
    "import numpy as np\nnp.load(path, allow_pickle=True)",
    "import numpy\nnumpy.load(path, **options)",
    "import torch.serialization\ntorch.serialization.load(path)",
    "import pandas as pd\npd.read_pickle(path)",
    "import joblib\njoblib.load(path)",
    "def f():\n    import dill\n    return dill.loads(b)",
])
def test_the_scan_catches_unsafe_calls(source: str) -> None:
    assert unsafe_loads(source, Path("flows/new.py")), source


@pytest.mark.parametrize("source", [
    "import torch\ntorch.load(path, map_location='cpu', weights_only=True)",
    "import numpy as np\nnp.load(path)\nnp.load(path, allow_pickle=False)",
    "from safetensors.torch import load_file\nload_file(path)",
    "import json\njson.loads(text)",
])
def test_the_scan_passes_safe_calls(source: str) -> None:
    assert unsafe_loads(source, Path("flows/new.py")) == []


# --- the payload ----------------------------------------------------------------------------------


class ShellPayload:
    """Runs ``touch <marker>`` when unpickled: what a malicious file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def test_the_payload_is_live(tmp_path: Path) -> None:
    """A plain ``pickle.loads`` of the payload does create the marker (so its absence in
    the other tests means the loader refused it, not that the payload was inert)."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(ShellPayload(marker)))
    assert marker.exists()


# --- (b) forest_loss_region.pkl ----------------------------------------------------------------


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_malicious_loss_region_pickle_is_refused(tmp_path: Path, protocol: int) -> None:
    from pipeline.imagery.views import ChipSpec
    from pipeline.training_set.release_import import plan_release
    from pipeline.training_set.safe_pickle import UnsafePickleError, loads_geometry
    from tests.release_fixture import EXAMPLES, write_release

    release = write_release(tmp_path / "release", EXAMPLES[:2])
    marker = tmp_path / "pwned"
    pkl = release / "examples" / EXAMPLES[0].folder / "forest_loss_region.pkl"
    pkl.write_bytes(pickle.dumps(ShellPayload(marker), protocol=protocol))

    with pytest.raises(UnsafePickleError) as info:
        loads_geometry(pkl.read_bytes(), str(pkl))
    assert str(pkl) in str(info.value) and "refused global" in str(info.value)
    events, problems = plan_release(str(release), ChipSpec())
    assert len(events) == 1 and len(problems) == 1  # the other example is imported
    assert str(pkl) in problems[0] and "refused global" in problems[0]
    assert not marker.exists()


# --- (c) training checkpoint -------------------------------------------------------------------


def _tiny_chip_store(folder: Path) -> Path:
    import geopandas as gpd
    from shapely.geometry import box

    from pipeline.core.drivers import DRIVER_CLASSES
    from pipeline.imagery.views import CHIP_BANDS, ChipSpec, EventChip, chip_geobox
    from pipeline.training_set.chip_store import (
        finalize_chip_store,
        init_chip_store,
        write_chip_batch,
    )

    spec = ChipSpec(size=32, max_single_views=0)
    splits = ["train", "train", "val", "test"]
    events = gpd.GeoDataFrame({
        "event_id": [f"e{i}" for i in range(4)], "loss_year": [2015] * 4,
        "label": DRIVER_CLASSES, "merged_label": DRIVER_CLASSES, "split": splits,
        "geometry": [box(113.5 + 0.01 * i, -1.95, 113.5005 + 0.01 * i, -1.9495)
                     for i in range(4)],
    }, crs="EPSG:4326")
    rng = np.random.default_rng(0)
    chips = []
    for geom in events.geometry:
        mask = np.zeros((32, 32), np.uint8)
        mask[12:20, 12:20] = 1
        image = rng.uniform(0, 0.3, (1, len(CHIP_BANDS), 32, 32)).astype(np.float32)
        chips.append(EventChip(chip_geobox(geom, spec), image, ["composite"], [0.0], ["s"],
                               mask, geom))
    final = folder / "chips.zarr"
    init_chip_store(final, events, spec, (), ())
    write_chip_batch(final, 0, chips, [np.zeros((0, 32, 32))] * 4, [np.zeros(0)] * 4)
    return finalize_chip_store(final, [(0, 4)])


@pytest.mark.usefixtures("one_torch_thread")
def test_malicious_checkpoint_is_refused_on_resume(tmp_path: Path) -> None:
    import torch

    from forestnet_model.specs import ModelSpec, TrainSpec
    from forestnet_model.train import train_model

    chips = _tiny_chip_store(tmp_path)
    out = tmp_path / "model"
    out.mkdir()
    marker = tmp_path / "pwned"
    checkpoint = out / "checkpoint.pt"
    torch.save({"model": {}, "optimiser": {}, "epoch": 0, "best_f1": 0.0, "stale": 0,
                "payload": ShellPayload(marker)}, checkpoint)
    planted = checkpoint.read_bytes()
    control = tmp_path / "control.pt"  # the same file, loaded the unsafe way, runs the payload
    torch.save(ShellPayload(tmp_path / "control-ran"), control)
    torch.load(control, weights_only=False)
    assert (tmp_path / "control-ran").exists()

    spec = TrainSpec(epochs=1, batch_size=2, crop=32, num_threads=1, progress="off")
    with pytest.raises(pickle.UnpicklingError) as info:
        train_model(chips, out, ModelSpec(encoder="resnet18"), spec)
    assert "Weights only load failed" in str(info.value)
    assert "system" in str(info.value)  # torch names the global it refused
    assert not marker.exists()
    assert checkpoint.read_bytes() == planted
    assert not (out / "bundle").exists() and not (out / "best.safetensors").exists()


# --- (d) bundle weights that are a pickle ---------------------------------------------------------


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.reliability.bad_input_helpers import save_random_bundle

    return save_random_bundle(tmp_path_factory.mktemp("bundle") / "bundle")


def _pickled_weights(kind: str, path: Path, marker: Path) -> None:
    import torch

    payload = {"encoder.conv1.weight": ShellPayload(marker)}
    if kind == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))


@pytest.mark.parametrize("kind", ["torch", "pickle"])
def test_pickled_bundle_weights_are_refused(bundle: Path, tmp_path: Path, kind: str) -> None:
    from forestnet_model.bundle import WEIGHTS, BundleError, load_bundle

    folder = shutil.copytree(bundle, tmp_path / "bundle")
    marker = tmp_path / "pwned"
    _pickled_weights(kind, folder / WEIGHTS, marker)
    with pytest.raises(BundleError) as info:
        load_bundle(folder)
    assert str(folder / WEIGHTS) in str(info.value)
    assert not marker.exists()


def test_map_refuses_pickled_bundle_weights(tiny_world: Path, bundle: Path,
                                            tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flows.cli.app import app
    from forestnet_model.bundle import WEIGHTS
    from tests.reliability.bad_input_helpers import map_ready, one_line_error

    config = map_ready(tmp_path, tiny_world.parent, bundle)
    weights = tmp_path / "work" / "model" / "bundle" / WEIGHTS
    marker = tmp_path / "pwned"
    _pickled_weights("torch", weights, marker)
    text = one_line_error(CliRunner().invoke(app, ["map", "--config", str(config)]))
    assert str(weights) in text and "weights do not match" in text
    assert not marker.exists() and not (tmp_path / "work" / "maps").exists()
