"""Where encoder weights come from: a local file, or timm's pretrained weights.

``ModelSpec.encoder_weights`` is one of

- a local file: a safetensors file or torch state dict *of the encoder* (as
  ``forestnet pretrain`` writes), loaded as it is;
- ``imagenet``: the ImageNet weights that fit the encoder (:data:`IMAGENET`), loaded through
  timm's own mechanism (``timm.create_model(name, pretrained=True)``, which downloads
  ``timm/<model>.<tag>`` from the Hugging Face hub into its cache, honouring ``HF_HOME`` and
  ``HF_HUB_OFFLINE``);
- ``timm:<model>.<tag>``: any timm weights whose network is the encoder's.

Why ``imagenet`` means ``tf_efficientnet_b2.aa_in1k`` for our ``efficientnet-b2``: smp's
``efficientnet-b2`` (the paper's encoder, and that of every bundle so far) is the port of
Google's TensorFlow EfficientNet, with TensorFlow's "same" padding and BatchNorm eps 1e-3.
timm's ``tf_efficientnet_b2`` is the same network (given the same weights, both compute the
same features to the last bit at the network's 260 px), and its ``aa_in1k`` weights are the
EfficientNet authors' ImageNet-1k checkpoint, from the family smp's own ``imagenet`` weights
for this encoder were converted from. timm's ``efficientnet_b2.ra_in1k`` was trained with
PyTorch's symmetric padding and eps 1e-5: it loads (``timm:efficientnet_b2.ra_in1k``), but
into a network that pads differently. Switching the encoder to smp's ``tu-efficientnet_b2``
instead would change every bundle's weight names, so the encoder stays and the weights are
renamed: timm names the tensors ``blocks.<stage>.<block>.conv_pw``, smp
``_blocks.<n>._expand_conv``, but both list the same tensors in the same order with the same
shapes, so they are paired in order, each pair checked for its shape and kind (weight, bias,
running mean...). Encoders whose names match timm's (smp's resnets, ``timm-efficientnet-*``,
``tu-*`` under ``model.``) are matched by name. The stem is widened to the model's bands and
aux channels by :func:`forestnet_model.model.load_encoder_weights`.

Torch and timm are imported inside the functions: the CLI imports this module (through
``ModelSpec``) and must start without them.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.core.errors import ForestNetError

if TYPE_CHECKING:
    import torch
    from torch import nn

IMAGENET = "imagenet"
TIMM_PREFIX = "timm:"
ACCEPTED = ("a local file (safetensors or torch state dict of the encoder), 'imagenet', or "
            "'timm:<model>.<tag>' (e.g. timm:tf_efficientnet_b2.aa_in1k)")
#: ImageNet filters expect red, green, blue in this order in the first input channels.
RGB_BANDS = ("red", "green", "blue")
#: smp encoder -> the timm weights ``imagenet`` means for it (``tu-<model>``: timm's default
#: tag of <model>). resnets: torchvision's weights, as smp's own ``imagenet``.
IMAGENET_WEIGHTS = {
    **{f"efficientnet-b{i}": f"tf_efficientnet_b{i}.aa_in1k" for i in range(8)},
    **{f"resnet{d}": f"resnet{d}.tv_in1k" for d in (18, 34, 50, 101, 152)},
}
_TIMM_NAME = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+_-]+:")  # "hf-hub:", "s3:"; not "C:" (a drive)
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm looks for, in order


class WeightsSourceError(ForestNetError, ValueError):
    """``encoder_weights`` names no source that fits the encoder."""


class WeightsUnavailableError(ForestNetError, RuntimeError):
    """The weights cannot be had here: no such file, or not cached and no download."""


def parse_weights_source(value: str | Path | None) -> str | Path | None:
    """``imagenet`` or ``timm:<model>.<tag>`` (as str), a local file (as Path), or None."""
    if value is None or isinstance(value, Path):
        return value
    if not isinstance(value, str):
        raise WeightsSourceError(f"encoder_weights must be {ACCEPTED}, not {value!r}")
    text = value.strip()
    if text.lower() == IMAGENET:
        return IMAGENET
    if text.startswith(TIMM_PREFIX):
        name = text[len(TIMM_PREFIX):]
        if not _TIMM_NAME.fullmatch(name):
            raise WeightsSourceError(f"encoder_weights {value!r}: expected timm:<model>.<tag>, "
                                     "e.g. timm:tf_efficientnet_b2.aa_in1k (the tag pins the "
                                     "weights); accepted: " + ACCEPTED)
        return TIMM_PREFIX + name
    if _SCHEME.match(text):
        raise WeightsSourceError(f"encoder_weights {value!r}: unknown source; accepted: "
                                 + ACCEPTED)
    return Path(text)


def is_hub_source(value: str | Path | None) -> bool:
    """Whether the weights come through timm (``imagenet`` or ``timm:...``)."""
    return isinstance(value, str) and (value == IMAGENET or value.startswith(TIMM_PREFIX))


def check_hub_source(source: str, encoder: str, in_bands: tuple[str, ...]) -> None:
    """Spec-time checks, without torch: ``imagenet`` knows the encoder, and the first
    bands are RGB (the pretrained stem filters are red, green, blue in that order)."""
    if source == IMAGENET:
        _require_imagenet_known(encoder)
    if tuple(in_bands[:3]) != RGB_BANDS:
        raise WeightsSourceError(f"encoder_weights {source}: pretrained stem filters are RGB, "
                                 f"so in_bands must start with red, green, blue (not "
                                 f"{', '.join(in_bands[:3])})")


def _require_imagenet_known(encoder: str) -> None:
    if not (encoder in IMAGENET_WEIGHTS or encoder.startswith("tu-")):
        raise WeightsSourceError(
            f"encoder_weights imagenet: no timm ImageNet weights are known for encoder "
            f"{encoder!r} (known: {', '.join(IMAGENET_WEIGHTS)}, tu-<timm model>); name "
            "them as timm:<model>.<tag> or use a local file")


def timm_weights_name(encoder: str, source: str) -> str:
    """The timm ``<model>.<tag>`` that a hub source means for ``encoder``."""
    if source.startswith(TIMM_PREFIX):
        return source[len(TIMM_PREFIX):]
    _require_imagenet_known(encoder)
    if encoder.startswith("tu-"):
        return with_default_tag(encoder[3:])
    return IMAGENET_WEIGHTS[encoder]


def with_default_tag(model: str) -> str:
    """``model`` with timm's default pretrained tag when it has none; unknown names and
    tags raise, listing the pretrained ones."""
    import timm
    from timm.models import get_pretrained_cfg

    arch, _, tag = model.partition(".")
    if not timm.is_model(arch):
        raise WeightsSourceError(f"timm has no model {arch!r}")
    tagged = timm.list_pretrained(f"{arch}.*")
    default = get_pretrained_cfg(arch) if tagged else None
    if default is None:
        raise WeightsSourceError(f"timm has no pretrained weights for {arch!r}")
    name = model if tag else f"{arch}.{default.tag}"
    if name not in tagged:
        raise WeightsSourceError(f"timm has no weights {name!r}; pretrained: {', '.join(tagged)}")
    return name


def timm_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The weights of timm's ``<model>.<tag>``, loaded by timm from the hub cache (downloaded
    when allowed), classifier left out."""
    import timm
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    name = with_default_tag(name)
    try:
        model = timm.create_model(name, pretrained=True)
    except (LocalEntryNotFoundError, HfHubHTTPError) as exc:
        raise WeightsUnavailableError(_unavailable(name, exc)) from exc
    classifier = model.pretrained_cfg.get("classifier") or ()
    heads = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    return {k: v for k, v in model.state_dict().items()
            if not any(k.startswith(f"{head}.") for head in heads)}


def to_encoder_names(state: dict[str, torch.Tensor], encoder: nn.Module, origin: str,
                     n_rgb: int = 3) -> dict[str, torch.Tensor]:
    """timm's tensors under the encoder's names: by name when every name matches (maybe
    under smp's ``model.`` prefix), else paired in order (smp's EfficientNet port)."""
    own = encoder.state_dict()
    by_name = {k: state.get(k, state.get(k.removeprefix("model."))) for k in own}
    if all(v is not None for v in by_name.values()):
        return by_name
    if len(own) != len(state):
        raise WeightsSourceError(f"{origin}: {len(state)} tensors for the encoder's "
                                 f"{len(own)}; choose weights of the encoder's architecture")
    for (name, target), (theirs, tensor) in zip(own.items(), state.items(), strict=True):
        kind, their_kind = name.rsplit(".", 1)[-1], theirs.rsplit(".", 1)[-1]
        if kind != their_kind or not _fits(tensor.shape, target.shape, n_rgb):
            raise WeightsSourceError(
                f"{origin}: {theirs} {tuple(tensor.shape)} does not fit the encoder's {name} "
                f"{tuple(target.shape)}; choose weights of the encoder's architecture")
    return dict(zip(own, state.values(), strict=True))


def _fits(theirs: tuple[int, ...], ours: tuple[int, ...], n_rgb: int) -> bool:
    # The stem may take more channels than RGB: load_encoder_weights widens it.
    if len(theirs) == 4 and len(ours) == 4 and theirs[1] == n_rgb and ours[1] > n_rgb:
        return theirs[0] == ours[0] and theirs[2:] == ours[2:]
    return tuple(theirs) == tuple(ours)


def read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """A local safetensors file or torch state dict (never unpickles other objects)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailableError(f"model.encoder_weights: file not found: {path}; "
                                      f"accepted: {ACCEPTED}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def encoder_state(source: str | Path, encoder: nn.Module, encoder_name: str | None,
                  n_rgb: int = 3) -> tuple[dict[str, torch.Tensor], str]:
    """The weights ``source`` names, under the encoder's tensor names, and where they are
    from (for messages). Local files are taken as they are (a state dict of the encoder)."""
    source = parse_weights_source(source)
    if isinstance(source, Path):
        return read_weights_file(source), str(source)
    if encoder_name is None and source == IMAGENET:
        raise WeightsSourceError("encoder_weights imagenet needs the encoder's name")
    name = timm_weights_name(encoder_name or "", source)
    origin = f"timm:{name}"
    return to_encoder_names(timm_state_dict(name), encoder, origin, n_rgb), origin


# --- the Hugging Face cache ------------------------------------------------------------------


def hub_repo(name: str) -> str:
    """The hub repository timm loads ``<model>.<tag>`` from (``timm/<model>.<tag>``)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(with_default_tag(name))
    return cfg.hf_hub_id or f"timm/{name}"


def cached_weights_file(name: str) -> Path | None:
    """The cached weights file of ``<model>.<tag>``, or None; never downloads."""
    from huggingface_hub import try_to_load_from_cache

    repo = hub_repo(name)
    for filename in _HUB_FILES:
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            return Path(found)
    return None


def require_offline_weights(source: str | Path | None, encoder: str) -> None:
    """With ``HF_HUB_OFFLINE`` set, hub weights must already be cached: say so (with both
    remedies) before a cluster starts, not from a worker after it has."""
    from huggingface_hub import constants

    if not is_hub_source(source) or not constants.HF_HUB_OFFLINE:
        return
    name = with_default_tag(timm_weights_name(encoder, str(source)))
    if cached_weights_file(name) is None:
        raise WeightsUnavailableError(_unavailable(name, RuntimeError("not cached")))


def fetch_weights(name: str) -> Path:
    """Fill the hub cache with ``<model>.<tag>`` through timm; the cached file's path."""
    name = with_default_tag(name)
    timm_state_dict(name)  # timm downloads, and checks that the weights load
    found = cached_weights_file(name)
    if found is None:  # timm took another route (an old torch-hub cache): say so
        raise WeightsUnavailableError(f"timm:{name} loaded, but not from the Hugging Face "
                                      "cache; unset TIMM_USE_OLD_CACHE and rerun")
    return found


def cache_folder() -> tuple[Path, str]:
    """The folder to copy to a machine without internet, and the variable that points at
    the copy there: ``HF_HOME``, or ``HF_HUB_CACHE`` when that is set outside it."""
    from huggingface_hub import constants

    home, hub = Path(constants.HF_HOME), Path(constants.HF_HUB_CACHE)
    return (home, "HF_HOME") if hub.is_relative_to(home) else (hub, "HF_HUB_CACHE")


def _unavailable(name: str, exc: Exception) -> str:
    from huggingface_hub import constants

    arch, _, tag = name.partition(".")
    why = ("HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE
           else str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    return (f"encoder weights timm:{name} are not in the Hugging Face cache "
            f"{constants.HF_HUB_CACHE} and cannot be downloaded ({why}). Either run "
            f"`forestnet fetch-weights --model {arch} --tag {tag}` on a machine with internet "
            "and copy the cache folder it prints here (HF_HOME=<the copy> HF_HUB_OFFLINE=1), "
            "or point model.encoder_weights at a local weights file")


# --- provenance --------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_provenance(source: str | Path | None, encoder: str) -> str:
    """What a bundle records about its initial encoder weights: the source, and the file's
    hash (hub weights: also the repository and commit they came from); '' for none."""
    source = parse_weights_source(source)
    if source is None:
        return ""
    if isinstance(source, Path):
        return f"{source.resolve()} (sha256 {file_sha256(source)[:16]})"
    name = timm_weights_name(encoder, source)
    said = f"imagenet = timm:{name}" if source == IMAGENET else f"timm:{name}"
    found = cached_weights_file(name)
    if found is None:
        return f"{said} (hf-hub {hub_repo(name)}, not in the cache now)"
    commit = found.parent.name[:12]  # .../snapshots/<commit>/<file>
    return f"{said} (hf-hub {hub_repo(name)}@{commit}, sha256 {file_sha256(found)[:16]})"
