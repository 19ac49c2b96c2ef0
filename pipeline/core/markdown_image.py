"""PNG images as markdown that carries its own pixels (a base64 ``data:`` URI).

Prefect's image artifacts need an http URL, which a run on a laptop or a cluster node has
not got; a markdown artifact with the PNG inlined shows in the UI wherever it is viewed.
Large images are linked by path instead, so a national map does not bloat the database.
"""

from __future__ import annotations

import base64
from pathlib import Path

#: Largest PNG inlined (bytes); base64 adds a third, and every artifact lands in the
#: Prefect database.
MAX_EMBED_BYTES = 1_500_000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for the PNG bytes ``png``."""
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("not PNG bytes (no PNG signature); save the figure with format='png'")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def png_markdown(png: bytes, alt: str) -> str:
    """``![alt](data:image/png;base64,...)``: the image, self-contained."""
    return f"![{_alt(alt)}]({png_data_uri(png)})"


def png_file_markdown(path: Path, alt: str, max_bytes: int = MAX_EMBED_BYTES) -> str:
    """The PNG at ``path`` inlined, or, past ``max_bytes``, a line saying so and its path."""
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        return (f"{_alt(alt)}: {size / 1e6:.1f} MB, too large to embed (limit "
                f"{max_bytes / 1e6:.1f} MB); open `{path}`")
    return png_markdown(path.read_bytes(), alt)


def _alt(text: str) -> str:
    # Brackets would end the alt text early and break the image syntax.
    return text.replace("[", "(").replace("]", ")")
