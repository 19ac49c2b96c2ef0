"""Landsat 8/9 Collection 2 products found by searching a STAC API, paired by acquisition.

The search uses pystac-client, and only the extensions the API declares in its conformance
classes: a CQL2 ``filter`` or a ``query`` for cloud cover, ``sortby`` for a stable order.
Some servers answer an undeclared ``query`` with nothing at all, so whatever the API does
not declare (cloud cover, the platform) is filtered here, on the client. Each Level-2 item
is paired with the Level-1 item of the same acquisition (path, row and date): its B8 pan
sharpens the surface reflectance, as in the ForestNet release.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from pipeline.core.errors import ForestNetError
from pipeline.ingest.product_source import ProductSource
from pipeline.ingest.stac_items import item_source

if TYPE_CHECKING:  # imported when a search runs: local ingests never load pystac-client
    from pystac_client import Client

log = logging.getLogger("pipeline.ingest.scene_ingest")

#: Landsat 8 and 9 (OLI) product ids, with the parts that name one acquisition.
_LANDSAT_ID = re.compile(r"^L[CO]0(?P<mission>[89])_(?P<level>L1TP|L1GT|L2SP|L2SR)_"
                         r"(?P<path>\d{3})(?P<row>\d{3})_(?P<date>\d{8})")
_PLATFORMS = {"landsat-8", "landsat-9", "landsat_8", "landsat_9", "landsat8", "landsat9"}


class StacApiError(ForestNetError, OSError):
    """A STAC API that cannot be searched; the message names its URL and the reason."""


@dataclass(frozen=True)
class StacSearch:
    """One search: where, what, when, and how to reach the assets."""

    url: str
    collections: tuple[str, ...]
    area: BaseGeometry  # EPSG:4326
    datetime: str  # "YYYY-MM-DD/YYYY-MM-DD"
    max_cloud: float | None = None
    signing: str = "none"  # "none" | "planetary-computer"
    requester_pays: bool = False
    page_size: int = 100
    retries: int = 5


@dataclass
class SearchResult:
    """The products to ingest and what the search saw."""

    sources: list[ProductSource]
    found: int = 0  # items the API returned
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> items left out
    extensions: tuple[str, ...] = ()  # search extensions used on the server
    acquisitions: dict[str, int] = field(default_factory=dict)  # "L1+L2" / "L2" / "L1" -> n


def check_api(url: str, retries: int = 2) -> None:
    """Fail early, in one line naming ``url``, when the API cannot be reached (urllib3's
    line per retry is held back: the error says it all)."""
    pool = logging.getLogger("urllib3.connectionpool")
    level = pool.level
    pool.setLevel(logging.ERROR)
    try:
        _open(url, retries)
    finally:
        pool.setLevel(level)


def _open(url: str, retries: int) -> Client:
    import requests
    from pystac_client import Client
    from pystac_client.exceptions import APIError
    from pystac_client.stac_api_io import StacApiIO
    from urllib3.util.retry import Retry

    retry = Retry(total=retries, backoff_factor=0.5,
                  status_forcelist=(429, 500, 502, 503, 504), allowed_methods=None)
    try:
        return Client.open(url, stac_io=StacApiIO(max_retries=retry, timeout=60))
    except (APIError, requests.RequestException, OSError, ValueError) as exc:
        raise StacApiError(f"{url}: STAC API unreachable ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def search_products(search: StacSearch) -> SearchResult:
    """Search the API, keep Landsat 8/9 items under the cloud limit, pair them."""
    items, used = _search(search)
    kept, dropped = filter_items(items, search.max_cloud)
    if search.signing == "planetary-computer":
        import planetary_computer

        kept = [planetary_computer.sign(item) for item in kept]
    pairs = pair_acquisitions(kept)
    sources = []
    for item in (i for pair in pairs.values() for i in pair):
        origin = f"{search.url.rstrip('/')}/collections/{item.get('collection', '')}/items/" \
                 f"{item['id']}"
        source = item_source(item, origin, origin)
        if search.requester_pays:
            source = replace(source, requester_pays=True)
        sources.append(source)
    kinds: dict[str, int] = {}
    for pair in pairs.values():
        key = "+".join(sorted({_level(i) for i in pair}))
        kinds[key] = kinds.get(key, 0) + 1
    return SearchResult(sources, len(items), dropped, used, kinds)


def _search(search: StacSearch) -> tuple[list[dict], tuple[str, ...]]:
    import requests
    from pystac_client.conformance import ConformanceClasses
    from pystac_client.exceptions import APIError

    client = _open(search.url, search.retries)
    params: dict = {"collections": list(search.collections),
                    "intersects": mapping(search.area), "datetime": search.datetime,
                    "limit": search.page_size}
    used = []
    if search.max_cloud is not None and client.conforms_to(ConformanceClasses.FILTER):
        params["filter"] = {"op": "<=", "args": [{"property": "eo:cloud_cover"},
                                                  search.max_cloud]}
        params["filter_lang"] = "cql2-json"
        used.append("filter")
    elif search.max_cloud is not None and client.conforms_to(ConformanceClasses.QUERY):
        params["query"] = {"eo:cloud_cover": {"lte": search.max_cloud}}
        used.append("query")
    if client.conforms_to(ConformanceClasses.SORT):
        params["sortby"] = [{"field": "properties.datetime", "direction": "asc"}]
        used.append("sort")
    try:
        items = list(client.search(**params).items_as_dicts())
    except (APIError, requests.RequestException, OSError, ValueError) as exc:
        raise StacApiError(f"{search.url}: STAC API search failed ({_reason(exc)})") from None
    return items, tuple(used)


def filter_items(items: Iterable[dict], max_cloud: float | None
                 ) -> tuple[list[dict], dict[str, int]]:
    """Landsat 8/9 items at or under ``max_cloud`` percent, each id once; and how many
    were left out for each reason."""
    kept: dict[str, dict] = {}
    dropped: dict[str, int] = {}

    def drop(reason: str) -> None:
        dropped[reason] = dropped.get(reason, 0) + 1

    for item in items:
        props = item.get("properties") or {}
        platform = str(props.get("platform", "")).lower()
        if not _LANDSAT_ID.match(str(item.get("id", ""))) or (
                platform and platform not in _PLATFORMS):
            drop("not Landsat 8/9 Collection 2")
            continue
        cloud = props.get("eo:cloud_cover", props.get("landsat:cloud_cover_land"))
        if max_cloud is not None and cloud is not None and float(cloud) > max_cloud:
            drop(f"cloud cover over {max_cloud:g}%")
            continue
        if item["id"] in kept:
            drop("repeated")
            continue
        kept[item["id"]] = item
    return list(kept.values()), dropped


def acquisition(item: dict) -> tuple[str, str, str]:
    """(path, row, date) of an item, from its id (catalogs agree on ids more than on
    property names)."""
    match = _LANDSAT_ID.match(item["id"])
    return match.group("path"), match.group("row"), match.group("date")


def _level(item: dict) -> str:
    return _LANDSAT_ID.match(item["id"]).group("level")[:2]


def pair_acquisitions(items: Iterable[dict]) -> dict[tuple[str, str, str], list[dict]]:
    """Items grouped by acquisition, Level-2 first; one item per level (the first)."""
    out: dict[tuple[str, str, str], dict[str, dict]] = {}
    for item in items:
        out.setdefault(acquisition(item), {}).setdefault(_level(item), item)
    return {key: [by_level[lv] for lv in ("L2", "L1") if lv in by_level]
            for key, by_level in sorted(out.items())}
