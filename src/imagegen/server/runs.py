"""The runs a server was started with: each loaded once through ``imagegen.load`` and kept, with what the
page needs to know about it (family, data, step, saved metrics, the family's options, its test images).

A request names a run by its index in the list the server was started with; no path ever comes from a
request. The only files read after start-up are the run's own sample grids (listed here, requested by a
name that must be in that listing) and the dataset the run was trained on (read from its saved config).
"""

from __future__ import annotations

import inspect
import json
import math
import re
import threading
from dataclasses import replace
from pathlib import Path

import torch

from .. import registry, zoo
from ..api import LoadedModel, load
from ..data import load_dataset
from ..errors import ImagegenError
from ..evaluation.runs import is_nll_result, saved_results

# The contract functions the server offers, and the arguments of each that the request fills itself (the
# rest, those with a default, are the family's own options, discovered from its signature).
OPS = {
    "sample": {"n"},
    "complete": {"x", "mask"},
    "denoise": {"x", "strength"},
    "interpolate": {"a", "b", "frames", "seeds"},
    "restore": {"y", "operator", "mask"},  # imagegen.restoration's general restore, where a family has it
}
_ALWAYS = {"model", "labels", "generator"}
_TYPES = {bool: "bool", int: "int", float: "float", str: "str"}
_GRID_NAME = re.compile(r"^step-\d{8}\.png$")


def family_options(family: str, op: str) -> list[dict] | None:
    """The options of family ``op`` (None when the family does not offer it), from ``inspect.signature``:
    name, type (bool/int/float/str, from the default), default and, where the family lists them in
    ``SAMPLE_CHOICES``, the values it takes. An option whose default is None has no type to check and is
    left out."""
    fam = registry.get_family(family)
    fn = getattr(fam, op, None)
    if fn is None or (op == "sample" and not registry.generative(family)):  # the autoencoder draws none
        return None
    choices = getattr(fam, "SAMPLE_CHOICES", {}) or {}
    out = []
    for name, p in inspect.signature(fn).parameters.items():
        if name in _ALWAYS or name in OPS.get(op, ()) or p.default is inspect.Parameter.empty:
            continue
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        typ = _TYPES.get(type(p.default))
        if typ is None:
            continue
        opt = {"name": name, "type": typ, "default": p.default}
        if name in choices:
            opt["choices"] = list(choices[name])
        out.append(opt)
    return out


def takes(family: str, op: str, arg: str) -> bool:
    fn = getattr(registry.get_family(family), op, None)
    return fn is not None and arg in inspect.signature(fn).parameters


class Run:
    """One loaded run: the model, its metadata, and lazily its test split."""

    def __init__(self, index: int, path: Path, model: LoadedModel):
        self.index, self.path, self.model = index, path, model
        self.name = path.name if path.is_dir() else path.stem
        self._test = None  # (uint8 images, labels) or an error message
        self._test_lock = threading.Lock()

    # ------------------------------------------------------------------ what the page shows
    def summary(self) -> dict:
        m, info = self.model, self.model.info
        ops = {op: family_options(m.family, op) for op in OPS}
        if ops.get("sample"):  # the run's own sampling defaults (its sampling.json) are what the page starts from
            ops["sample"] = [{**o, "default": m.sample_defaults.get(o["name"], o["default"])} for o in ops["sample"]]
        return {
            "id": self.index, "name": self.name, "family": m.family, "dataset": info.name,
            "channels": info.channels, "size": info.size, "num_classes": info.num_classes,
            "class_names": list(info.class_names), "class_conditional": m.class_conditional,
            "step": m.step, "images_seen": int(m.meta.get("images_seen", 0)),
            "train_seconds": float(m.meta.get("elapsed_s", 0.0)), "checkpoint": m.path.name,
            "ops": {op: {"options": o} for op, o in ops.items() if o is not None},
            "interpolate_modes": self.interpolate_modes(),
            "metrics": self.saved_metrics(),
        }

    def interpolate_modes(self) -> list[str]:
        if not takes(self.model.family, "interpolate", "a"):
            return []
        modes = ["images"]
        if takes(self.model.family, "interpolate", "seeds"):
            modes.insert(0, "seeds")
        return modes

    def detail(self) -> dict:
        out = self.summary()
        out["config"] = self.model.meta.get("config", {})
        out["sample_grids"] = self.sample_grids()
        out["test_images"] = self.test_status()
        return out

    def sample_grids(self) -> list[str]:
        d = self.path / "samples"
        if not self.path.is_dir() or not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir() if _GRID_NAME.match(p.name) and p.is_file())

    def sample_grid_path(self, name: str) -> Path:
        """The grid file ``name``, only if it is one of this run's grids (so no request reaches any other file)."""
        if name not in self.sample_grids():
            raise KeyError(name)
        return self.path / "samples" / name

    def saved_metrics(self) -> dict:
        """The last evaluation logged while training (evals.jsonl) and the summaries of the result files
        saved in the run directory (eval, compare, eval-nll, the benchmarks): name -> {metric: value}."""
        out: dict = {}
        if not self.path.is_dir():
            return out
        evals = self.path / "evals.jsonl"
        if evals.is_file():
            lines = evals.read_text(errors="replace").strip().splitlines()
            try:
                last = json.loads(lines[-1]) if lines else None
            except ValueError:
                last = None
            if isinstance(last, dict):
                out["evals.jsonl"] = _numbers(last)
        for p, d in saved_results(self.path):
            if is_nll_result(d):  # eval-nll's: its own two numbers (its summary repeats them)
                out[p.name] = _numbers({"nats": d["nats"], "bits_per_dim": d["bits_per_dim"]})
            elif isinstance(d.get("summary"), dict) and d["summary"]:
                out[p.name] = _numbers(d["summary"])
        return {k: v for k, v in out.items() if v}

    # ------------------------------------------------------------------ test images
    def _load_test(self):
        """The test split of the run's dataset, when it is on disk (never downloaded by the server)."""
        with self._test_lock:
            if self._test is None:
                cfg = replace(self.model.config.data, download=False, limit=None)
                try:
                    ds = load_dataset(cfg, split="test")
                    info = self.model.info
                    if tuple(ds.images.shape[1:]) != (info.channels, info.size, info.size):
                        raise ImagegenError(f"the test images are {tuple(ds.images.shape[1:])}, the model "
                                            f"{(info.channels, info.size, info.size)}")
                    self._test = (ds.images.cpu(), None if ds.labels is None else ds.labels.cpu())
                except (ImagegenError, OSError, RuntimeError, ValueError) as e:
                    self._test = " ".join(str(e).split()) or type(e).__name__
            return self._test

    def test_status(self) -> dict:
        t = self._load_test()
        if isinstance(t, str):
            return {"available": False, "count": 0, "reason": t}
        return {"available": True, "count": int(t[0].shape[0])}

    def test_image(self, index: int) -> tuple[torch.Tensor, int | None]:
        """uint8 (C, H, W) and its label; IndexError / LookupError with a one-line message otherwise."""
        t = self._load_test()
        if isinstance(t, str):
            raise LookupError(f"run {self.index} ({self.name}) has no test images on disk: {t}")
        n = t[0].shape[0]
        if not 0 <= index < n:
            raise IndexError(f"test image {index} does not exist; run {self.index} has test images 0..{n - 1}")
        return t[0][index], None if t[1] is None else int(t[1][index])


def _numbers(d: dict) -> dict:
    return {k: v for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v) and not k.endswith("_std")}


def load_runs(paths, device: str = "auto") -> list[Run]:
    """Load every run once (duplicates, e.g. ``runs/a`` and ``runs/a/``, once). A path that is not a run is
    an ImagegenError naming it, before the server starts."""
    runs: list[Run] = []
    seen: set[Path] = set()
    for p in zoo.expand(paths):
        path = zoo.resolve(p).expanduser()  # zoo:NAME -> its folder; any other path as given
        if not path.exists():
            raise ImagegenError(f"{p} does not exist; give run directories made by 'imagegen train'")
        real = path.resolve()
        if real in seen:
            continue
        seen.add(real)
        try:
            model = load(real, device=device)
        except ImagegenError as e:
            raise ImagegenError(f"{p}: {e}") from None
        runs.append(Run(len(runs), real, model))
    if not runs:
        raise ImagegenError("give at least one run directory, e.g. imagegen serve runs/vae-digits")
    return runs
