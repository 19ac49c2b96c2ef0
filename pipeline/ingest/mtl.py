"""Scene metadata from any Collection 2 MTL flavour (txt, json, xml) and the products we accept.

USGS ships the same metadata three ways: ODL text (``_MTL.txt``), JSON (``_MTL.json``,
every value a string) and XML (``_MTL.xml``, one element per group and key). All three
parse into the same nested dict, so they give equal ``SceneMetadata``.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ElementTree
from datetime import datetime
from pathlib import Path

from pipeline.ingest.landsat import (
    MULTISPECTRAL_BANDS,
    PAN_BAND,
    PRODUCT_ID_RE,
    MTLError,
    SceneInputError,
    SceneMetadata,
)

#: MTL file suffixes, in order of preference (the text is what every USGS tool reads).
MTL_SUFFIXES = {"_MTL.txt": "txt", "_MTL.json": "json", "_MTL.xml": "xml"}

#: Levels we ingest: terrain-corrected L1 (with pan) and Level-2 surface reflectance.
SUPPORTED_LEVELS = ("L1TP", "L1GT", "L2SP", "L2SR")


class UnsupportedProductError(SceneInputError):
    """A readable product of a type the pipeline refuses (Landsat 7, MSS, L1GS, ...)."""


def mtl_format(name: str) -> str | None:
    """``"txt"``, ``"json"`` or ``"xml"`` for an MTL file name, else None."""
    lower = name.lower()
    for suffix, fmt in MTL_SUFFIXES.items():
        if lower.endswith(suffix.lower()):
            return fmt
    return None


def preferred_mtl(names: list[str]) -> str | None:
    """The MTL to read among file names: txt, else json, else xml (None when there is none)."""
    ranked = sorted(
        (list(MTL_SUFFIXES.values()).index(fmt), name)
        for name in names
        if (fmt := mtl_format(name)) is not None
    )
    return ranked[0][1] if ranked else None



def parse_odl(text: str) -> dict:
    """Parse USGS ODL (``GROUP = ... END_GROUP``) into nested dicts with typed values."""
    root: dict = {}
    stack = [root]
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line == "END":
            continue
        if "=" not in line:
            raise MTLError(f"line {lineno}: expected 'KEY = VALUE', got {line!r}")
        key, value = (part.strip() for part in line.split("=", 1))
        if key == "GROUP":
            group: dict = {}
            stack[-1][value] = group
            stack.append(group)
        elif key == "END_GROUP":
            if len(stack) == 1:
                raise MTLError(f"line {lineno}: END_GROUP without GROUP")
            stack.pop()
        else:
            stack[-1][key] = odl_value(value)
    if len(stack) > 1:
        # A truncated file (interrupted download) ends inside a group.
        raise MTLError(f"end of text inside {len(stack) - 1} unclosed GROUP(s); truncated file?")
    return root


def odl_value(value: str) -> str | int | float:
    """An ODL value typed as USGS writes it: quoted -> str, else int, float or str."""
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


def find_mtl(folder: Path) -> Path:
    """The one MTL of a product folder to read (txt, else json, else xml), or a clear error."""
    folder = Path(folder)
    names = [p.name for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
    found = preferred_mtl(names)
    if found is None:
        raise MTLError(
            f"{folder}: no *_MTL.txt (nor _MTL.json / _MTL.xml); "
            "a Landsat product folder holds one"
        )
    fmt = mtl_format(found)
    same = [n for n in names if mtl_format(n) == fmt]
    if len(same) > 1:
        raise MTLError(f"{folder}: {len(same)} *_MTL.{fmt} files; a product folder holds one")
    return folder / found


def metadata_from_tree(tree: dict, where: str) -> SceneMetadata:
    """``SceneMetadata`` from a parsed MTL (ODL, JSON or XML: the same groups and keys)."""
    try:
        return _scene_metadata(tree)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MTLError(f"{where}: incomplete or invalid MTL ({exc})") from exc


def _scene_metadata(tree: dict) -> SceneMetadata:
    meta = tree["LANDSAT_METADATA_FILE"]
    contents = meta["PRODUCT_CONTENTS"]
    image = meta["IMAGE_ATTRIBUTES"]
    projection = meta["PROJECTION_ATTRIBUTES"]
    level = contents["PROCESSING_LEVEL"]
    product_id = contents["LANDSAT_PRODUCT_ID"]
    if not PRODUCT_ID_RE.match(str(product_id)):
        raise ValueError(f"LANDSAT_PRODUCT_ID {product_id!r} is not a Collection 2 product id")

    band_files: dict[str, str] = {}
    for number, name in MULTISPECTRAL_BANDS.items():
        key = f"FILE_NAME_BAND_{number}"
        if key in contents:
            band_files[name] = contents[key]
    if f"FILE_NAME_BAND_{PAN_BAND}" in contents and level.startswith("L1"):
        band_files["pan"] = contents[f"FILE_NAME_BAND_{PAN_BAND}"]
    qa_key = "FILE_NAME_QUALITY_L1_PIXEL"
    if qa_key in contents:
        band_files["qa_pixel"] = contents[qa_key]

    rescaling = _rescaling(meta, level)
    acquired = datetime.fromisoformat(
        f"{image['DATE_ACQUIRED']}T{str(image['SCENE_CENTER_TIME']).rstrip('Z')[:15]}"
    )
    ul = lr = shape = None
    if "CORNER_UL_PROJECTION_X_PRODUCT" in projection:
        ul = (
            float(projection["CORNER_UL_PROJECTION_X_PRODUCT"]),
            float(projection["CORNER_UL_PROJECTION_Y_PRODUCT"]),
        )
        lr = (
            float(projection["CORNER_LR_PROJECTION_X_PRODUCT"]),
            float(projection["CORNER_LR_PROJECTION_Y_PRODUCT"]),
        )
    if "REFLECTIVE_LINES" in projection:
        shape = (int(projection["REFLECTIVE_LINES"]), int(projection["REFLECTIVE_SAMPLES"]))
    return SceneMetadata(
        product_id=product_id,
        processing_level=level,
        spacecraft=str(image.get("SPACECRAFT_ID", "")),
        wrs_path=int(image["WRS_PATH"]),
        wrs_row=int(image["WRS_ROW"]),
        acquired=acquired,
        sun_elevation=float(image["SUN_ELEVATION"]),
        sun_azimuth=float(image.get("SUN_AZIMUTH", math.nan)),
        cloud_cover=float(image.get("CLOUD_COVER", math.nan)),
        utm_zone=int(projection["UTM_ZONE"]),
        band_files=band_files,
        rescaling=rescaling,
        corner_ul_xy=ul,
        corner_lr_xy=lr,
        reflective_shape=shape,
        reflective_cell=float(projection.get("GRID_CELL_SIZE_REFLECTIVE", 30.0)),
    )


def _rescaling(meta: dict, level: str) -> dict[str, tuple[float, float]]:
    """Reflectance (mult, add) per band: TOA for Level-1, surface reflectance for Level-2."""
    if level.startswith("L2"):
        group = meta["LEVEL2_SURFACE_REFLECTANCE_PARAMETERS"]
    else:
        group = meta["LEVEL1_RADIOMETRIC_RESCALING"]
    out: dict[str, tuple[float, float]] = {}
    numbers = {**MULTISPECTRAL_BANDS, PAN_BAND: "pan"}
    for number, name in numbers.items():
        mult = group.get(f"REFLECTANCE_MULT_BAND_{number}")
        add = group.get(f"REFLECTANCE_ADD_BAND_{number}")
        if mult is not None and add is not None:
            out[name] = (float(mult), float(add))
    if not out:
        raise ValueError("no REFLECTANCE_MULT/ADD coefficients")
    return out


def parse_metadata(data: bytes | str, fmt: str, where: str) -> SceneMetadata:
    """Parse MTL bytes of format ``fmt`` into ``SceneMetadata``; refuse unsupported products.

    ``where`` names the file in error messages.
    """
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        if fmt == "txt":
            tree = parse_odl(text)
        elif fmt == "json":
            tree = _typed(json.loads(text))
        elif fmt == "xml":
            tree = _xml_tree(text)
        else:
            raise MTLError(f"unknown MTL format {fmt!r}")
    except (UnicodeDecodeError, ValueError, ElementTree.ParseError, MTLError) as exc:
        raise MTLError(f"{where}: cannot parse MTL ({exc})") from exc
    check_supported(_product_id(tree), where)
    return metadata_from_tree(tree, where)


def read_mtl(path: Path) -> SceneMetadata:
    """Read one local MTL file of any flavour (ODL text, JSON or XML) and validate it."""
    path = Path(path)
    fmt = mtl_format(path.name)
    if fmt is None:
        raise MTLError(f"{path}: not an MTL file (*_MTL.txt, *_MTL.json or *_MTL.xml)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MTLError(f"{path}: cannot read MTL ({exc})") from exc
    return parse_metadata(data, fmt, str(path))


def check_supported(product_id: str | None, where: str) -> None:
    """Raise ``UnsupportedProductError`` naming the product unless it is L8/9 OLI C2 L1/L2."""
    if not product_id:
        return  # no id: the full parse reports the missing key
    match = PRODUCT_ID_RE.match(product_id)
    if match is None:
        reason = "not a Collection 2 product id"
    else:
        reason = _unsupported_reason(match["sensor"], match["mission"], match["level"],
                                     match["collection"])
    if reason:
        raise UnsupportedProductError(
            f"{product_id} ({where}): unsupported product type: {reason}; the pipeline ingests "
            f"Landsat 8/9 OLI Collection 2 {', '.join(SUPPORTED_LEVELS)} products",
            scene_id=product_id,
        )


def _unsupported_reason(sensor: str, mission: str, level: str, collection: str) -> str:
    if sensor == "M":
        return "an MSS product"
    if sensor in "ET" and mission in ("04", "05", "07"):
        return f"a Landsat {int(mission)} {'ETM+' if sensor == 'E' else 'TM'} product"
    if sensor == "T":
        return "a TIRS-only product (no reflective bands)"
    if mission not in ("08", "09"):
        return f"mission {mission} is not Landsat 8 or 9"
    if collection != "02":
        return f"Collection {int(collection)}, not Collection 2"
    if level not in SUPPORTED_LEVELS:
        return f"processing level {level}"
    return ""


def _product_id(tree: dict) -> str | None:
    try:
        return str(tree["LANDSAT_METADATA_FILE"]["PRODUCT_CONTENTS"]["LANDSAT_PRODUCT_ID"])
    except (KeyError, TypeError):
        return None


def _typed(node: object) -> object:
    """JSON MTL values are all strings: type them as the ODL parser does (unquoted)."""
    if isinstance(node, dict):
        return {key: _typed(value) for key, value in node.items()}
    if isinstance(node, str):
        return odl_value(node)
    return node


def _xml_tree(text: str) -> dict:
    # ElementTree resolves no external entities, and expat >= 2.4.1 caps entity expansion.
    root = ElementTree.fromstring(text)
    return {_local(root.tag): _xml_node(root)}


def _xml_node(element: ElementTree.Element) -> object:
    children = list(element)
    if not children:
        return odl_value((element.text or "").strip())
    return {_local(child.tag): _xml_node(child) for child in children}


def _local(tag: str) -> str:
    """An element name without its XML namespace (``{uri}NAME`` -> ``NAME``)."""
    return tag.rsplit("}", 1)[-1]
