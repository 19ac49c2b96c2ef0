"""``forestnet fetch-weights``: fill the Hugging Face cache with pretrained encoder weights.

Training with ``model.encoder_weights: imagenet`` (or ``timm:<model>.<tag>``) loads them
through timm from that cache; a cluster without internet gets a copy of the cache folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.support import ConfigOpt, _guard, _load, app, console
from flows.config.schema import ConfigError


@app.command("fetch-weights")
def fetch_weights(
    model: Annotated[str | None, typer.Option(
        help="timm model, e.g. tf_efficientnet_b2 (default: what the config's "
        "model.encoder_weights, or imagenet, means for its encoder)")] = None,
    tag: Annotated[str | None, typer.Option(
        help="timm pretrained tag, e.g. aa_in1k (default: timm's default for --model)")] = None,
    config: ConfigOpt = None,
) -> None:
    """Download pretrained encoder weights through timm into the Hugging Face cache
    (HF_HOME) and print where they are, to copy to machines without internet."""

    def body() -> None:
        from forestnet_model import pretrained_weights as pw

        name = _weights_name(model, tag, config)
        path = pw.fetch_weights(name)
        typer.echo(f"weights: timm:{pw.with_default_tag(name)} -> {path}")
        folder, variable = pw.cache_folder()
        typer.echo(f"cache: {folder}")
        console.print(f"for a machine without internet: copy {folder} there and set "
                      f"{variable}=<the copy> HF_HUB_OFFLINE=1", highlight=False, soft_wrap=True)

    _guard(body)


def _weights_name(model: str | None, tag: str | None, config: Path | None) -> str:
    """``<model>[.<tag>]`` from the options, else from the config's model section."""
    from forestnet_model import pretrained_weights as pw

    if model is not None:
        if "." in model and tag:
            raise ConfigError(f"--model {model} already names a tag; drop --tag {tag}")
        return f"{model}.{tag}" if tag else model
    spec = _load(config, None).model
    source = spec.encoder_weights if pw.is_hub_source(spec.encoder_weights) else pw.IMAGENET
    name = pw.timm_weights_name(spec.encoder, source)
    return f"{name.partition('.')[0]}.{tag}" if tag else name
