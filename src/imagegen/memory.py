"""Will a config fit in memory? Estimates made before anything large is allocated.

A config such as ``--image-size 4096``, ``train.batch_size=100000`` or ``model.base_channels=100000`` used to
end in a raw allocator traceback ("you tried to allocate 60000000000000 bytes") after the data had been
resized and the model built. Two checks now stop such a run first, with a one-line ``ImagegenError`` that
names the setting and what fits:

* ``check_data`` (called by the loaders before they resize or decode): the uint8 data tensor, N x C x S x S
  bytes, plus the loader's float intermediates;
* ``check_training`` (called once by the trainer, before the real model is built): the model's weights,
  gradients, optimiser state and EMA copy, plus the activations of one batch through ``train_step``.

How one batch is measured: the family builds its model on PyTorch's ``meta`` device (tensors with shapes and
dtypes but no storage, so a 10^12-parameter model costs nothing) and runs its own ``train_step`` (forward,
backward, gradient clipping: the same code a real step runs) on a meta batch of ``train.batch_size`` B images and
one of 2B, under a ``TorchDispatchMode`` that adds up the bytes of every tensor storage created and subtracts
them when the storage is freed. The peak of that sum at B is the step's memory, measured, not extrapolated (a
small batch's peak may sit in the optimiser update, not the activations); the growth from B to 2B is the cost
per image, which is linear in the batch, and gives the largest batch that fits. This needs no hand-written
per-layer formula (which every new family or layer would silently break), runs no arithmetic (a fraction of a
second, whatever the sizes) and reads the family only through its contract. ``.item()`` on a meta tensor (a
logged float, a health check) has no value; the mode answers 1 (a step count, a loss) or False (a "something
is wrong" flag) so the step runs through. If a family's step cannot run on meta at all, only the weights are
checked (the estimate never blocks a run it cannot judge).

Available memory: on CUDA, ``torch.cuda.mem_get_info`` (free bytes of the device); on the CPU, MemAvailable
from /proc/meminfo, lowered to the cgroup limit's headroom where a container sets one, else
``os.sysconf`` (free physical pages).
"""

from __future__ import annotations

import json
import math
import os
import weakref
from dataclasses import MISSING, fields
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .config import replace
from .errors import ImagegenError
from .families.base import Batch, default_optimizers

GiB = 1024**3


def fmt_bytes(n: float) -> str:
    for unit, scale in (("TiB", 1024**4), ("GiB", GiB), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def _cgroup_headroom() -> int | None:
    """Bytes the cgroup (v2, else v1) still lets this process allocate, or None without a limit."""
    for limit_f, usage_f in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                             ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                              "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_f).read_text().strip()
            usage = int(Path(usage_f).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= 1 << 60:
            return None
        return max(0, int(limit) - usage)
    return None


def available_bytes(device: torch.device | str | None = None) -> int:
    """Memory a new allocation can use now: free device memory on CUDA, available RAM on the CPU."""
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return 1 << 62  # nothing to read (not Linux, no sysconf): do not block the run
    cg = _cgroup_headroom()
    return min(avail, cg) if cg is not None else avail


def _where(device) -> str:
    device = torch.device(device or "cpu")
    return "the GPU" if device.type == "cuda" else "memory"


# ---------------------------------------------------------------------------------------------- data


def check_data(n: int, channels: int, size: int, what: str, extra_per_image: int = 0,
               device: torch.device | str | None = None) -> None:
    """Refuse to build an (n, channels, size, size) uint8 data tensor (plus ``extra_per_image`` bytes of
    intermediates per image) that cannot fit; ``what`` names the data (e.g. "the digits train split")."""
    per_image = channels * size * size + extra_per_image
    need = n * per_image
    avail = available_bytes(device)
    if need <= avail:
        return
    # per image ~ size^2: the largest size that fits
    fits = int(size * math.sqrt(avail / need)) if avail > 0 else 0
    hint = (f"at most data.image_size={fits} fits (--image-size {fits})" if fits >= 1
            else "free some memory or use data.limit=N for fewer images")
    raise ImagegenError(f"data.image_size={size} makes {what} {n} x {channels} x {size} x {size} "
                        f"= {fmt_bytes(need)} but {fmt_bytes(avail)} of {_where(device)} is available; {hint}")


# ---------------------------------------------------------------------------------------------- one training step


class _StorageBytes(TorchDispatchMode):
    """Adds up the bytes of the meta tensor storages created under it (live now and at the peak)."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._ids: set[int] = set()

    def _freed(self, key: int, nbytes: int) -> None:
        self._ids.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:  # .item() / float() / bool() of a meta tensor
            return False if args[0].dtype == torch.bool else 1
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type == "meta":
                s = t.untyped_storage()
                key = id(s)
                if key in self._ids:
                    continue  # a view, or an in-place op's result: no new storage
                nbytes = s.nbytes()
                self._ids.add(key)
                weakref.finalize(s, self._freed, key, nbytes)
                self.live += nbytes
                self.peak = max(self.peak, self.live)
        return out


class _MetaAccel:
    """What a family's ``train_step`` uses of accelerate's Accelerator, for a step on the meta device."""

    sync_gradients = True
    num_processes = 1
    device = torch.device("meta")

    def backward(self, loss):
        loss.backward()

    def clip_grad_norm_(self, params, max_norm):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    def unwrap_model(self, model):
        return model


def _build_meta(fam, cfg, info):
    with torch.device("meta"):
        return fam.build(cfg.model, info)


def _step_peak(fam, cfg, info, model: torch.nn.Module, batch_size: int) -> int:
    """Peak bytes of the tensors one ``train_step`` on a meta batch of ``batch_size`` creates (activations and
    gradients), the weights themselves not counted. The optimisers' ``step`` is skipped: on meta each of its
    per-tensor ops runs a Python decomposition (half the time of the whole step), and what it allocates is
    known without running it (see ``estimate_training``)."""
    model.train()
    opts = (fam.configure_optimizers(model, cfg.model, cfg.train) if hasattr(fam, "configure_optimizers")
            else default_optimizers(model, cfg.model, cfg.train))
    for opt in opts.values():
        opt.step = lambda *a, **k: None  # this throwaway optimiser only; zero_grad still frees the gradients
    x = torch.empty(batch_size, info.channels, info.size, info.size, device="meta")
    y = torch.zeros(batch_size, dtype=torch.long, device="meta") if info.num_classes else None
    mode = _StorageBytes()
    with mode:
        fam.train_step(model, Batch(x, y), opts, 1, _MetaAccel(), grad_clip=cfg.train.grad_clip)
    return mode.peak


_CACHE: dict[str, dict] = {}  # one process trains one config many times in tests and resumes: measure once


def estimate_training(fam, cfg, info, slope: bool = False) -> dict:
    """Bytes of one training step at ``train.batch_size`` B: {"params": weights, EMA copy and optimiser state,
    "step": the peak of what the step creates (activations, gradients, the batch), "per_image": how much that
    peak grows per image of the batch (with ``slope``; else None), "measured": whether the meta step ran,
    "num_params"}.

    The step is measured at B itself, so the estimate is not an extrapolation from a small batch; ``slope``
    measures 2B too (free on meta, but it doubles the time), which gives the largest batch that fits. The
    optimiser state is counted as two tensors per parameter (Adam's first and second moments, what every
    family's optimiser keeps), and its update's temporaries as one more at the end of the step, when the
    activations are gone."""
    bs = cfg.train.batch_size
    key = json.dumps([fam.__name__, cfg.to_dict()["model"], info.to_dict(), bs, cfg.train.ema_decay > 0,
                      cfg.train.grad_clip, slope], sort_keys=True, default=str)
    if key in _CACHE:
        return dict(_CACHE[key])
    with torch.random.fork_rng(devices=[]):  # the estimate must not move the run's random stream
        try:
            model = _build_meta(fam, cfg, info)
        except (RuntimeError, TypeError, OverflowError) as e:  # a tensor of more than 2^63 elements
            if "overflow" not in str(e).lower():
                raise
            raise ImagegenError(f"the model is too large to build (a weight would have more than 2^63 "
                                f"elements); lower {_width_keys(cfg.model)}") from None
        weights = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
        buffers = sum(b.numel() * b.element_size() for b in model.buffers())
        ema = 2 if cfg.train.ema_decay > 0 else 1  # AveragedModel holds a full copy
        out = {"params": (weights + buffers) * ema + 2 * weights, "step": weights, "per_image": None,
               "measured": False, "num_params": sum(p.numel() for p in model.parameters())}
        try:
            p1 = _step_peak(fam, cfg, info, model, bs)
            p2 = _step_peak(fam, cfg, info, model, 2 * bs) if slope else None
        except ImagegenError:
            raise
        except Exception:  # an op without a meta kernel: judge by the weights alone
            _CACHE[key] = out
            return dict(out)
    # the batch itself as the trainer makes it: gathered uint8, float in [-1, 1], (h)flipped copy
    batch = info.channels * info.size * info.size * (1 + 4 + 4)
    # the update: gradients (still live) + one temporary per parameter, after the activations are freed
    out.update(step=max(p1 + batch * bs, 2 * weights), measured=True)
    if p2 is not None:
        out["per_image"] = max(0.0, (p2 - p1) / bs) + batch
    _CACHE[key] = out
    return dict(out)


def _width_keys(model_cfg) -> str:
    """The model.* widths to lower: those set above their default, else every width."""
    widths = [f for f in fields(model_cfg) if f.type in ("int", int) and ("channels" in f.name or "dim" in f.name)]
    raised = [f for f in widths if f.default is not MISSING and isinstance(getattr(model_cfg, f.name), int)
              and getattr(model_cfg, f.name) > f.default]
    return ", ".join(f"model.{f.name}={getattr(model_cfg, f.name)}" for f in (raised or widths)) or "the model's width"


def check_training(cfg, fam, info, device, data_bytes: int = 0, n_images: int | None = None) -> dict:
    """Refuse a config whose model and one batch will not fit on ``device`` (plus ``data_bytes`` of data
    the trainer keeps there); returns the estimate. Called once by the trainer, before the model is built.
    ``n_images``: the training set's size, which caps the batch (the batch sampler never draws more)."""
    device = torch.device(device)
    if n_images is not None and 0 < n_images < cfg.train.batch_size:
        cfg = replace(cfg, train=replace(cfg.train, batch_size=n_images))
    est = estimate_training(fam, cfg, info)
    bs = cfg.train.batch_size
    on_device = data_bytes if device.type == "cuda" else 0  # on the CPU the data is already loaded
    need = est["params"] + est["step"] + on_device
    avail = available_bytes(device)
    if need <= avail:
        return est
    est = estimate_training(fam, cfg, info, slope=True)  # it does not fit: how much does?
    where = _where(device)
    fixed = max(0.0, est["step"] - (est["per_image"] or 0.0) * bs)  # gradients and optimiser state
    model_b = est["params"] + fixed + on_device
    per_image = est["per_image"] or 0.0
    head = (f"one training step needs about {fmt_bytes(need)} of {where} ({est['num_params']:,} parameters: "
            f"{fmt_bytes(model_b)} with gradients, optimiser state and EMA; {fmt_bytes(per_image)} per image "
            f"of the batch)")
    if model_b > avail:
        raise ImagegenError(f"the model is too large: {head} but {fmt_bytes(avail)} is available; lower "
                            f"{_width_keys(cfg.model)}")
    fits = int((avail - model_b) // per_image) if per_image else bs
    if fits >= 1:
        raise ImagegenError(f"train.batch_size={bs} is too large: {head} but {fmt_bytes(avail)} is available; "
                            f"at most train.batch_size={fits} fits (raise train.grad_accum_steps to keep the "
                            f"effective batch)")
    size = info.size
    size_fits = int(size * math.sqrt((avail - model_b) / per_image)) if per_image else size
    raise ImagegenError(f"data.image_size={size} is too large for this model: {head}, so not even one image "
                        f"fits in the {fmt_bytes(avail)} available; at most data.image_size={size_fits} fits "
                        f"(or lower {_width_keys(cfg.model)})")


__all__ = ["available_bytes", "check_data", "check_training", "estimate_training", "fmt_bytes"]
