"""Small on-disk caches of derivable values ($CLREPRO_CACHE, default ~/.cache/clrepro) and the source digests
they are keyed by. Used by the targets' catalog, the cost estimates and the report's figures; imports no torch."""
from __future__ import annotations

import functools
import glob
import hashlib
import json
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root


def cache_dir() -> str:
    return os.environ.get("CLREPRO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "clrepro")


@functools.lru_cache(maxsize=None)
def source_digest(package: str) -> str:
    """sha256 of a package's .py sources (names and bytes): a changed model invalidates its cached FLOPs."""
    h = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(REPO, package, "**", "*.py"), recursive=True)):
        h.update(os.path.relpath(path, REPO).encode())
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


class DiskCache:
    """A small JSON dict on disk, read once, written atomically when something new was computed."""

    def __init__(self, name: str):
        self.name, self._data = name, None

    @property
    def path(self) -> str:
        return os.path.join(cache_dir(), self.name)

    def _load(self) -> dict:
        if self._data is None:
            try:
                with open(self.path) as f:
                    self._data = json.load(f)
                if not isinstance(self._data, dict):
                    self._data = {}
            except (OSError, ValueError):
                self._data = {}
        return self._data

    def get(self, key: str, compute):
        data = self._load()
        if key not in data:
            self.put(key, compute())
        return data[key]

    def put(self, key: str, value) -> None:
        data = self._load()
        data[key] = value
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            tmp = f"{self.path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump(data, f)
            os.replace(tmp, self.path)
        except OSError:
            pass  # a read-only cache only costs speed
