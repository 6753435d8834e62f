"""Latent models: any family trained on the codes of a frozen first-stage autoencoder.

The mechanism is one for all families (latent diffusion, Rombach et al. 2022; a PixelCNN prior over
quantised codes, van den Oord et al. 2017; a GAN or VAE too):

* ``data.latent=RUN`` (``imagegen train FAMILY --latent RUN``) names a trained ``autoencoder`` run or
  checkpoint. The trainer resolves it to one checkpoint file, encodes the training split once (cached under
  ``$IMAGEGEN_CACHE/latents``, keyed by the file's sha256 and the data settings) and trains the family on the
  codes as if they were images: (N, latent_channels, H/f, W/f) uint8, the tanh-bounded latent on its FSQ grid.
* Every checkpoint of the second stage records the first stage (path, path relative to the run, sha256,
  step, latent shape) under ``meta["latent"]``; ``imagegen.load`` finds it again, checks the sha256 and
  refuses a changed or missing first stage with a one-line error.
* ``LoadedModel`` (api.py) decodes what the family samples, encodes what it is given (``interpolate``,
  ``denoise``, ``reconstruct``) and, for ``complete``, hands the family a mask downsampled to the latent grid
  (a cell is known only if all its pixels are) and pastes the known pixels back after decoding.

The second stage never knows it is in a latent space except through encode/decode: its module, config,
optimiser and sampler are the family's own.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from . import checkpoint, config
from .cache import file_sha256
from .data import DataInfo, ImageDataset, cache_dir, to_float, to_uint8
from .errors import ImagegenError
from .zoo import is_zoo

FIRST_STAGE_FAMILY = "autoencoder"


@dataclass
class FirstStage:
    """A frozen, loaded autoencoder with the record that identifies it."""

    module: torch.nn.Module  # families.autoencoder.Autoencoder, eval mode, no gradients
    path: Path  # the checkpoint file
    sha256: str
    step: int
    info: DataInfo  # the pixel data it was trained on

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.module.latent_shape

    @property
    def factor(self) -> int:
        return self.module.factor

    def latent_info(self, pixel_info: DataInfo) -> DataInfo:
        c, s, _ = self.latent_shape
        return DataInfo(channels=c, size=s, num_classes=pixel_info.num_classes, bits=8,
                        name=f"{pixel_info.name} latent", class_names=pixel_info.class_names)

    def record(self, run_dir: str | Path | None = None) -> dict:
        """What a second stage's checkpoint keeps to find and check its first stage again."""
        rec = {"path": str(self.path.resolve()), "sha256": self.sha256, "step": self.step,
               "family": FIRST_STAGE_FAMILY, "latent_shape": list(self.latent_shape),
               "levels": int(self.module.cfg.levels), "data": self.info.to_dict()}
        if run_dir is not None:
            rec["relative_path"] = os.path.relpath(self.path.resolve(), Path(run_dir).resolve())
        return rec

    def to(self, device) -> FirstStage:
        self.module.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @torch.no_grad()
    def encode(self, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Images (N, C, H, W) in [-1, 1] -> codes (N, c, h, w) in [-1, 1], quantised as stored (8 bits)."""
        out = [to_float(to_uint8(self.module.encode(x[i:i + batch_size].to(self.device).float())))
               for i in range(0, x.shape[0], batch_size)]
        return torch.cat(out).to(x.device)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        out = [self.module.decode(z[i:i + batch_size].to(self.device).float())
               for i in range(0, z.shape[0], batch_size)]
        return torch.cat(out).to(z.device)

    def latent_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """A pixel keep-mask (N, 1, H, W) -> the latent grid's (N, 1, h, w): a cell is kept only if every pixel
        it covers is, so the second stage redraws every cell that touches an unknown pixel."""
        f = self.factor
        return (-F.max_pool2d(-mask.float(), f, f) > 0.5).float() if f > 1 else mask.float()


def load_first_stage(path: str | Path, device="cpu", expect_sha256: str | None = None) -> FirstStage:
    """Load an autoencoder run directory (its newest checkpoint) or checkpoint file as a frozen first stage."""
    from .registry import get_family

    file = checkpoint.resolve(path)
    sha = file_sha256(file)
    if expect_sha256 is not None and sha != expect_sha256:
        raise ImagegenError(f"the first stage {file} has changed since this model was trained (sha256 {sha[:12]} "
                            f"vs {expect_sha256[:12]}); restore that file or retrain the model on the new one")
    ck = checkpoint.load(file)
    if ck.family != FIRST_STAGE_FAMILY:
        raise ImagegenError(f"--latent {path} is a '{ck.family}' run; it must be an autoencoder run "
                            f"(train one with 'imagegen train autoencoder --data ... --out {path}')")
    cfg = config.from_saved(ck.meta["config"])
    info = DataInfo.from_dict(ck.meta["data_info"])
    module = get_family(FIRST_STAGE_FAMILY).build(cfg.model, info)
    ck.load_module(module, "ema" if ck.has_ema() else "model")
    module.eval().requires_grad_(False)
    return FirstStage(module.to(device), file, sha, int(ck.meta.get("step", 0)), info)


def find_first_stage(record: dict, run_path: str | Path | None, device="cpu",
                     override: str | Path | None = None) -> FirstStage:
    """The first stage a second stage's checkpoint records: at ``override`` if given, else its absolute path,
    else the same path relative to the run (runs moved together); its sha256 must match."""
    candidates = [Path(override)] if override is not None else []
    candidates.append(Path(record["path"]))
    if run_path is not None and record.get("relative_path"):
        base = Path(run_path)
        base = base if base.is_dir() else base.parent.parent  # a checkpoint file: <run>/checkpoints/ckpt-N
        candidates.append(base / record["relative_path"])
    for p in candidates:
        if is_zoo(p) or p.exists():  # a zoo model's first stage is recorded as zoo:NAME
            return load_first_stage(p, device, expect_sha256=record["sha256"])
    raise ImagegenError(f"this latent model's first stage {record['path']} is missing; put the autoencoder "
                        f"checkpoint back there or pass its path (imagegen.load(..., first_stage=PATH))")


def check_data_config(cfg) -> None:
    """Settings that act on pixels cannot act on codes: refuse them for latent runs."""
    if cfg.data.latent and (cfg.data.hflip or cfg.data.augment):
        what = "data.hflip" if cfg.data.hflip else "data.augment"
        raise ImagegenError(f"{what} would transform codes, not images, in a latent model; train the first stage "
                            f"with it instead, or drop it")
    if cfg.data.latent and cfg.family == FIRST_STAGE_FAMILY:
        raise ImagegenError("an autoencoder cannot be trained on another autoencoder's codes; drop --latent")


def encode_dataset(stage: FirstStage, dataset: ImageDataset, data_cfg, progress: bool = True) -> ImageDataset:
    """The dataset's codes as a uint8 ImageDataset (cached on disk: encoding MNIST takes seconds on a CPU,
    and a resumed or repeated run should not pay them again)."""
    if (dataset.info.channels, dataset.info.size) != (stage.info.channels, stage.info.size):
        raise ImagegenError(f"the first stage was trained on {stage.info.channels}x{stage.info.size}x"
                            f"{stage.info.size} images, this data is {dataset.info.channels}x{dataset.info.size}x"
                            f"{dataset.info.size}; use the same --data, --image-size and --channels")
    key_src = {"sha256": stage.sha256, "data": {k: getattr(data_cfg, k) for k in
                                                 ("name", "image_size", "channels", "limit")},
               "split": "train", "n": len(dataset)}
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:24]
    path = cache_dir() / "latents" / f"{key}.safetensors"
    latent_info = stage.latent_info(dataset.info)
    if path.is_file():
        from safetensors.torch import load_file

        try:
            t = load_file(str(path))
            codes = t["codes"]
            if codes.shape[0] == len(dataset) and tuple(codes.shape[1:]) == stage.latent_shape:
                return ImageDataset(codes, dataset.labels, latent_info)
        except Exception:  # a torn or foreign cache file: encode again and overwrite it
            pass
    from tqdm.auto import tqdm

    codes = []
    bs = 1000
    for start in tqdm(range(0, len(dataset), bs), desc="encoding the data with the first stage", leave=False,
                      disable=not progress):
        x = to_float(dataset.images[start:start + bs])  # intensities, also for binarised data
        with torch.no_grad():
            codes.append(to_uint8(stage.module.encode(x.to(stage.device))).cpu())
    codes = torch.cat(codes)
    try:
        checkpoint.atomic_save_tensors({"codes": codes}, path, metadata={"key": json.dumps(key_src)})
    except OSError:
        pass  # a read-only cache only costs the encoding next time
    return ImageDataset(codes, dataset.labels, latent_info)
