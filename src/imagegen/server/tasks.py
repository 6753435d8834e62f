"""What a job does, as calls to the Python API (``LoadedModel.sample / complete / denoise / interpolate``),
and the table of restoration tasks the Restore panel lists.

These functions run in a run's worker thread (imagegen.server.jobs); the request handlers only check the
request and hand them tensors. A new restoration task is one entry in ``RESTORE_TASKS``: the page builds
its form from the entry's ``params`` (GET /api/capabilities), so it needs no change.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..api import LoadedModel
from ..data import make_mask, to_float
from ..errors import ImagegenError
from .images import data_url, quantise

# Preset masks (1 = keep): the first four are ``imagegen complete --keep``'s; the centre square erases the
# middle quarter of the area, the classic inpainting hole (Pathak et al. 2016 drop a centre region).
MASK_PRESETS = ("keep-top-half", "keep-bottom-half", "keep-left-half", "keep-right-half", "erase-centre-square")


def preset_mask(name: str, info) -> torch.Tensor:
    """(1, 1, H, W) keep-mask for a preset name."""
    if name.startswith("keep-") and name in MASK_PRESETS:
        return make_mask(name[len("keep-"):], info)
    if name == "erase-centre-square":
        s = info.size
        mask = torch.ones(1, 1, s, s)
        mask[:, :, s // 4: s - s // 4, s // 4: s - s // 4] = 0
        return mask
    raise ImagegenError(f"unknown mask preset '{name}'; use one of: {', '.join(MASK_PRESETS)}")


def result(x: torch.Tensor, labels: torch.Tensor | None, nrow: int, inputs: dict[str, torch.Tensor],
           seconds: float) -> dict:
    """A job's result: uint8 images for the downloads, and the JSON the page shows (PNG data URLs)."""
    u8 = quantise(x)
    ins = {k: quantise(v)[0] for k, v in inputs.items()}
    public = {"images": [data_url(im) for im in u8], "nrow": nrow, "count": int(u8.shape[0]),
              "labels": None if labels is None else [int(v) for v in labels.flatten().tolist()],
              "inputs": {k: data_url(v) for k, v in ins.items()}, "model_seconds": round(seconds, 4),
              "shape": list(u8.shape[1:])}
    return {"public": public, "images": u8, "labels": labels, "nrow": nrow}


def sample_job(model: LoadedModel, n: int, labels, seed: int, options: dict) -> Callable[[], dict]:
    def run() -> dict:
        t0 = time.perf_counter()
        x = model.sample(n, labels=labels, seed=seed, **options)
        return result(x, labels, max(1, math.ceil(math.sqrt(n))), {}, time.perf_counter() - t0)
    return run


def complete_job(model: LoadedModel, x: torch.Tensor, mask: torch.Tensor, n: int, labels, seed: int,
                 options: dict) -> Callable[[], dict]:
    """x (1, C, H, W), mask (1, 1, H, W): ``n`` completions of the same input."""
    def run() -> dict:
        t0 = time.perf_counter()
        xs, ms = x.expand(n, -1, -1, -1).clone(), mask.expand(n, -1, -1, -1).clone()
        filled = model.complete(xs, ms, labels=labels, seed=seed, **options)
        masked = x * mask + (1 - mask) * -1  # the unknown part shown black, as imagegen complete does
        return result(filled, None, n, {"image": x, "masked": masked, "mask": mask * 2 - 1},
                      time.perf_counter() - t0)
    return run


def interpolate_job(model: LoadedModel, a, b, seeds, frames: int, labels, seed: int,
                    options: dict) -> Callable[[], dict]:
    def run() -> dict:
        t0 = time.perf_counter()
        extra = {} if seeds is None else {"seeds": tuple(seeds)}
        strip = model.interpolate(a, b, frames, labels=labels, seed=seed, **options, **extra)
        inputs = {} if a is None else {"a": a, "b": b}
        return result(strip, None, frames, inputs, time.perf_counter() - t0)
    return run


# ---------------------------------------------------------------------------------------------- restoration


@dataclass(frozen=True)
class Param:
    """A numeric parameter of a restoration task, as the page's form shows it."""

    name: str
    default: float
    lo: float
    hi: float
    step: float
    help: str

    def to_dict(self) -> dict:
        return {"name": self.name, "type": "float", "default": self.default, "min": self.lo, "max": self.hi,
                "step": self.step, "help": self.help}


@dataclass(frozen=True)
class RestoreTask:
    """``op`` is the family contract function the task calls (its options are the family's options of that
    function); ``offered(model)`` says whether a run lists the task (default: its family has ``op``);
    ``degrade`` makes the measurement from the given image (seeded), ``show`` turns a measurement into an
    image of the model's shape for the page, ``restore`` calls the Python API."""

    name: str
    label: str
    op: str
    help: str
    params: tuple[Param, ...]
    degrade: Callable[[torch.Tensor, dict, torch.Generator], torch.Tensor]
    restore: Callable[..., torch.Tensor]
    offered: Callable[[LoadedModel], bool] | None = None
    show: Callable[[torch.Tensor], torch.Tensor] = field(default=lambda y: y)

    def offered_by(self, model: LoadedModel) -> bool:
        return self.offered(model) if self.offered is not None else hasattr(model.fam, self.op)

    def to_dict(self) -> dict:
        return {"name": self.name, "label": self.label, "op": self.op, "help": self.help,
                "params": [p.to_dict() for p in self.params]}


def _add_noise(x: torch.Tensor, params: dict, g: torch.Generator) -> torch.Tensor:
    """x + noise_level * N(0, I), clamped and quantised to 8 bits: the noisy image is a real image, exactly
    the one the model is shown and the page displays."""
    noisy = (x + params["noise_level"] * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    return to_float(quantise(noisy))


def _denoise(model: LoadedModel, x: torch.Tensor, params: dict, labels, seed: int, options: dict) -> torch.Tensor:
    return model.denoise(x, params["strength"], labels=labels, seed=seed, **options)


def _offers(task: str, check=lambda model: True) -> Callable[[LoadedModel], bool]:
    """Offered when the model's ``restore`` solves ``task`` (LoadedModel.restore_tasks: its family's, or
    inpainting alone for a latent model) and ``check(model)`` holds (a size or channel count)."""
    def offered(model: LoadedModel) -> bool:
        return task in model.restore_tasks and check(model)
    return offered


def _quantised(y: torch.Tensor) -> torch.Tensor:
    return to_float(quantise(y))  # the measurement as an 8-bit image, as a user's file would be


def _sr(k: int) -> RestoreTask:
    """Super-resolution by k through the shared operators (average pooling; restoration.Downsample)."""
    return RestoreTask(
        name=f"sr{k}", label=f"Super-resolution x{k}", op="restore",
        help=f"Average-pool the image {k} x {k} (the measurement), then restore full resolution with the "
             "family's restore (docs/restoration.md).",
        params=(), degrade=lambda x, p, g: _quantised(F.avg_pool2d(x, k)),
        restore=lambda m, y, p, labels, seed, o: m.restore(y, f"sr{k}", labels=labels, seed=seed, **o),
        offered=_offers("sr", lambda m: m.info.size % k == 0),
        show=lambda y: y.repeat_interleave(k, 2).repeat_interleave(k, 3))


RESTORE_TASKS: dict[str, RestoreTask] = {
    "denoise": RestoreTask(
        name="denoise", label="Denoise", op="denoise",
        help="Add Gaussian noise (noise level 0 takes the image as it is), then denoise it: SDEdit for "
             "diffusion models (Meng et al. 2022), strength 0 keeps the image, 1 ignores it.",
        params=(Param("noise_level", 0.3, 0.0, 1.0, 0.05, "std of the added noise, pixels in [-1, 1]"),
                Param("strength", 0.5, 0.0, 1.0, 0.05, "how far up the noise schedule to start (0..1)")),
        degrade=_add_noise, restore=_denoise),
    "sr2": _sr(2),
    "sr4": _sr(4),
    "colourise": RestoreTask(
        name="colourise", label="Colourise", op="restore",
        help="Average the colour channels (the measurement is a grey image), then restore the colour with the "
             "family's restore (docs/restoration.md).",
        params=(), degrade=lambda x, p, g: _quantised(x.mean(1, keepdim=True)),
        restore=lambda m, y, p, labels, seed, o: m.restore(y, "colourise", labels=labels, seed=seed, **o),
        offered=_offers("colourise", lambda m: m.info.channels == 3),
        show=lambda y: y.expand(-1, 3, -1, -1)),
}


def restore_tasks_for(model: LoadedModel) -> list[str]:
    return [name for name, t in RESTORE_TASKS.items() if t.offered_by(model)]


def check_params(task: RestoreTask, given: dict) -> dict:
    spec = {p.name: p for p in task.params}
    unknown = [k for k in given if k not in spec]
    if unknown:
        raise ImagegenError(f"restore task '{task.name}' does not take '{unknown[0]}'; it takes: "
                            f"{', '.join(spec) or 'nothing'}")
    out = {}
    for name, p in spec.items():
        v = given.get(name, p.default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not p.lo <= v <= p.hi:
            raise ImagegenError(f"restore parameter {name} must be a number in [{p.lo}, {p.hi}], got {v!r}")
        out[name] = float(v)
    return out


def restore_job(model: LoadedModel, task: RestoreTask, x: torch.Tensor, params: dict, n: int, labels, seed: int,
                options: dict) -> Callable[[], dict]:
    def run() -> dict:
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(seed)
        y = task.degrade(x, params, g)  # (1, C', H', W'): the measurement
        after = task.restore(model, y.expand(n, -1, -1, -1).clone(), params, labels, seed, options)
        return result(after, None, n, {"original": x, "degraded": task.show(y)}, time.perf_counter() - t0)
    return run
