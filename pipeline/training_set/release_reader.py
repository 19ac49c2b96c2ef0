"""Files of the published ``ForestNetDataset``, read from its folder or from its zip.

The dataset root is the folder holding ``train.csv``/``val.csv``/``test.csv`` (the given
path, or one folder below it, as when the zip holds ``ForestNetDataset/``). Paths are
POSIX and relative to that root. Example folders are named ``<lat>_<lon>``; some copies
name them ``<lon>_<lat>``, so a CSV row is matched to a folder by comparing both numbers
with its latitude and longitude.
"""

from __future__ import annotations

import posixpath
import zipfile
from functools import cached_property
from pathlib import Path

import numpy as np

from pipeline.core.errors import ForestNetError

SPLIT_FILES = ("train.csv", "val.csv", "test.csv")
#: Folder names and CSV coordinates agree to this many degrees (about 11 m).
COORD_TOLERANCE = 1e-4


class ReleaseError(ForestNetError, ValueError):
    """A release that cannot be read; the message names the path."""


class ReleaseReader:
    """Read-only access to the dataset's files, from a folder or a zip archive."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._zip: zipfile.ZipFile | None = None
        if self.path.is_dir():
            roots = [self.path, *sorted(p for p in self.path.iterdir() if p.is_dir())]
            found = [r for r in roots if any((r / f).is_file() for f in SPLIT_FILES)]
            if not found:
                raise ReleaseError(f"{self.path}: no train.csv, val.csv or test.csv here or "
                                   "one folder below; is this the ForestNetDataset folder?")
            self._root = found[0]
        elif self.path.is_file() and zipfile.is_zipfile(self.path):
            self._zip = zipfile.ZipFile(self.path)
            csvs = [n for n in self._zip.namelist() if posixpath.basename(n) in SPLIT_FILES]
            if not csvs:
                raise ReleaseError(f"{self.path}: the zip holds no train.csv, val.csv or test.csv")
            self._prefix = min((posixpath.dirname(n) for n in csvs), key=len)
        else:
            raise ReleaseError(f"{self.path}: not a ForestNetDataset folder or zip")

    def __enter__(self) -> ReleaseReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def describe(self, rel: str) -> str:
        """A path to show in messages: the file, or ``archive.zip!member``."""
        if self._zip is None:
            return str(self._root / rel)
        return f"{self.path}!{posixpath.join(self._prefix, rel)}"

    @cached_property
    def _tree(self) -> dict[str, set[str]]:
        """Zip only: folder -> names directly under it (folders implied by their files)."""
        tree: dict[str, set[str]] = {}
        cut = len(self._prefix) + 1 if self._prefix else 0
        for name in self._zip.namelist():
            if self._prefix and not name.startswith(self._prefix + "/"):
                continue
            parts = name[cut:].rstrip("/").split("/")
            for i in range(len(parts)):
                tree.setdefault("/".join(parts[:i]), set()).add(parts[i])
        return tree

    def exists(self, rel: str) -> bool:
        if self._zip is None:
            return (self._root / rel).exists()
        folder, name = posixpath.split(rel)
        return name in self._tree.get(folder, ())

    def is_dir(self, rel: str) -> bool:
        if self._zip is None:
            return (self._root / rel).is_dir()
        return rel in self._tree

    def listdir(self, rel: str) -> list[str]:
        """Names directly under folder ``rel`` (empty if it does not exist)."""
        if self._zip is None:
            folder = self._root / rel
            return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        return sorted(self._tree.get(rel, ()))

    def files_under(self, rel: str) -> list[str]:
        """Every file below folder ``rel``, as paths relative to ``rel``."""
        out = []
        for name in self.listdir(rel):
            child = posixpath.join(rel, name)
            if self.is_dir(child):
                out += [posixpath.join(name, f) for f in self.files_under(child)]
            else:
                out.append(name)
        return out

    def read(self, rel: str) -> bytes:
        try:
            if self._zip is None:
                return (self._root / rel).read_bytes()
            return self._zip.read(posixpath.join(self._prefix, rel))
        except (OSError, KeyError, zipfile.BadZipFile) as exc:
            raise ReleaseError(f"{self.describe(rel)}: cannot read ({exc})") from None

    @cached_property
    def _examples(self) -> tuple[list[str], np.ndarray]:
        """Example folder names and their two numbers (NaN when a name is not two numbers)."""
        names = self.listdir("examples")
        pairs = np.full((len(names), 2), np.nan)
        for i, name in enumerate(names):
            a, sep, b = name.rpartition("_")
            try:
                pairs[i] = (float(a), float(b)) if sep else (np.nan, np.nan)
            except ValueError:
                continue
        return names, pairs

    def example_folder(self, example_path: str, lat: float, lon: float) -> tuple[str | None, str]:
        """``(folder, "")`` for a CSV row, or ``(None, reason)``; lat_lon or lon_lat names."""
        names, pairs = self._examples
        near = lambda v, w: np.abs(v - w) < COORD_TOLERANCE  # noqa: E731
        match = (near(pairs[:, 0], lat) & near(pairs[:, 1], lon)) | (
            near(pairs[:, 0], lon) & near(pairs[:, 1], lat))
        given = posixpath.basename(str(example_path).rstrip("/"))
        if given in names and not match[names.index(given)]:
            return None, f"folder examples/{given} does not match the CSV lat/lon ({lat}, {lon})"
        hits = [names[i] for i in np.flatnonzero(match)]
        if given in hits:
            return f"examples/{given}", ""
        if len(hits) == 1:
            return f"examples/{hits[0]}", ""
        if hits:
            return None, f"several folders match lat/lon ({lat}, {lon}): {hits[:3]}"
        return None, f"no example folder for lat/lon ({lat}, {lon}) (looked for {example_path})"
