"""PNG images inlined in markdown as data URIs, or linked when too large."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.core.markdown_image import png_data_uri, png_file_markdown, png_markdown

IMAGE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\(data:image/png;base64,(?P<data>[A-Za-z0-9+/=]+)\)$")


def _png(size: int = 16) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_markdown_decodes_back_to_the_exact_png_bytes():
    png = _png()
    match = IMAGE.match(png_markdown(png, "quick [look]"))
    assert match, "not an inline PNG image"
    assert match["alt"] == "quick (look)"  # brackets would end the alt text early
    assert base64.b64decode(match["data"]) == png
    assert Image.open(io.BytesIO(base64.b64decode(match["data"]))).size == (16, 16)


def test_non_png_bytes_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="format='png'"):
        png_data_uri(b"GIF89a....")


def test_a_small_file_is_embedded_and_a_large_one_linked(tmp_path: Path):
    path = tmp_path / "map.png"
    png = _png(64)
    path.write_bytes(png)
    embedded = png_file_markdown(path, "map")
    assert base64.b64decode(IMAGE.match(embedded)["data"]) == png
    linked = png_file_markdown(path, "map", max_bytes=len(png) - 1)
    assert "data:" not in linked
    assert "too large to embed" in linked and f"`{path}`" in linked
