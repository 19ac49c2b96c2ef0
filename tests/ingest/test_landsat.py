"""Tests for Landsat C2 metadata (ODL/MTL), radiometric scaling, QA bits and pan-sharpening."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from pipeline.ingest.landsat import (
    MTLError,
    clear_fraction,
    qa_flag,
    reflectance_scaling,
    usable_mask,
)
from pipeline.ingest.mtl import UnsupportedProductError, find_mtl, parse_odl, read_mtl

DATA = Path(__file__).parents[1] / "data" / "landsat"
L1_ID = "LC08_L1TP_017051_20151205_20200908_02_T1"
L2_ID = "LC08_L2SP_017051_20151205_20200908_02_T1"
L1_MTL = DATA / f"{L1_ID}-cropped" / f"{L1_ID}_MTL.txt"
L2_MTL = DATA / f"{L2_ID}-cropped" / f"{L2_ID}_MTL.txt"
SUN_ELEVATION = 48.24450155  # IMAGE_ATTRIBUTES.SUN_ELEVATION in both files

ODL = """\
GROUP = OUTER
  TITLE = "Image courtesy of the U.S. Geological Survey"
  EQUATION = "a = b"
  COUNT = 12
  COLLECTION_NUMBER = 02
  QUOTED_NUMBER = "02"
  MULT = 2.0000E-05
  ADD = -0.100000
  DATE_ACQUIRED = 2015-12-05
  GROUP = INNER
    NEGATIVE = -7
    NAME = "inner"
  END_GROUP = INNER
  AFTER_INNER = 1.5
END_GROUP = OUTER
GROUP = SECOND
END_GROUP = SECOND
END
"""

# QA_PIXEL bits (Collection 2): 0 fill, 1 dilated cloud, 2 cirrus, 3 cloud, 4 cloud shadow,
# 5 snow, 6 clear, 7 water; 8-15 are two-bit confidences.
LOW_CONFIDENCES = (1 << 8) | (1 << 10) | (1 << 12) | (1 << 14)
CLEAR = (1 << 6) | LOW_CONFIDENCES
FILL = 1
CLOUD = (1 << 3) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 12) | (1 << 14)
SHADOW = (1 << 4) | (1 << 8) | (1 << 10) | (1 << 11) | (1 << 12) | (1 << 14)
DILATED = (1 << 1) | LOW_CONFIDENCES
CIRRUS = (1 << 2) | LOW_CONFIDENCES | (1 << 15)
WATER = (1 << 7) | (1 << 6) | LOW_CONFIDENCES
SNOW = (1 << 5) | LOW_CONFIDENCES | (1 << 13)


# --- ODL ------------------------------------------------------------------------------------


def test_parse_odl_nested_groups_and_types() -> None:
    tree = parse_odl(ODL)
    assert tree == {
        "OUTER": {
            "TITLE": "Image courtesy of the U.S. Geological Survey",
            "EQUATION": "a = b",
            "COUNT": 12,
            "COLLECTION_NUMBER": 2,
            "QUOTED_NUMBER": "02",
            "MULT": 2e-05,
            "ADD": -0.1,
            "DATE_ACQUIRED": "2015-12-05",
            "INNER": {"NEGATIVE": -7, "NAME": "inner"},
            "AFTER_INNER": 1.5,
        },
        "SECOND": {},
    }
    assert isinstance(tree["OUTER"]["COUNT"], int)
    assert isinstance(tree["OUTER"]["MULT"], float)


def test_parse_odl_ignores_blank_lines_and_indentation() -> None:
    assert parse_odl("\n\nGROUP = A\n\n      X = 1\nEND_GROUP = A\n\nEND\n") == {"A": {"X": 1}}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("GROUP = A\n  X = 1\n  this line has no equals sign\nEND_GROUP = A\n", "line 3"),
        ("X = 1\nEND_GROUP = A\n", "line 2: END_GROUP without GROUP"),
        ("GROUP = A\n  X = 1\n", "GROUP"),  # truncated: the group never closes
    ],
)
def test_parse_odl_malformed(text: str, match: str) -> None:
    with pytest.raises(MTLError, match=match):
        parse_odl(text)


# --- MTL ------------------------------------------------------------------------------------


def test_read_mtl_level1() -> None:
    meta = read_mtl(L1_MTL)
    assert meta.product_id == L1_ID
    assert meta.processing_level == "L1TP"
    assert meta.level == "L1"
    assert meta.spacecraft == "LANDSAT_8"
    assert (meta.wrs_path, meta.wrs_row) == (17, 51)
    assert meta.acquired == datetime(2015, 12, 5, 16, 6, 6, 877338)
    assert meta.sun_elevation == SUN_ELEVATION
    assert meta.sun_azimuth == pytest.approx(147.74083644)
    assert meta.cloud_cover == pytest.approx(61.45)
    assert meta.utm_zone == 16
    assert meta.band_files["pan"] == f"{L1_ID}_B8.TIF"
    assert meta.band_files["red"] == f"{L1_ID}_B4.TIF"
    assert meta.band_files["qa_pixel"] == f"{L1_ID}_QA_PIXEL.TIF"
    assert set(meta.band_files) == {
        "coastal", "blue", "green", "red", "nir", "swir1", "swir2", "pan", "qa_pixel",
    }
    for band in ("coastal", "blue", "green", "red", "nir", "swir1", "swir2", "pan"):
        assert meta.rescaling[band] == pytest.approx((2e-05, -0.1)), band
    assert meta.corner_ul_xy == (543990.0, 1378980.0)
    assert meta.corner_lr_xy == (558000.0, 1368990.0)
    assert meta.reflective_shape == (334, 468)
    assert meta.reflective_cell == 30.0


def test_read_mtl_level2() -> None:
    meta = read_mtl(L2_MTL)
    assert meta.product_id == L2_ID
    assert meta.processing_level == "L2SP"
    assert meta.level == "L2"
    assert "pan" not in meta.band_files and "pan" not in meta.rescaling
    assert meta.band_files["red"] == f"{L2_ID}_SR_B4.TIF"
    for band in ("coastal", "blue", "green", "red", "nir", "swir1", "swir2"):
        assert meta.rescaling[band] == pytest.approx((2.75e-05, -0.2)), band
    assert meta.sun_elevation == SUN_ELEVATION
    assert meta.utm_zone == 16
    assert meta.reflective_shape == (333, 467)
    assert meta.corner_ul_xy == (544020.0, 1378980.0)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.97])
def test_read_mtl_truncated(tmp_path: Path, fraction: float) -> None:
    text = L1_MTL.read_text()
    path = tmp_path / f"{L1_ID}_MTL.txt"
    path.write_text(text[: int(len(text) * fraction)])
    with pytest.raises(MTLError) as info:
        read_mtl(path)
    assert str(path) in str(info.value)


def test_read_mtl_garbled(tmp_path: Path) -> None:
    path = tmp_path / "garbled_MTL.txt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00binary")
    with pytest.raises(MTLError) as info:
        read_mtl(path)
    assert str(path) in str(info.value)


def test_read_mtl_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent_MTL.txt"
    with pytest.raises(MTLError, match="absent_MTL.txt"):
        read_mtl(path)


def test_read_mtl_rejects_non_collection2_product_id(tmp_path: Path) -> None:
    path = tmp_path / "old_MTL.txt"
    path.write_text(L1_MTL.read_text().replace(L1_ID, "LC80170512015339LGN01"))
    with pytest.raises(UnsupportedProductError, match="not a Collection 2 product id") as info:
        read_mtl(path)
    assert str(path) in str(info.value)


def test_read_mtl_without_reflectance_coefficients(tmp_path: Path) -> None:
    lines = [
        line for line in L1_MTL.read_text().splitlines() if "REFLECTANCE_MULT_BAND" not in line
    ]
    path = tmp_path / "nocoef_MTL.txt"
    path.write_text("\n".join(lines))
    with pytest.raises(MTLError, match="REFLECTANCE_MULT") as info:
        read_mtl(path)
    assert str(path) in str(info.value)


def test_find_mtl(tmp_path: Path) -> None:
    assert find_mtl(L1_MTL.parent) == L1_MTL
    with pytest.raises(MTLError, match="no \\*_MTL.txt"):
        find_mtl(tmp_path)
    (tmp_path / "a_MTL.txt").write_text("")
    (tmp_path / "b_MTL.txt").write_text("")
    with pytest.raises(MTLError, match=r"2 \*_MTL\.txt files"):
        find_mtl(tmp_path)


# --- Radiometric scaling ---------------------------------------------------------------------


def test_level1_scaling_is_sun_corrected_toa() -> None:
    meta = read_mtl(L1_MTL)
    dn = np.array([1, 5000, 7350, 20000, 40544, 65535], dtype=np.float64)
    sin_sun = np.sin(np.deg2rad(SUN_ELEVATION))
    expected = (2e-05 * dn - 0.1) / sin_sun
    for band in ("blue", "red", "swir2", "pan"):
        scale, offset = reflectance_scaling(meta, band)
        np.testing.assert_allclose(scale * dn + offset, expected, rtol=1e-12, atol=1e-12)
    # DN 5000 is zero reflectance by the coefficients; sun correction keeps it zero.
    scale, offset = reflectance_scaling(meta, "red")
    assert scale * 5000 + offset == pytest.approx(0.0, abs=1e-12)


def test_level2_scaling_is_plain_surface_reflectance() -> None:
    meta = read_mtl(L2_MTL)
    assert reflectance_scaling(meta, "nir") == pytest.approx((2.75e-05, -0.2))
    scale, offset = reflectance_scaling(meta, "nir")
    assert scale * 7273 + offset == pytest.approx(2.75e-05 * 7273 - 0.2)


def test_level1_scaling_refuses_night_scene() -> None:
    meta = dataclasses.replace(read_mtl(L1_MTL), sun_elevation=-3.0)
    with pytest.raises(MTLError, match="sun elevation"):
        reflectance_scaling(meta, "red")


def test_scaling_unknown_band() -> None:
    with pytest.raises(KeyError):
        reflectance_scaling(read_mtl(L2_MTL), "pan")


# --- QA_PIXEL ----------------------------------------------------------------------------------


def test_typical_clear_value() -> None:
    assert CLEAR == 21824  # the Collection 2 "clear, low confidence" value seen in real scenes



def test_qa_flag_on_arrays() -> None:
    qa = np.array([CLEAR, CLOUD, SHADOW, FILL, 1 << 15], dtype=np.uint16)
    np.testing.assert_array_equal(qa_flag(qa, "cloud"), [False, True, False, False, False])
    np.testing.assert_array_equal(qa_flag(qa, "cloud_shadow"), [False, False, True, False, False])
    np.testing.assert_array_equal(qa_flag(qa.astype(np.int32), "fill"), [0, 0, 0, 1, 0])
    np.testing.assert_array_equal(usable_mask(qa), [True, False, False, False, True])


def test_clear_fraction() -> None:
    qa = np.array([[CLEAR, CLEAR, CLOUD], [SHADOW, FILL, FILL]], dtype=np.uint16)
    # Fill is not part of the scene: 2 usable out of 4 non-fill pixels.
    assert clear_fraction(qa) == pytest.approx(0.5)
    within = np.array([[True, False, True], [False, True, False]])
    # Inside the mask: CLEAR and CLOUD count, the masked-in FILL does not.
    assert clear_fraction(qa, within) == pytest.approx(0.5)
    within_clear = np.array([[True, True, False], [False, False, False]])
    assert clear_fraction(qa, within_clear) == 1.0
    assert clear_fraction(np.full((3, 3), FILL, dtype=np.uint16)) == 0.0
    assert clear_fraction(qa, np.zeros(qa.shape, dtype=bool)) == 0.0


