"""A trained model restored from a checkpoint (:class:`LoadedModel`), :func:`load`, and the device choice.

Below the evaluator and the trainer in the layer order (see ``imagegen/__init__.py``): both use a loaded model,
and ``imagegen.api`` re-exports these as the public API.
"""

from __future__ import annotations

import inspect
import json
import operator
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import checkpoint, config, registry, restoration
from .config import check_range
from .data import DataInfo
from .device import pick_device
from .errors import ImagegenError
from .families.base import check_labels
from .latent import find_first_stage
from .rng import ImageGenerators


class LoadedModel:
    """A trained model restored from a checkpoint, in eval mode, with the family's operations.

    ``info`` describes the images the model takes and gives. A latent model (``first_stage`` set, see
    imagegen.latent) runs its family on the first stage's codes: what the family samples is decoded, images
    it is given are encoded, and ``complete`` gets a mask on the latent grid with the known pixels pasted back
    after decoding, so every method below still speaks images."""

    def __init__(self, family: str, cfg: config.RunConfig, info: DataInfo, module: torch.nn.Module,
                 meta: dict, path: Path, device: torch.device, first_stage=None, sample_defaults=None):
        self.family, self.config, self.info, self.module = family, cfg, info, module
        self.meta, self.path, self.device = meta, path, device
        self.fam = registry.get_family(family)
        self.first_stage = first_stage  # imagegen.latent.FirstStage or None
        # the sampling options the run was measured with (its sampling.json), under the caller's own
        self.sample_defaults = dict(sample_defaults or {})

    def _decoded(self, z: torch.Tensor) -> torch.Tensor:
        return z if self.first_stage is None else self.first_stage.decode(z)

    def _encoded(self, x: torch.Tensor | None) -> torch.Tensor | None:
        return x if self.first_stage is None or x is None else self.first_stage.encode(x)

    @property
    def step(self) -> int:
        return int(self.meta.get("step", 0))

    @property
    def class_conditional(self) -> bool:
        """Whether the model takes labels: trained with ``model.class_cond`` on labelled data."""
        return self.config.class_conditional(self.info.num_classes)

    @property
    def restore_tasks(self) -> tuple[str, ...]:
        """The restoration tasks ``restore`` solves for this model (imagegen.restoration.TASKS): its family's
        (registry.restore_tasks), or for a latent model inpainting alone, done on codes by ``complete``, since
        the other operators act on pixels and the family on codes."""
        tasks = registry.restore_tasks(self.family)
        return tasks if self.first_stage is None else tuple(t for t in tasks if t == "inpaint")

    def __repr__(self) -> str:
        latent = "" if self.first_stage is None else f", on {'x'.join(map(str, self.first_stage.latent_shape))} codes"
        return (f"LoadedModel({self.family}, step {self.step}, {self.info.channels}x{self.info.size}x{self.info.size}"
                f"{latent})")

    @staticmethod
    def _seed(seed) -> int | None:
        if seed is None:
            return None
        try:
            return operator.index(seed)  # int, numpy integer, 0-d integer tensor
        except TypeError:
            raise ImagegenError(f"seed must be an integer or None, got {seed!r}") from None

    def _generator(self, seed: int | None) -> torch.Generator | None:
        seed = self._seed(seed)
        return None if seed is None else torch.Generator(device=self.device).manual_seed(seed)

    def _images(self, x, what: str = "x") -> torch.Tensor:
        """Check a batch of images against the model's data (shape, dtype, finite, in [-1, 1]) and move it
        to the model's device, so a wrong input is named here instead of failing deep inside a network."""
        c, s = self.info.channels, self.info.size
        want = f"a float tensor of shape (N, {c}, {s}, {s}) with values in [-1, 1]"
        if not isinstance(x, torch.Tensor):
            raise ImagegenError(f"{what} must be {want}, got {type(x).__name__}")
        if not x.is_floating_point():
            hint = "; imagegen.data.to_float converts uint8 images" if x.dtype == torch.uint8 else ""
            raise ImagegenError(f"{what} must be {want}, got dtype {x.dtype}{hint}")
        if x.dim() != 4 or tuple(x.shape[1:]) != (c, s, s) or x.shape[0] == 0:
            hint = "; add the batch dimension with x[None]" if tuple(x.shape) == (c, s, s) else ""
            raise ImagegenError(f"{what} must be {want}, got shape {tuple(x.shape)}{hint}")
        if not torch.isfinite(x).all():
            raise ImagegenError(f"{what} contains NaN or infinite values")
        lo, hi = x.min().item(), x.max().item()
        if lo < -1 - 1e-4 or hi > 1 + 1e-4:
            raise ImagegenError(f"{what} must have values in [-1, 1], got [{lo:.4g}, {hi:.4g}]; "
                                "imagegen.data.to_float maps uint8 0..255 to [-1, 1]")
        return x.to(self.device)

    def _mask(self, mask, x: torch.Tensor) -> torch.Tensor:
        """A keep-mask for ``x`` (1 = known pixel, 0 = to fill), one per image or one for all: (N or 1, 1,
        H, W), 0/1 values (bool or float). Returned as float (N, 1, H, W) on the model's device."""
        n, s = x.shape[0], self.info.size
        want = f"a tensor of 0s and 1s of shape ({'1' if n == 1 else f'{n} or 1'}, 1, {s}, {s})"
        if not isinstance(mask, torch.Tensor):
            raise ImagegenError(f"mask must be {want}, got {type(mask).__name__}")
        if mask.dim() != 4 or mask.shape[0] not in (1, n) or tuple(mask.shape[1:]) != (1, s, s):
            raise ImagegenError(f"mask must be {want}, got shape {tuple(mask.shape)}")
        mask = mask.float()
        if not ((mask == 0) | (mask == 1)).all():
            raise ImagegenError(f"mask must be {want}, got other values; threshold it, e.g. (mask > 0.5).float()")
        return mask.expand(n, -1, -1, -1).contiguous().to(self.device)

    def _call(self, fn_name: str, *args, **options):
        fn = getattr(self.fam, fn_name, None)
        if fn is None:
            offered = ", ".join(registry.capabilities(self.family)) or "sampling only"
            raise ImagegenError(f"the {self.family} family does not support '{fn_name}'; it offers: {offered}")
        check_options(fn, options, f"{self.family}.{fn_name}")
        if fn_name == "sample":
            check_choices(self.fam, options, f"{self.family}.sample")
        with torch.no_grad() if fn_name != "complete" else _nullcontext():
            return fn(self.module, *args, **options)

    def sample(self, n: int, labels=None, seed: int | None = 0, batch_size: int = 256, progress: bool = False,
               first_index: int = 0, **options) -> torch.Tensor:
        """``n`` images (n, C, H, W) in [-1, 1] on the CPU. Every image has its own random stream, seeded by
        (seed, its index) as in EDM (imagegen.rng), so the same seed gives the same images at any
        ``batch_size``, and images ``first_index .. first_index + n - 1`` of a seed are the same whether drawn
        in one call or in several (an evaluation in chunks). ``seed=None``: torch's global stream instead.
        ``progress``: a progress bar over the batches (when there is more than one). Options not given take the
        run's ``sample_defaults`` (its sampling.json), then the family's defaults."""
        options = {**self.sample_defaults, **options}
        check_range(n, "[1,inf)", "n")
        check_range(batch_size, "[1,inf)", "batch_size")
        check_range(first_index, "[0,inf)", "first_index")
        y = check_labels(labels, n, self.info.num_classes, self.device)
        seed = self._seed(seed)
        out = []
        bar = tqdm(total=n, desc="sampling", unit="img", disable=not progress or n <= batch_size, leave=False)
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            yb = None if y is None else y[start:start + m]
            g = None if seed is None else ImageGenerators.for_images(seed, first_index + start, m, self.device)
            out.append(self._decoded(self._call("sample", m, labels=yb, generator=g, **options)).float().cpu())
            bar.update(m)
        bar.close()
        return torch.cat(out)

    def nll(self, x: torch.Tensor, labels=None, batch_size: int = 256, **options) -> torch.Tensor:
        """Negative log-likelihood in nats per image (or a bound, as the family documents)."""
        check_range(batch_size, "[1,inf)", "batch_size")
        if self.first_stage is not None:
            raise ImagegenError("a latent model's likelihood is over its first stage's codes, not over pixels, so it "
                                "is not comparable with pixel models; nll does not apply to it")
        x = self._images(x)
        y = check_labels(labels, x.shape[0], self.info.num_classes, self.device)
        out = []
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size]
            yb = None if y is None else y[start:start + batch_size]
            out.append(self._call("nll", xb, labels=yb, **options).double().cpu())
        return torch.cat(out)

    def complete(self, x: torch.Tensor, mask: torch.Tensor, labels=None, seed: int | None = 0, **options):
        x = self._images(x)
        mask = self._mask(mask, x)
        if self.first_stage is None:
            return self._call("complete", x, mask, labels=labels, generator=self._generator(seed),
                              **options).float().cpu()
        # unknown pixels are zeroed before encoding, so no code carries what is to be filled in
        z = self.first_stage.encode(x * mask)
        z = self._call("complete", z, self.first_stage.latent_mask(mask), labels=labels,
                       generator=self._generator(seed), **options)
        return (mask * x + (1 - mask) * self._decoded(z)).float().cpu()

    def denoise(self, x: torch.Tensor, strength: float, labels=None, seed: int | None = 0, **options):
        return self._decoded(self._call("denoise", self._encoded(self._images(x)), strength, labels=labels,
                                        generator=self._generator(seed), **options)).float().cpu()

    def restore(self, y: torch.Tensor, operator, mask=None, labels=None, seed: int | None = 0,
                **options) -> torch.Tensor:
        """Recover images x from a measurement y = A(x) + noise (docs/restoration.md). ``operator``: an
        ``imagegen.restoration.Operator`` or a task string (``sr2``, ``sr4``, ``denoise:0.2``, ``colourise``,
        ``inpaint``, joined with ``+``); ``inpaint`` takes ``mask`` (1 = known). ``y`` has the measurement's
        shape: (N, C, H/K, W/K) for srK, (N, 1, H, W) for colourise. Returns (N, C, H, W) on the CPU; for a
        noiseless operator A(result) equals y to float precision."""
        c, s = self.info.channels, self.info.size
        if isinstance(operator, str):
            m = None
            if mask is not None:
                if not isinstance(y, torch.Tensor) or y.dim() != 4:
                    raise ImagegenError(f"y must be a float tensor (N, C, H, W), got {type(y).__name__}")
                m = self._mask(mask, y)
            operator = restoration.parse_task(operator, c, s, m)
        elif not isinstance(operator, restoration.Operator):
            raise ImagegenError(f"operator must be a task string like 'sr4' or an imagegen.restoration.Operator, "
                                f"got {type(operator).__name__}")
        restoration.check_offered(self.family, operator)
        y = self._measurement(y, *operator.measurement_shape(c, s), noisy=not operator.noiseless)
        if self.first_stage is not None:  # the operators act on pixels, the family on codes
            if not restoration.offered(self.restore_tasks, operator):
                raise ImagegenError(f"a latent model restores by inpainting only (task inpaint), not "
                                    f"{operator.describe()}: its operators act on pixels and the model on codes; "
                                    f"use a pixel-space model")
            return self.complete(y, operator.mask, labels=labels, seed=seed, **options)
        return self._call("restore", y, operator.to(self.device), labels=labels, generator=self._generator(seed),
                          **options).float().cpu()

    def _measurement(self, y, c: int, s: int, noisy: bool) -> torch.Tensor:
        """``_images`` for a measurement of shape (N, c, s, s); a noisy one may leave [-1, 1]."""
        want = f"a float tensor of shape (N, {c}, {s}, {s})" + ("" if noisy else " with values in [-1, 1]")
        if not isinstance(y, torch.Tensor) or not y.is_floating_point():
            got = type(y).__name__ if not isinstance(y, torch.Tensor) else f"dtype {y.dtype}"
            raise ImagegenError(f"the measurement must be {want}, got {got}")
        if y.dim() != 4 or tuple(y.shape[1:]) != (c, s, s) or y.shape[0] == 0:
            raise ImagegenError(f"the measurement must be {want} for this operator and model, got shape "
                                f"{tuple(y.shape)}")
        if not torch.isfinite(y).all():
            raise ImagegenError("the measurement contains NaN or infinite values")
        if not noisy and (y.min().item() < -1 - 1e-4 or y.max().item() > 1 + 1e-4):
            raise ImagegenError(f"the measurement must have values in [-1, 1], got [{y.min().item():.4g}, "
                                f"{y.max().item():.4g}]; imagegen.data.to_float maps uint8 0..255 to [-1, 1]")
        return y.to(self.device)

    def interpolate(self, a, b, frames: int = 8, labels=None, seed: int | None = 0, **options):
        a = None if a is None else self._encoded(self._images(a, "a"))
        b = None if b is None else self._encoded(self._images(b, "b"))
        return self._decoded(self._call("interpolate", a, b, frames, labels=labels, generator=self._generator(seed),
                                        **options)).float().cpu()

    def reconstruct(self, x: torch.Tensor, labels=None) -> torch.Tensor:
        return self._decoded(self._call("reconstruct", self._encoded(self._images(x)), labels=labels)).float().cpu()


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def check_options(fn, options: dict, where: str) -> None:
    """Reject options a family function does not take, listing the ones it does."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = [k for k in options if k not in params]
    if unknown:
        valid = [k for k, p in params.items() if p.default is not inspect.Parameter.empty
                 and k not in ("labels", "generator")]
        raise ImagegenError(f"{where} does not take option '{unknown[0]}'; it takes: {', '.join(valid) or 'none'}")


def check_choices(fam, options: dict, where: str) -> None:
    """Reject a value outside the family's ``SAMPLE_CHOICES`` for that option, listing the ones it takes."""
    for key, value in options.items():
        choices = getattr(fam, "SAMPLE_CHOICES", {}).get(key)
        if choices is not None and value not in choices:
            raise ImagegenError(f"{where} option {key} takes one of {', '.join(map(str, choices))}, got {value!r}")


SAMPLING_FILE = "sampling.json"


def write_sample_defaults(run_dir: str | Path, options: dict, why: str = "") -> Path:
    """Record in a run the sampling options it is meant to be drawn with (what a benchmark measured it at);
    :func:`load` reads them back as the model's ``sample_defaults``."""
    path = Path(run_dir) / SAMPLING_FILE
    checkpoint.atomic_write_bytes((json.dumps({"sample": dict(options), "why": why}, indent=2) + "\n").encode(),
                                  path)
    return path


def read_sample_defaults(run_dir: Path | None, family: str) -> dict:
    """The run's sampling.json options, checked against the family's ``sample`` ({} when there is none)."""
    path = None if run_dir is None else run_dir / SAMPLING_FILE
    if path is None or not path.is_file():
        return {}
    fix = 'fix it (it holds {"sample": {"option": value, ...}}) or delete it'
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ImagegenError(f"{path} is not readable JSON ({e}); {fix}") from None
    opts = d.get("sample") if isinstance(d, dict) else None
    if not isinstance(opts, dict):
        raise ImagegenError(f"{path} has no 'sample' object; {fix}")
    fam = registry.get_family(family)
    if opts and not registry.generative(family):  # the autoencoder's sample only raises
        raise ImagegenError(f"{path} gives sampling options but the {family} family draws no samples; delete it")
    if opts:
        check_options(fam.sample, opts, f"{path}: {family}.sample")
        check_choices(fam, opts, f"{path}: {family}.sample")
    return opts


def load(path: str | Path, device: str = "auto", ema: bool = True, family: str | None = None,
         first_stage: str | Path | None = None) -> LoadedModel:
    """Load a run directory (its newest checkpoint), a checkpoint file or a zoo model (``zoo:NAME``, see
    imagegen.zoo). Uses the EMA weights if present.

    A latent model finds its first stage where its checkpoint recorded it (or at ``first_stage``) and checks
    that file's sha256 (imagegen.latent.find_first_stage). The sampling options a run records in its
    sampling.json become the model's ``sample_defaults``."""
    ck = checkpoint.load(path, family=family)
    cfg = config.from_saved(ck.meta["config"])
    info = DataInfo.from_dict(ck.meta["data_info"])
    fam = registry.get_family(cfg.family)
    latent = ck.meta.get("latent")
    module = fam.build(cfg.model, DataInfo.from_dict(latent["data_info"]) if latent else info)
    ck.load_module(module, "ema" if ema and ck.has_ema() else "model")
    dev = pick_device(device)
    module.to(dev).eval()
    module.requires_grad_(False)
    stage = None
    if latent:
        stage = find_first_stage(latent["first_stage"], path, dev, override=first_stage)
    return LoadedModel(cfg.family, cfg, info, module, ck.meta, ck.path, dev, first_stage=stage,
                       sample_defaults=read_sample_defaults(checkpoint.run_dir_of(ck.path), cfg.family))
