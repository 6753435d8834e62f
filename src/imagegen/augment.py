"""Data augmentation for training: ``data.augment``, a list of ``hflip``, ``rotate:DEG``, ``scale:LO-HI``,
``translate:PX`` and ``colour-jitter:B,C,S,H``, applied on the fly to every training batch on its device.

Every image of a batch gets its own random parameters, drawn in one tensor call per parameter. torchvision's
v2 transforms (``v2.RandomAffine``, ``v2.ColorJitter``) draw one parameter set per call, so on a batched
tensor the whole batch turns by the same angle (checked: identical inputs come out identical), and a call
per image would be a Python loop over the batch. So the geometric ops are composed into one 2x3 matrix per
image and applied with one ``affine_grid``/``grid_sample`` (bilinear, reflection padding, as StyleGAN2-ADA
does; Karras et al. 2020, appendix B.2), and the colour ops are per-image blends, with torchvision's
``v2.functional.rgb_to_grayscale`` for the grey image, in torchvision's ColorJitter semantics:

- ``hflip``: mirror half of the images (exactly, without resampling, when no other geometric op is on);
- ``rotate:DEG``: angle uniform in [-DEG, DEG] degrees;
- ``scale:LO-HI``: zoom uniform in [LO, HI] (``scale:0.9-1.1``);
- ``translate:PX``: shift uniform in [-PX, PX] pixels, x and y independently;
- ``colour-jitter:B,C,S,H``: brightness factor in [1-B, 1+B], contrast in [1-C, 1+C] (blend with the image's
  mean grey), saturation in [1-S, 1+S] (blend with its grey image), hue in [-H, H] turns (H <= 0.5), in that
  fixed order. Hue is a rotation of the colour about the grey axis (ADA's hue rotation), close to but not
  the same as an HSV hue shift. Saturation and hue leave grey images alone.

Draws come from the generator passed (the trainer passes none: torch's global RNG on the batch's device,
which checkpoints save and resumes restore, so a resumed run continues the same augmentation stream). The
result stays in [-1, 1] with the input's shape. This is the non-differentiable, data-side kind; the GAN's
DiffAugment (``model.diffaug``) transforms every discriminator input, real and fake, with gradients
(docs/augmentation.md says which to use when).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from .errors import ImagegenError

OPS = ("hflip", "rotate:DEG", "scale:LO-HI", "translate:PX", "colour-jitter:B,C,S,H")
_JITTER_NAMES = ("colour-jitter", "color-jitter")


@dataclass(frozen=True)
class Augment:
    hflip: bool = False
    rotate_deg: float = 0.0
    scale: tuple[float, float] | None = None
    translate_px: float = 0.0
    jitter: tuple[float, float, float, float] | None = None  # brightness, contrast, saturation, hue

    @property
    def geometric(self) -> bool:
        return bool(self.rotate_deg or self.scale or self.translate_px)

    def __bool__(self) -> bool:
        return self.hflip or self.geometric or self.jitter is not None


def _merge(specs) -> list[str]:
    """Rejoin ``colour-jitter:B,C,S,H`` when a comma list (``--set data.augment=hflip,colour-jitter:...``)
    split its numbers into items of their own."""
    out: list[str] = []
    for item in specs or []:
        text = str(item).strip()
        if not text:
            continue
        if out and out[-1].split(":")[0].lower() in _JITTER_NAMES and out[-1].count(",") < 3:
            try:
                float(text)
                out[-1] = f"{out[-1]},{text}"
                continue
            except ValueError:
                pass
        out.append(text)
    return out


def _numbers(arg: str, item: str, count: int, sep: str = ",") -> list[float]:
    try:
        vals = [float(v) for v in arg.split(sep)]
    except ValueError:
        vals = []
    if len(vals) != count or not all(math.isfinite(v) for v in vals):
        raise ImagegenError(f"data.augment item '{item}': expected {count} number(s) after ':'; "
                            f"the items are {', '.join(OPS)}")
    return vals


def parse(specs) -> Augment:
    """``["hflip", "rotate:10", ...]`` -> :class:`Augment`; a bad item is a one-line error listing the ops."""
    kw: dict = {}
    for item in _merge(specs):
        name, _, arg = item.partition(":")
        name = name.strip().lower()
        if name in kw or (name in _JITTER_NAMES and "jitter" in kw):
            raise ImagegenError(f"data.augment: '{name}' is given twice")
        if name == "hflip" and not arg:
            kw["hflip"] = True
        elif name == "rotate":
            (deg,) = _numbers(arg, item, 1)
            if not 0 < deg <= 180:
                raise ImagegenError(f"data.augment item '{item}': the angle must lie in (0, 180] degrees")
            kw["rotate"] = deg
        elif name == "scale":
            lo, hi = _numbers(arg, item, 2, "-")
            if not 0 < lo <= hi:
                raise ImagegenError(f"data.augment item '{item}': give scale:LO-HI with 0 < LO <= HI, "
                                    "e.g. scale:0.9-1.1")
            kw["scale"] = (lo, hi)
        elif name == "translate":
            (px,) = _numbers(arg, item, 1)
            if px <= 0:
                raise ImagegenError(f"data.augment item '{item}': the shift must be > 0 pixels")
            kw["translate"] = px
        elif name in _JITTER_NAMES:
            b, c, s, h = _numbers(arg, item, 4)
            if min(b, c, s, h) < 0 or max(b, c, s) >= 1 or h > 0.5:
                raise ImagegenError(f"data.augment item '{item}': B, C, S must lie in [0, 1) and H in [0, 0.5]")
            kw["jitter"] = (b, c, s, h)
        else:
            raise ImagegenError(f"unknown data.augment item '{item}'; the items are {', '.join(OPS)}")
    return Augment(hflip=kw.get("hflip", False), rotate_deg=kw.get("rotate", 0.0), scale=kw.get("scale"),
                   translate_px=kw.get("translate", 0.0), jitter=kw.get("jitter"))


def canonical(specs) -> list[str]:
    """The list as the run's config records it: validated, colour-jitter rejoined, names normalised."""
    parse(specs)  # raises on a bad item
    return [("colour-jitter:" + s.split(":", 1)[1]) if s.split(":")[0].lower() in _JITTER_NAMES else s
            for s in _merge(specs)]


@lru_cache(maxsize=32)
def _parsed(specs: tuple[str, ...]) -> Augment:
    return parse(list(specs))


def _uniform(n: int, lo: float, hi: float, like: torch.Tensor, generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, device=like.device, generator=generator)


def apply(x: torch.Tensor, aug: Augment | list | tuple, generator: torch.Generator | None = None) -> torch.Tensor:
    """Augment a batch x (B, C, H, W) in [-1, 1] with per-image random parameters; same shape and range."""
    if not isinstance(aug, Augment):
        aug = _parsed(tuple(str(s) for s in aug))
    if not aug:
        return x
    b, dtype = x.shape[0], x.dtype
    x = x.float()
    flip = (torch.rand(b, device=x.device, generator=generator) < 0.5) if aug.hflip else None
    if aug.geometric:
        # the inverse map out -> in of "flip, then scale s, rotate a and shift t" in affine_grid's
        # normalised coordinates (align_corners=False: one pixel is 2 / size)
        ang = _uniform(b, -aug.rotate_deg, aug.rotate_deg, x, generator) * (math.pi / 180)
        s = _uniform(b, *aug.scale, x, generator) if aug.scale else torch.ones(b, device=x.device)
        tx = _uniform(b, -aug.translate_px, aug.translate_px, x, generator) * (2 / x.shape[3])
        ty = _uniform(b, -aug.translate_px, aug.translate_px, x, generator) * (2 / x.shape[2])
        cos, sin = torch.cos(ang) / s, torch.sin(ang) / s
        fx = torch.where(flip, -1.0, 1.0) if flip is not None else torch.ones(b, device=x.device)
        theta = torch.stack([torch.stack([fx * cos, fx * sin, -fx * (cos * tx + sin * ty)], 1),
                             torch.stack([-sin, cos, sin * tx - cos * ty], 1)], 1)  # (B, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    elif flip is not None:
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    if aug.jitter is not None:
        x = _colour_jitter(x, aug.jitter, generator)
    return x.clamp(-1, 1).to(dtype)


def _colour_jitter(x: torch.Tensor, jitter, generator) -> torch.Tensor:
    from torchvision.transforms.v2.functional import rgb_to_grayscale

    bri, con, sat, hue = jitter
    b = x.shape[0]
    p = (x + 1) / 2  # [0, 1], as torchvision's colour ops assume
    rgb = p.shape[1] == 3

    def factor(amount):
        return _uniform(b, 1 - amount, 1 + amount, p, generator).view(-1, 1, 1, 1)

    if bri:
        p = (p * factor(bri)).clamp(0, 1)
    if con:
        grey = rgb_to_grayscale(p) if rgb else p
        mean = grey.mean((1, 2, 3), keepdim=True)
        f = factor(con)
        p = (f * p + (1 - f) * mean).clamp(0, 1)
    if sat and rgb:
        f = factor(sat)
        p = (f * p + (1 - f) * rgb_to_grayscale(p)).clamp(0, 1)
    if hue and rgb:
        # rotation by 2 pi h about the unit grey axis u = (1, 1, 1) / sqrt(3) (Rodrigues' formula)
        a = _uniform(b, -hue, hue, p, generator) * (2 * math.pi)
        cos, sin = torch.cos(a).view(-1, 1, 1), torch.sin(a).view(-1, 1, 1)
        uu = torch.full((3, 3), 1 / 3, device=p.device)
        cross = torch.tensor([[0, -1, 1], [1, 0, -1], [-1, 1, 0]], device=p.device, dtype=p.dtype) / math.sqrt(3)
        rot = cos * torch.eye(3, device=p.device) + sin * cross + (1 - cos) * uu  # (B, 3, 3)
        p = torch.einsum("bij,bjhw->bihw", rot, p).clamp(0, 1)
    return p * 2 - 1


__all__ = ["OPS", "Augment", "apply", "canonical", "parse"]
