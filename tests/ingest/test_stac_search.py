"""The STAC search's own rules: Landsat 8/9 only, cloud cover filtered on the client,
Level-1 and Level-2 paired by acquisition, and an unreachable API named in one line."""

from __future__ import annotations

from typer.testing import CliRunner

from flows.cli.app import app
from pipeline.ingest.stac_search import filter_items, pair_acquisitions
from tests.prefect_server import free_port
from tests.reliability.bad_input_helpers import one_line_error

L2 = "LC08_L2SP_118062_20170612_20200922_02_T1"
L1 = "LC08_L1TP_118062_20170612_20200922_02_T1"


def item(item_id: str, cloud: float = 10.0, platform: str = "landsat-8") -> dict:
    return {"id": item_id, "properties": {"eo:cloud_cover": cloud, "platform": platform}}


def test_only_landsat_8_and_9_under_the_cloud_limit_are_kept_once() -> None:
    items = [item(L2), item(L1, cloud=80.0), item(L2),
             item("LE07_L2SP_118062_20170612_20200922_02_T1", platform="landsat-7"),
             item("LC09_L2SP_118062_20220101_20220102_02_T1", platform="landsat-9"),
             item("S2A_MSIL2A_20170612T022551_N0205_R046_T49MGT")]
    kept, dropped = filter_items(items, max_cloud=50)
    assert [i["id"] for i in kept] == [L2, "LC09_L2SP_118062_20220101_20220102_02_T1"]
    assert dropped == {"cloud cover over 50%": 1, "repeated": 1,
                       "not Landsat 8/9 Collection 2": 2}


def test_level_1_and_level_2_of_one_acquisition_pair_up() -> None:
    other_day = "LC08_L2SP_118062_20170628_20200922_02_T1"
    pairs = pair_acquisitions([item(L1), item(other_day), item(L2)])
    assert [[i["id"] for i in pair] for pair in pairs.values()] == [[L2, L1], [other_day]]


def test_an_unreachable_api_is_one_line_naming_it(tmp_path) -> None:
    url = f"http://127.0.0.1:{free_port()}/stac"
    config = tmp_path / "config.yaml"
    config.write_text(f"workdir: {tmp_path / 'work'}\n")
    result = CliRunner().invoke(app, ["ingest", "--config", str(config), "--stac-api", url,
                                      "--collection", "landsat-c2-l2", "--bbox",
                                      "113.4,-2.0,113.5,-1.9"])
    text = one_line_error(result)
    assert url in text and "unreachable" in text
    assert not (tmp_path / "work").exists()
