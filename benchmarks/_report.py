"""What the benchmark scripts share: write one result row as JSON next to its run and print it."""

from __future__ import annotations

import json
from pathlib import Path


def save_row(row: dict, path: str | Path) -> None:
    """Write ``row`` to ``path`` as indented JSON and print it as aligned ``key  value`` lines."""
    Path(path).write_text(json.dumps(row, indent=2))
    width = max(len(k) for k in row)
    for k, v in row.items():
        print(f"{k:<{width}}  {v}")
