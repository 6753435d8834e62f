"""Where imagegen keeps what it can rebuild: downloaded datasets, decoded folders, reference statistics,
latent codes, the partial rows of stopped evaluations. ``$IMAGEGEN_CACHE``, else ``~/.cache/imagegen``.

At the bottom of the package's layers (it imports nothing of imagegen), so that both ``checkpoint`` (its
partial rows) and ``data`` (its folder cache, written with ``checkpoint``'s atomic writes) can use it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_dir() -> Path:
    root = os.environ.get("IMAGEGEN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "imagegen")
    return Path(root)


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, memoised on (path, size, mtime) so a 90 MB network is hashed once per process (the
    feature networks, the first stages of latent models, the zoo's checkpoints)."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]
