"""What the benchmark scripts share: their entry point's error handling, and writing a result row."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path


def run_main(main: Callable[[], None]) -> None:
    """Run a script's ``main`` as the ``imagegen`` command runs its commands: a user mistake (a missing
    dataset, an unknown config key: ``ImagegenError``) is one line, ``error: ...``, exit status 2; Ctrl-C or
    SIGTERM exits 130 without a traceback (a stopped evaluation has already said what it kept)."""
    from imagegen.errors import ImagegenError

    try:
        main()
    except ImagegenError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        sys.exit(130)


def save_row(row: dict, path: str | Path) -> None:
    """Write ``row`` to ``path`` as indented JSON and print it as aligned ``key  value`` lines."""
    Path(path).write_text(json.dumps(row, indent=2))
    width = max(len(k) for k in row)
    for k, v in row.items():
        print(f"{k:<{width}}  {v}")


def pick(text: str, known, what: str) -> list[str]:
    """The names of a comma list (``--recipes a,b``), each checked against ``known``: an unknown one is the
    one-line ``ImagegenError`` naming the choices."""
    from imagegen.errors import ImagegenError

    names = [r for r in text.split(",") if r]
    unknown = [r for r in names if r not in known]
    if unknown:
        raise ImagegenError(f"unknown {what} '{unknown[0]}'; choose from {', '.join(known)}")
    return names
