"""Where imagegen keeps what it can rebuild: downloaded datasets, decoded folders, reference statistics,
latent codes, the partial rows of stopped evaluations. ``$IMAGEGEN_CACHE``, else ``~/.cache/imagegen``.

At the bottom of the package's layers (it imports nothing of imagegen), so that both ``checkpoint`` (its
partial rows) and ``data`` (its folder cache, written with ``checkpoint``'s atomic writes) can use it.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    root = os.environ.get("IMAGEGEN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "imagegen")
    return Path(root)
