"""Where a product's files are: folders, USGS ``.tar`` bundles and STAC Items.

A SOURCE named by the user resolves into ``ProductSource`` records, one per product: a
name for messages, where its MTL is, and GDAL-readable paths of its files. Tars are read
in place (``/vsitar/`` for rasters, ``tarfile`` for the MTL), never extracted. Nothing
here decodes pixels, so resolving a national archive takes seconds.
"""

from __future__ import annotations

import logging
import os
import re
import tarfile
from collections.abc import Iterable
from pathlib import Path

from pipeline.ingest.landsat import MULTISPECTRAL_BANDS, MTLError, SceneInputError, SceneMetadata
from pipeline.ingest.mtl import mtl_format, parse_metadata, preferred_mtl
from pipeline.ingest.product_source import ProductSource
from pipeline.ingest.remote_files import fetch, is_http
from pipeline.ingest.stac_items import is_url, item_sources, looks_like_item

log = logging.getLogger(__name__)

#: Bands read into the scene store, besides the multispectral ones.
EXTRA_BANDS = ("pan", "qa_pixel")


def resolve_sources(entries: Iterable[str | Path]) -> list[ProductSource]:
    """Every product under the given folders, tars and STAC Item files, in the given order.

    A folder is a product folder (it holds an MTL) or a folder of product folders, tars and
    Item JSON files. Sources seen twice (same origin) are kept once.
    """
    out: dict[str, ProductSource] = {}
    for entry in entries:
        text = str(entry)
        if is_url(text):
            found = item_sources(text)
        else:
            path = Path(os.path.abspath(text))
            if not path.exists():
                raise FileNotFoundError(f"Landsat source not found: {text}")
            found = _local_sources(path)
            if not found:
                log.warning("%s: no Landsat product (folder with an MTL, .tar, STAC Item)", path)
        for source in found:
            out.setdefault(source.origin, source)
    return list(out.values())


def _local_sources(path: Path) -> list[ProductSource]:
    if path.is_file():
        if path.name.lower().endswith(".tar"):
            return [tar_source(path)]
        if mtl_format(path.name):
            return [folder_source(path.parent)]
        if path.suffix.lower() == ".json":
            return item_sources(str(path))
        return [_broken(path, "not a product folder, .tar bundle or STAC Item JSON")]
    if _has_mtl(path):
        return [folder_source(path)]
    found: list[ProductSource] = []
    for child in sorted(path.iterdir()):
        if child.name.startswith("."):
            continue  # our own temporaries, editor files
        if child.is_dir() and _has_mtl(child):
            found.append(folder_source(child))
        elif child.is_file() and child.name.lower().endswith(".tar"):
            found.append(tar_source(child))
        elif child.is_file() and child.suffix.lower() == ".json" and looks_like_item(child):
            found.extend(item_sources(str(child)))
    return found


def _has_mtl(folder: Path) -> bool:
    return any(p.is_file() and mtl_format(p.name) for p in folder.iterdir())


def _broken(path: Path, why: str) -> ProductSource:
    return ProductSource(str(path), _stem(path.name), "folder", error=f"{path}: {why}")


def _stem(name: str) -> str:
    return re.sub(r"(\.tar|\.json)$", "", name, flags=re.IGNORECASE)


def folder_source(folder: Path) -> ProductSource:
    """A product folder (its MTL names the band files)."""
    folder = Path(os.path.abspath(folder))
    files = {p.name: str(p) for p in folder.iterdir() if p.is_file()} if folder.is_dir() else {}
    mtl = preferred_mtl(list(files))
    return ProductSource(
        origin=str(folder), name=folder.name, kind="folder",
        metadata=files[mtl] if mtl else "", files=files,
    )


def tar_source(path: Path) -> ProductSource:
    """A USGS bundle: a flat tar of the product's files, read in place."""
    path = Path(os.path.abspath(path))
    name = _stem(path.name)
    try:
        with tarfile.open(path, mode="r:") as tar:  # "r:": uncompressed, so GDAL can seek
            members = [m.name for m in tar.getmembers() if m.isfile()]
    except (tarfile.TarError, OSError) as exc:
        return ProductSource(str(path), name, "tar", error=f"{path}: unreadable tar ({exc})")
    files = {os.path.basename(m): f"/vsitar/{path}/{m}" for m in members}
    by_base = {os.path.basename(m): m for m in members}
    mtl = preferred_mtl(list(by_base))
    return ProductSource(
        origin=str(path), name=name, kind="tar", metadata=str(path) if mtl else "",
        metadata_member=by_base[mtl] if mtl else "", files=files,
    )


def read_source_metadata(source: ProductSource) -> SceneMetadata:
    """The source's ``SceneMetadata`` (MTL txt preferred, else json, else xml)."""
    if source.error:
        raise SceneInputError(source.error)
    if not source.metadata:
        raise MTLError(
            f"{source.origin}: no *_MTL.txt (nor _MTL.json / _MTL.xml); "
            "a Landsat product holds one"
        )
    where = source.metadata
    if source.metadata_member:
        where = f"{source.metadata}/{source.metadata_member}"
    fmt = mtl_format(source.metadata_member or source.metadata.split("?")[0]) or "txt"
    return parse_metadata(_read_bytes(source), fmt, where)


def _read_bytes(source: ProductSource) -> bytes:
    try:
        if source.metadata_member:
            with tarfile.open(source.metadata, mode="r:") as tar:
                member = tar.extractfile(source.metadata_member)
                if member is None:
                    raise OSError(f"{source.metadata_member} is not a file")
                return member.read()
        if is_http(source.metadata):
            return fetch(source.metadata)[0]
        if is_url(source.metadata):  # s3://, gs://: fsspec with the matching filesystem
            import fsspec

            with fsspec.open(source.metadata, "rb") as f:
                return f.read()
        return Path(source.metadata).read_bytes()
    except (OSError, tarfile.TarError, ImportError, ValueError) as exc:
        raise SceneInputError(f"{source.metadata}: cannot read the MTL ({exc})") from exc


def band_locations(
    source: ProductSource, meta: SceneMetadata
) -> tuple[dict[str, str], dict[str, str]]:
    """(found, missing): band -> GDAL path, and band -> where it was expected.

    Folders and tars hold the files the MTL names; STAC items name their bands
    themselves. Every file of another product (by its name) is an error: the MTL
    belongs to another product.
    """
    wanted = [*MULTISPECTRAL_BANDS.values(), *EXTRA_BANDS]
    found: dict[str, str] = {}
    missing: dict[str, str] = {}
    for band in wanted:
        if source.kind == "stac":
            if band in source.assets:
                found[band] = source.assets[band]
            else:
                missing[band] = f"{source.origin}: no asset for band {band!r}"
            continue
        fname = meta.band_files.get(band)
        if fname is None:
            missing[band] = f"{source.origin}: MTL lists no file for band {band!r}"
        elif fname in source.files:
            found[band] = source.files[fname]
        elif source.kind == "tar":
            missing[band] = f"{source.origin}: no member {fname}"
        else:
            missing[band] = os.path.join(source.origin, fname)
    if meta.level != "L1":
        found.pop("pan", None)  # Level-2 has no pan band
    _check_product_names(found, meta)
    return found, missing


_FILE_PRODUCT = re.compile(r"^(L[COTEM]\d{2}_[A-Z0-9]{4}_\d{6}_\d{8}_\d{8}_\d{2}_(?:T1|T2|RT))_")


def _check_product_names(paths: dict[str, str], meta: SceneMetadata) -> None:
    for band, path in paths.items():
        match = _FILE_PRODUCT.match(os.path.basename(path))
        if match and match.group(1) != meta.product_id:
            raise SceneInputError(
                f"{path}: {band} file of product {match.group(1)}, but the MTL describes "
                f"{meta.product_id}; the MTL belongs to another product",
                scene_id=meta.product_id,
            )
