"""The model zoo: small pretrained models that ship inside the package (docs/zoo.md).

Each model is a run directory under ``imagegen/zoo/<name>/`` (one checkpoint holding only the weights that
sample, its ``config.json``, its training log ``metrics.jsonl``, the evaluation it was measured with and the
``sampling.json`` options of that measurement), listed in ``imagegen/zoo/index.json`` with its family, data,
parameter count, size, sha256, how it was trained (the benchmark command, commit, hardware, minutes) and its
measured numbers. ``zoo:NAME`` stands for that directory wherever a run is taken (``imagegen sample
zoo:diffusion-mnist``, ``imagegen.load("zoo:gan-mnist")``, ``report zoo:*``); the checkpoint's sha256 is checked
against the index every time it is resolved, so a changed file is refused. ``benchmarks/zoo_build.py`` writes
the entries from a ``benchmarks/speedrun.py`` output folder.
"""

from __future__ import annotations

import fnmatch
import json
from functools import lru_cache
from pathlib import Path

from .cache import file_sha256
from .errors import ImagegenError

PREFIX = "zoo:"
ZOO_DIR = Path(__file__).parent / "zoo"
INDEX = "index.json"
FORMAT = 1


def is_zoo(spec) -> bool:
    return isinstance(spec, (str, Path)) and str(spec).startswith(PREFIX)


def entries(zoo_dir: Path | None = None) -> dict[str, dict]:
    """name -> entry of the zoo's index (empty when no zoo ships)."""
    return _read_index(str(zoo_dir or ZOO_DIR))


@lru_cache(maxsize=4)
def _read_index(zoo_dir: str) -> dict[str, dict]:
    path = Path(zoo_dir) / INDEX
    if not path.is_file():
        return {}
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ImagegenError(f"the zoo's index {path} is not readable ({e}); reinstall imagegen") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT or not isinstance(d.get("models"), dict):
        raise ImagegenError(f"the zoo's index {path} is not a format-{FORMAT} zoo index; reinstall imagegen")
    return d["models"]


def entry(name: str, zoo_dir: Path | None = None) -> dict:
    models = entries(zoo_dir)
    if name not in models:
        known = ", ".join(sorted(models)) or "none (this install ships no zoo)"
        raise ImagegenError(f"no zoo model '{name}'; the zoo has: {known} ('imagegen zoo' lists them)")
    return models[name]


def resolve(spec, zoo_dir: Path | None = None) -> Path:
    """``zoo:NAME`` -> that model's run directory, after checking its checkpoint against the index's sha256.
    Anything else is returned as a Path, unchanged."""
    if not is_zoo(spec):
        return Path(spec)
    name = str(spec)[len(PREFIX):]
    e = entry(name, zoo_dir)
    root = Path(zoo_dir or ZOO_DIR)
    file = root / e["checkpoint"]
    if not file.is_file():
        raise ImagegenError(f"zoo model '{name}' is missing its checkpoint {file}; reinstall imagegen")
    sha = file_sha256(file)
    if sha != e["sha256"]:
        raise ImagegenError(f"zoo model '{name}': {file} has changed (sha256 {sha[:12]}, the index says "
                            f"{e['sha256'][:12]}); reinstall imagegen or rebuild it with benchmarks/zoo_build.py")
    return root / name


def expand(specs, zoo_dir: Path | None = None, samplers_only: bool = True) -> list:
    """Run arguments with ``zoo:PATTERN`` (``zoo:*``, ``zoo:gan-*``, ``zoo:*-fashion-mnist``) expanded to
    ``zoo:NAME`` for every matching model that draws samples (``samplers_only``; a first stage is named exactly);
    anything else is kept as it is. A pattern that matches nothing is a one-line error."""
    out: list = []
    for spec in specs:
        name = str(spec)[len(PREFIX):] if is_zoo(spec) else None
        if name is not None and any(ch in name for ch in "*?["):
            models = entries(zoo_dir)
            hits = [n for n in sorted(models) if fnmatch.fnmatchcase(n, name)
                    and (not samplers_only or models[n].get("draws_samples", True))]
            if not hits:
                raise ImagegenError(f"{spec} matches no zoo model; the zoo has: {', '.join(sorted(models)) or 'none'}")
            out += [PREFIX + n for n in hits]
        else:
            out.append(spec)
    return out


def run_paths(specs, zoo_dir: Path | None = None) -> list[Path]:
    """:func:`expand`, then every ``zoo:NAME`` as its run directory: for what reads a run's folder."""
    return [resolve(s, zoo_dir) for s in expand(specs, zoo_dir)]


def describe(name: str, e: dict) -> str:
    """One paragraph per model for ``imagegen zoo``."""
    m = e.get("metrics", {})
    nums = ", ".join(f"{k} {m[k]:.4g}" for k in ("cfd", "cscore", "cacc", "fid", "psnr_db")
                     if isinstance(m.get(k), (int, float)))
    trained = e.get("trained", {})
    lines = [f"zoo:{name}",
             f"  {e['family']} on {e['data']}, recipe {e.get('recipe', '-')}, {e['params']:,} parameters, "
             f"{e['bytes'] / 1e6:.1f} MB"
             + (f", on the codes of zoo:{e['first_stage']}" if e.get("first_stage") else ""),
             f"  trained {trained.get('minutes', '?')} min on {trained.get('hardware', '?')} at commit "
             f"{trained.get('commit', '?')}: {trained.get('command', '?')}"]
    if nums:
        lines.append(f"  measured: {nums} ({m.get('protocol', '')})")
    if e.get("sampling"):
        lines.append(f"  samples with: {json.dumps(e['sampling'])}")
    return "\n".join(lines)
