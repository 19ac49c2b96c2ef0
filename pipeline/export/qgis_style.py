"""QGIS styling for the driver map: a categorized QML renderer and the ``layer_styles`` table.

QGIS looks for a ``layer_styles`` table inside a GeoPackage and applies the row flagged
``useAsDefault`` when the layer is opened, so the map opens coloured by driver with no
manual step. The table schema below mirrors the one QGIS itself creates.
"""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from pipeline.core.drivers import DRIVER_COLOURS

#: QGIS symbol type, symbol layer class and ``layerGeometryType`` code per geometry kind.
_GEOMETRY_KINDS: dict[str, tuple[str, str, str]] = {
    "point": ("marker", "SimpleMarker", "0"),
    "line": ("line", "SimpleLine", "1"),
    "polygon": ("fill", "SimpleFill", "2"),
}

#: Outline colour = fill colour scaled by this factor, so adjacent patches stay distinct.
_OUTLINE_DARKEN = 0.7

#: The same columns and types QGIS uses when it saves a style into a GeoPackage.
_LAYER_STYLES_DDL = """
CREATE TABLE IF NOT EXISTS layer_styles (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    f_table_catalog TEXT(256),
    f_table_schema TEXT(256),
    f_table_name TEXT(256),
    f_geometry_column TEXT(256),
    styleName TEXT(30),
    styleQML TEXT,
    styleSLD TEXT,
    useAsDefault BOOLEAN,
    description TEXT,
    owner TEXT(30),
    ui TEXT(30),
    update_time DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
)
"""


def _rgba(hex_colour: str, factor: float = 1.0) -> str:
    """``#rrggbb`` -> QGIS's ``r,g,b,a`` colour string, optionally darkened by ``factor``."""
    value = hex_colour.lstrip("#")
    if len(value) != 6:
        raise ValueError(f"colour {hex_colour!r} is not a #rrggbb hex string")
    r, g, b = (round(int(value[i : i + 2], 16) * factor) for i in (0, 2, 4))
    return f"{r},{g},{b},255"


def _options(parent: ET.Element, values: Mapping[str, str]) -> None:
    """Append a QGIS ``<Option type="Map">`` block holding string properties."""
    block = ET.SubElement(parent, "Option", type="Map")
    for name, value in values.items():
        ET.SubElement(block, "Option", name=name, type="QString", value=value)


def _symbol(parent: ET.Element, name: str, colour: str, geometry: str) -> None:
    """Append one QGIS symbol (fill, line or marker) in ``colour`` with a darker outline."""
    symbol_type, layer_class, _ = _GEOMETRY_KINDS[geometry]
    symbol = ET.SubElement(
        parent, "symbol", type=symbol_type, name=name, alpha="1", clip_to_extent="1", force_rhr="0"
    )
    # "class" and "pass" are Python keywords, hence the attribute dict.
    attrs = {"class": layer_class, "enabled": "1", "locked": "0", "pass": "0"}
    layer = ET.SubElement(symbol, "layer", attrs)
    outline = _rgba(colour, _OUTLINE_DARKEN)
    if geometry == "line":
        props = {"line_color": _rgba(colour), "line_width": "0.6", "line_width_unit": "MM"}
    else:
        props = {
            "color": _rgba(colour),
            "outline_color": outline,
            "outline_style": "solid",
            "outline_width": "0.26",
            "outline_width_unit": "MM",
        }
        props |= {"style": "solid"} if geometry == "polygon" else {"name": "circle", "size": "2"}
    _options(layer, props)


def categorized_qml(
    field: str = "driver",
    colours: Mapping[str, str] = DRIVER_COLOURS,
    geometry: str = "polygon",
) -> str:
    """A QGIS QML document colouring features by the categories of ``field``.

    One category per key of ``colours`` (value and legend label are the class name), in
    the mapping's order, so the legend lists drivers in model output order.
    """
    return _serialise(_categorized_root(field, colours, geometry, "Symbology"))


def edit_form_qml(
    value_maps: Mapping[str, Sequence[str]],
    *,
    text_fields: Sequence[str] = (),
    read_only: Sequence[str] = (),
    field: str = "driver",
    colours: Mapping[str, str] = DRIVER_COLOURS,
    geometry: str = "point",
) -> str:
    """A QML document with the categorized symbology of :func:`categorized_qml` and an
    attribute form: each field of ``value_maps`` a drop-down ("Value Map") of its values,
    each of ``text_fields`` a one-line text edit, each of ``read_only`` not editable.

    QGIS reads edit widgets under its "Forms" style category and field flags under
    "Fields", so the document declares both beside "Symbology".
    """
    if overlap := sorted(set(value_maps) & set(read_only)):
        raise ValueError(f"fields {overlap} cannot be both drop-downs and read-only")
    root = _categorized_root(field, colours, geometry, "Symbology|Fields|Forms")
    config = ET.SubElement(root, "fieldConfiguration")
    for name, values in value_maps.items():
        if not values:
            raise ValueError(f"value map of {name!r} is empty; give at least one value")
        options = _edit_widget(config, name, "ValueMap")
        entries = ET.SubElement(options, "Option", type="List", name="map")
        for value in values:
            # One {description: stored value} map per entry; both are the class name.
            entry = ET.SubElement(entries, "Option", type="Map")
            ET.SubElement(entry, "Option", type="QString", name=value, value=value)
    for name in text_fields:
        options = _edit_widget(config, name, "TextEdit")
        ET.SubElement(options, "Option", type="bool", name="IsMultiline", value="false")
        ET.SubElement(options, "Option", type="bool", name="UseHtml", value="false")
    editable = ET.SubElement(root, "editable")
    for name in read_only:
        ET.SubElement(editable, "field", name=name, editable="0")
    for name in [*value_maps, *text_fields]:
        ET.SubElement(editable, "field", name=name, editable="1")
    return _serialise(root)


def _edit_widget(config: ET.Element, name: str, widget: str) -> ET.Element:
    """Append a ``<field>`` with an edit widget of type ``widget``; return its option map."""
    field = ET.SubElement(config, "field", name=name, configurationFlags="None")
    editor = ET.SubElement(field, "editWidget", type=widget)
    return ET.SubElement(ET.SubElement(editor, "config"), "Option", type="Map")


def _categorized_root(
    field: str, colours: Mapping[str, str], geometry: str, categories: str
) -> ET.Element:
    """The ``<qgis>`` element of a categorized renderer on ``field``, one class per colour."""
    if geometry not in _GEOMETRY_KINDS:
        valid = ", ".join(_GEOMETRY_KINDS)
        raise ValueError(f"unknown geometry {geometry!r}; expected one of {valid}")
    if not colours:
        raise ValueError("colours is empty; give at least one category -> #rrggbb entry")
    root = ET.Element("qgis", version="3.28.0", styleCategories=categories)
    renderer = ET.SubElement(root, "renderer-v2", type="categorizedSymbol", attr=field)
    renderer.attrib |= {"symbollevels": "0", "enableorderby": "0", "forceraster": "0"}
    categories_element = ET.SubElement(renderer, "categories")
    symbols = ET.SubElement(renderer, "symbols")
    for index, (name, colour) in enumerate(colours.items()):
        ET.SubElement(
            categories_element, "category", symbol=str(index), value=name, label=name,
            render="true",
        )
        _symbol(symbols, str(index), colour, geometry)
    # The source symbol is what QGIS offers when a user adds a new category by hand.
    source = ET.SubElement(renderer, "source-symbol")
    _symbol(source, "0", "#bdbdbd", geometry)
    ET.SubElement(root, "layerGeometryType").text = _GEOMETRY_KINDS[geometry][2]
    return root


def _serialise(root: ET.Element) -> str:
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return f"<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n{body}\n"


def write_layer_style(
    gpkg_path: str | Path,
    layer: str,
    qml: str,
    style_name: str,
    description: str = "",
) -> None:
    """Store ``qml`` as the default QGIS style of ``layer`` in an existing GeoPackage.

    Creates ``layer_styles`` if missing and registers it in ``gpkg_contents`` as an
    ``attributes`` table (as QGIS does), then clears any other default for the layer so
    exactly one row is applied on open. Only plain sqlite3 is used, so feature tables
    (whose R-tree triggers need GDAL's SQL functions) are never touched.
    """
    path = Path(gpkg_path)
    if not path.is_file():
        raise FileNotFoundError(f"GeoPackage {path} does not exist; write the layers first")
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    con = sqlite3.connect(path)
    try:
        with con:  # one transaction: all of it or none of it
            geometry_column = _geometry_column(con, layer)
            con.execute(_LAYER_STYLES_DDL)
            con.execute(
                "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, "
                "last_change, srs_id) SELECT 'layer_styles', 'attributes', 'layer_styles', '', "
                "?, NULL WHERE NOT EXISTS "
                "(SELECT 1 FROM gpkg_contents WHERE table_name = 'layer_styles')",
                (now,),
            )
            con.execute(
                "UPDATE layer_styles SET useAsDefault = 0 WHERE f_table_name = ? "
                "AND f_geometry_column = ?",
                (layer, geometry_column),
            )
            con.execute(
                "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, "
                "f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, description, "
                "owner, ui, update_time) VALUES ('', '', ?, ?, ?, ?, '', 1, ?, '', NULL, ?)",
                (layer, geometry_column, style_name, qml, description, now),
            )
    finally:
        con.close()


def _geometry_column(con: sqlite3.Connection, layer: str) -> str:
    """The geometry column of a feature table, as registered in ``gpkg_geometry_columns``."""
    row = con.execute(
        "SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?", (layer,)
    ).fetchone()
    if row is None:
        raise ValueError(f"{layer!r} is not a feature table of this GeoPackage")
    return str(row[0])
