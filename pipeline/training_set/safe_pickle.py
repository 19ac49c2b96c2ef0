"""Read pickled shapely geometries without running anything else a pickle asks for.

``pickle.load`` calls whatever callable a file names, so a crafted file can run code. This
unpickler resolves only what shapely's own pickles need and refuses every other global:

- shapely 2 pickles as ``shapely.io.from_wkb(<WKB bytes>)`` (old protocols encode the bytes
  with ``_codecs.encode(<text>, "latin1")``; linear rings use ``_unpickle_linearring``);
- shapely 1.x (the 2020 ForestNet release) pickles as ``<geometry class>()`` followed by
  ``__setstate__(<WKB bytes>)``; such a class resolves to a stand-in holding the WKB, which
  is parsed with ``shapely.from_wkb`` once loading is done.
"""

from __future__ import annotations

import io
import pickle

import shapely
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import _unpickle_linearring

from pipeline.core.errors import ForestNetError

#: A loss-region pickle is a few kB; refuse anything large before parsing it.
MAX_PICKLE_BYTES = 16 * 2**20
_SHAPELY1_CLASSES = {
    ("shapely.geometry.point", "Point"),
    ("shapely.geometry.linestring", "LineString"),
    ("shapely.geometry.polygon", "Polygon"),
    ("shapely.geometry.polygon", "LinearRing"),
    ("shapely.geometry.multipoint", "MultiPoint"),
    ("shapely.geometry.multilinestring", "MultiLineString"),
    ("shapely.geometry.multipolygon", "MultiPolygon"),
    ("shapely.geometry.collection", "GeometryCollection"),
}


class UnsafePickleError(ForestNetError, ValueError):
    """A pickle that is not a plain shapely geometry; the message names the file."""


class _LegacyGeometry:
    """Stand-in for a shapely 1.x geometry class: collects the WKB its pickle sets."""

    def __init__(self, *args: object) -> None:
        if args:
            raise pickle.UnpicklingError("shapely 1.x geometries are rebuilt without arguments")
        self.wkb: bytes | None = None

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, bytes):
            raise pickle.UnpicklingError("shapely 1.x geometry state is not WKB bytes")
        self.wkb = state


def _latin1_encode(text: object, encoding: str = "utf-8") -> bytes:
    # Protocol 0-2 pickles write bytes as _codecs.encode(text, "latin1"); nothing else.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("only latin1 text-to-bytes encoding is allowed")
    return text.encode("latin1")


def _from_wkb(data: object) -> BaseGeometry:
    if not isinstance(data, bytes | str):
        raise pickle.UnpicklingError("from_wkb needs WKB bytes")
    return shapely.from_wkb(data)


_ALLOWED = {
    ("shapely.io", "from_wkb"): _from_wkb,
    ("shapely", "from_wkb"): _from_wkb,
    ("shapely.wkb", "loads"): _from_wkb,
    ("shapely.geometry.polygon", "_unpickle_linearring"): _unpickle_linearring,
    ("_codecs", "encode"): _latin1_encode,
}


class _GeometryUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if (module, name) in _SHAPELY1_CLASSES:
            return _LegacyGeometry
        raise pickle.UnpicklingError(f"refused global {module}.{name} (only shapely geometries)")

    def persistent_load(self, pid: object) -> object:
        raise pickle.UnpicklingError("refused persistent id")


def loads_geometry(data: bytes, name: str = "<bytes>") -> BaseGeometry:
    """A shapely geometry from pickle bytes; anything else raises ``UnsafePickleError``."""
    if len(data) > MAX_PICKLE_BYTES:
        raise UnsafePickleError(f"{name}: {len(data)} bytes is too large for a geometry pickle")
    try:
        obj = _GeometryUnpickler(io.BytesIO(data)).load()
        if isinstance(obj, _LegacyGeometry):
            if obj.wkb is None:
                raise pickle.UnpicklingError("shapely 1.x geometry without WKB state")
            obj = shapely.from_wkb(obj.wkb)
    except UnsafePickleError:
        raise
    except Exception as exc:  # unpickling and WKB parsing raise many error types
        raise UnsafePickleError(f"{name}: not a safe shapely geometry pickle ({exc})") from None
    if not isinstance(obj, BaseGeometry):
        raise UnsafePickleError(f"{name}: pickle holds {type(obj).__name__}, not a geometry")
    return obj


