"""Encoder weights from timm's pretrained mechanism, through a Hugging Face cache on disk.

No network: the cache is built here as the hub lays it out (``models--timm--<name>/refs/main``
holding a commit, ``snapshots/<commit>/model.safetensors``) from a randomly initialised timm
model. huggingface_hub reads ``HF_HOME`` and ``HF_HUB_OFFLINE`` when it is imported, so every
load runs in a fresh process with those variables set, as a user's run would.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from flows.config.schema import load_config
from forestnet_model.pretrained_weights import (
    WeightsSourceError,
    WeightsUnavailableError,
    parse_weights_source,
    read_weights_file,
    to_encoder_names,
)
from forestnet_model.specs import ModelSpec
from pipeline.core.errors import ForestNetError

ROOT = Path(__file__).resolve().parents[2]
NAME = "tf_efficientnet_b2.aa_in1k"  # what `imagenet` means for efficientnet-b2
COMMIT = "0123456789abcdef0123456789abcdef01234567"
AUX = ("elevation", "slope")  # 6 bands + 2 aux channels: a stem of 8 input channels

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def hub_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An HF_HOME whose hub cache holds timm/NAME: a random timm model, BatchNorm statistics
    included (so that buffers are checked too, not only parameters)."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model(NAME.partition(".")[0], pretrained=False)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.normal_(1, 0.1)
                module.bias.normal_(0, 0.1)
    home = tmp_path_factory.mktemp("hf_home")
    repo = home / "hub" / f"models--timm--{NAME}"
    (repo / "snapshots" / COMMIT).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(repo / "snapshots" / COMMIT / "model.safetensors"))
    return home


def cached_file(home: Path) -> Path:
    return home / "hub" / f"models--timm--{NAME}" / "snapshots" / COMMIT / "model.safetensors"


def offline(home: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``args`` (python's, or the ``forestnet`` command's after "forestnet") offline, with
    ``home`` as HF_HOME."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TIMM_USE_OLD_CACHE")}
    env.update(HF_HOME=str(home), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    command = ([str(Path(sys.executable).with_name("forestnet")), *args[1:]]
               if args[0] == "forestnet" else [sys.executable, *args])
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=timeout)


# --- the source forms, without torch ------------------------------------------------------------


@pytest.mark.parametrize(("value", "parsed"), [
    ("imagenet", "imagenet"),
    ("ImageNet", "imagenet"),
    ("timm:efficientnet_b2.ra_in1k", "timm:efficientnet_b2.ra_in1k"),
    ("model/pretrained-encoder.safetensors", Path("model/pretrained-encoder.safetensors")),
    (Path("enc.pt"), Path("enc.pt")),
    (None, None),
])
def test_weights_source_forms(value, parsed):
    assert parse_weights_source(value) == parsed
    spec = ModelSpec(encoder_weights=value)
    assert spec.encoder_weights == parsed
    assert ModelSpec.model_validate_json(spec.model_dump_json()) == spec  # bundle.json


@pytest.mark.parametrize("value", ["timm:efficientnet_b2", "timm:", "hf-hub:timm/x.y",
                                   "smp:efficientnet-b2"])
def test_bad_source_lists_the_accepted_forms(value):
    with pytest.raises(ValidationError, match="encoder_weights") as err:
        ModelSpec(encoder_weights=value)
    for form in ("local file", "'imagenet'", "timm:<model>.<tag>"):
        assert form in str(err.value)


def test_imagenet_needs_known_weights_and_rgb_first():
    with pytest.raises(ValidationError, match="no timm ImageNet weights are known for encoder "
                                              "'mobilenet_v2'"):
        ModelSpec(encoder="mobilenet_v2", encoder_weights="imagenet")
    with pytest.raises(ValidationError, match="in_bands must start with red, green, blue"):
        ModelSpec(encoder_weights="imagenet", in_bands=("nir", "red", "green", "blue"))
    # A local file is the encoder's own: no such rule.
    assert ModelSpec(encoder="mobilenet_v2", encoder_weights="w.pt").encoder_weights


def test_a_missing_local_file_names_the_accepted_forms(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="file not found") as err:
        read_weights_file(tmp_path / "advprop")
    assert "imagenet" in str(err.value) and isinstance(err.value, ForestNetError)


def test_release_config_loads_with_the_papers_recipe():
    cfg = load_config(ROOT / "configs" / "release.yaml")
    assert (cfg.model.architecture, cfg.model.encoder) == ("fpn", "efficientnet-b2")
    assert cfg.model.encoder_weights == "imagenet" and cfg.model.fusion
    assert cfg.model.fusion_features == load_config(ROOT / "configs" / "demo.yaml").model \
        .fusion_features
    t = cfg.train
    assert (t.lr, t.grad_clip, t.crop, t.sda) == (1e-4, 0.5, 224, True)
    demo = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    assert "encoder_weights" not in demo["model"]  # the demo stays offline


def test_weights_of_another_architecture_are_refused_naming_the_tensor():
    import segmentation_models_pytorch as smp
    import timm

    state = timm.create_model("resnet18", pretrained=False).state_dict()
    encoder = smp.encoders.get_encoder("efficientnet-b2", in_channels=8, weights=None)
    with pytest.raises(WeightsSourceError, match="timm:resnet18.tv_in1k: .* tensors for the "
                                                 "encoder's 506"):
        to_encoder_names(state, encoder, "timm:resnet18.tv_in1k")


# --- loading through timm, offline ----------------------------------------------------------------

LOAD = """
import json, sys
from safetensors.torch import save_file
from forestnet_model.model import build_model, segmentation_net
from forestnet_model.pretrained_weights import weights_provenance
from forestnet_model.specs import ModelSpec
from forestnet_model.train import TrainSpec, train_model
from tests.model.synthetic_chips import synthetic_chip_store

out = sys.argv[1]
spec = ModelSpec(encoder_weights="imagenet", aux_bands={aux!r})
model = build_model(spec)
save_file({{k: v.contiguous() for k, v in segmentation_net(model).encoder.state_dict().items()}},
          out + "/encoder.safetensors")
chips = synthetic_chip_store(sys.argv[1] + "/chips.zarr")
train = TrainSpec(epochs=1, crop=32, batch_size=4, max_batches_per_epoch=1, num_threads=1,
                  device="cpu", progress="off")
bundle = train_model(chips, out + "/model", ModelSpec(encoder_weights="imagenet"), train)
meta = json.loads((bundle / "bundle.json").read_text())
print(json.dumps({{"provenance": weights_provenance("imagenet", "efficientnet-b2"),
                  "bundle": meta["provenance"]["encoder_weights"]}}))
"""


@pytest.fixture(scope="module")
def loaded(hub_home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("loaded")
    run = offline(hub_home, "-c", LOAD.format(aux=AUX), str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    return {"out": out, **json.loads(run.stdout.strip().splitlines()[-1])}


def test_imagenet_loads_the_cached_timm_weights_with_a_widened_stem(hub_home, loaded):
    import segmentation_models_pytorch as smp
    import timm
    import torch
    from safetensors.torch import load_file

    cached = load_file(str(cached_file(hub_home)))
    ours = load_file(str(loaded["out"] / "encoder.safetensors"))
    # The stem: RGB filters, then their mean for each extra channel, all times 3/8.
    rgb, stem = cached["conv_stem.weight"], ours["_conv_stem.weight"]
    assert stem.shape == (32, 8, 3, 3)
    torch.testing.assert_close(stem[:, :3], rgb * 3 / 8, rtol=0, atol=0)
    for c in range(3, 8):
        torch.testing.assert_close(stem[:, c], rgb.mean(dim=1) * 3 / 8)
    # Named pairs across the two naming schemes, buffers included.
    pairs = {"_bn0.running_var": "bn1.running_var",
             "_blocks.0._se_reduce.bias": "blocks.0.0.se.conv_reduce.bias",
             "_blocks.22._project_conv.weight": "blocks.6.1.conv_pwl.weight",
             "_bn1.running_mean": "bn2.running_mean"}
    for mine, theirs in pairs.items():
        torch.testing.assert_close(ours[mine], cached[theirs], rtol=0, atol=0)
    # Every tensor in its place: our encoder computes timm's features (at the network's own
    # 260 px, where smp's static padding is TensorFlow's "same" padding, as timm's).
    encoder = smp.encoders.get_encoder("efficientnet-b2", in_channels=8, weights=None)
    encoder.load_state_dict(ours)
    reference = timm.create_model(NAME.partition(".")[0], pretrained=False)
    reference.load_state_dict(cached)
    encoder.eval(), reference.eval()
    torch.manual_seed(0)
    x = torch.randn(1, 3, 260, 260)
    with torch.no_grad():
        # RGB x 8/3 and zeros elsewhere undo the 3/8 scale: the stem sees the RGB filters.
        feats = encoder(torch.cat([x * 8 / 3, torch.zeros(1, 5, 260, 260)], dim=1))
        expected = reference.blocks(reference.bn1(reference.conv_stem(x)))
    torch.testing.assert_close(feats[-1], expected, rtol=1e-4, atol=1e-4)


def test_bundle_records_where_the_weights_came_from(hub_home, loaded):
    digest = hashlib.sha256(cached_file(hub_home).read_bytes()).hexdigest()[:16]
    expected = (f"imagenet = timm:{NAME} (hf-hub timm/{NAME}@{COMMIT[:12]}, "
                f"sha256 {digest})")
    assert loaded["provenance"] == expected
    assert loaded["bundle"] == expected


FAIL = """
from forestnet_model.model import build_model
from forestnet_model.specs import ModelSpec
try:
    build_model(ModelSpec(encoder_weights="imagenet"))
except Exception as exc:
    print([c.__name__ for c in type(exc).__mro__])
    print(exc)
"""


def test_offline_without_a_cache_names_both_remedies(tmp_path):
    run = offline(tmp_path / "empty", "-c", FAIL)
    assert run.returncode == 0, run.stderr[-3000:]
    kinds, message = run.stdout.strip().split("\n", 1)
    assert "WeightsUnavailableError" in kinds and "ForestNetError" in kinds
    assert "\n" not in message
    assert f"timm:{NAME}" in message and "HF_HUB_OFFLINE" in message
    assert "forestnet fetch-weights --model tf_efficientnet_b2 --tag aa_in1k" in message
    assert "model.encoder_weights" in message


def test_fetch_weights_offline_without_a_cache_exits_2(tmp_path):
    run = offline(tmp_path / "empty", "forestnet", "fetch-weights")
    assert run.returncode == 2, run.stdout + run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    assert "forestnet fetch-weights" in lines[0] and "model.encoder_weights" in lines[0]


def test_fetch_weights_prints_the_cache_to_copy(hub_home):
    run = offline(hub_home, "forestnet", "fetch-weights", "--model",
                  "tf_efficientnet_b2", "--tag", "aa_in1k")
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"timm:{NAME} -> {cached_file(hub_home)}" in run.stdout
    assert f"cache: {hub_home}" in run.stdout
    assert f"copy {hub_home} there and set HF_HOME=<the copy> HF_HUB_OFFLINE=1" in run.stderr


def test_train_offline_without_the_weights_is_refused_before_a_cluster_starts(tmp_path):
    from tests.model.synthetic_chips import synthetic_chip_store

    work = tmp_path / "work"
    synthetic_chip_store(work / "chips.zarr")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"workdir": str(work),
                                      "model": {"encoder_weights": "imagenet"}}))
    run = offline(tmp_path / "empty", "forestnet", "train", "-c", str(config), timeout=120)
    assert run.returncode == 2, run.stdout + run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    assert f"timm:{NAME}" in lines[0] and "forestnet fetch-weights" in lines[0]
    assert "Traceback" not in run.stdout + run.stderr and not (work / "model").exists()
