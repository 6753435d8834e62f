"""Image restoration as one mechanism: recover x from a measurement y = A(x) + sigma_y * n.

An *operator* is data: a forward map ``A``, a pseudo-inverse ``A+`` and the measurement noise ``sigma_y``
(DDNM, Wang et al. 2023; DDRM, Kawar et al. 2022). The operators are shared; each family solves the
problem the way its kind of model can (``restore`` in the family modules):

=============  ==========================================  =============================================
task string    A (forward map)                             A+ (pseudo-inverse)
=============  ==========================================  =============================================
``inpaint``    keep the pixels where the mask is 1         the same (A is an orthogonal projection)
``srK``        average-pool K x K blocks (size -> size/K)  replicate each value over its block (nearest)
``colourise``  mean of the three channels (RGB -> grey)    replicate the grey value into R, G and B
``denoise:S``  the identity, with Gaussian noise of std S  the identity
=============  ==========================================  =============================================

Tasks compose with ``+``: ``sr2+denoise:0.1`` is a noisy low-resolution image, ``sr4+colourise`` a small
grey one. ``S`` is in the model's units: images live in [-1, 1], so ``denoise:0.2`` is a std of 0.1 on the
[0, 1] scale (about 25 of 255 levels).

Each ``A+`` here is the Moore-Penrose pseudo-inverse: for average pooling A A^T = I / K^2, so
A+ = A^T (A A^T)^-1 = K^2 A^T is replication; for the channel mean A A^T = I / 3 and A+ = 3 A^T is
replication too. So A(A+(y)) = y exactly for ``srK`` and ``colourise`` (and their compositions), and
A+(A(x)) = A(x) for a mask. The projection onto the measurements, x -> A+ y + (I - A+ A) x, is what makes
a restored image honour a noiseless y (DDNM eq. 8); :meth:`Operator.finalize` finds the nearest image
that honours y and stays in [-1, 1] together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .errors import ImagegenError

TASKS = ("inpaint", "sr", "colourise", "denoise")
TASK_HELP = {"inpaint": "fill where a mask is 0 (--mask or --keep)",
             "sr": "super-resolution by K (sr2, sr4: the image given is size/K)",
             "colourise": "colour from a grey image (3-channel models)",
             "denoise": "remove Gaussian noise of std S in [-1, 1] units (denoise:0.2)"}
_COLOUR_NAMES = ("colourise", "colorise", "colourize", "colorize")


# ---------------------------------------------------------------------------------------------- linear maps


@dataclass(frozen=True)
class Mask:
    """Inpainting: A(x) = m * x with m (N or 1, 1, H, W) in {0, 1}, 1 = known. A+ = A."""

    mask: torch.Tensor
    task = "inpaint"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask.to(x.dtype)

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.mask.to(y.dtype)

    def out_shape(self, c: int, s: int) -> tuple[int, int]:
        return c, s

    def repeat(self, r: int) -> Mask:
        return self if self.mask.shape[0] == 1 else Mask(self.mask.repeat_interleave(r, 0))

    def to(self, device) -> Mask:
        return Mask(self.mask.to(device))


@dataclass(frozen=True)
class Downsample:
    """Super-resolution: A = K x K average pooling, A+ = nearest (replicating) upsampling."""

    k: int
    task = "sr"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.k)

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        return y.repeat_interleave(self.k, 2).repeat_interleave(self.k, 3)

    def out_shape(self, c: int, s: int) -> tuple[int, int]:
        if s % self.k:
            raise ImagegenError(f"sr{self.k} needs an image size divisible by {self.k}; this model's is {s}")
        return c, s // self.k

    def repeat(self, r: int) -> Downsample:
        return self

    def to(self, device) -> Downsample:
        return self


@dataclass(frozen=True)
class Greyscale:
    """Colourisation: A = the mean of the channels (B, C, H, W) -> (B, 1, H, W); A+ replicates it C times."""

    channels: int = 3
    task = "colourise"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(1, keepdim=True)

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        return y.expand(-1, self.channels, -1, -1).contiguous()

    def out_shape(self, c: int, s: int) -> tuple[int, int]:
        if c != self.channels:
            raise ImagegenError(f"colourise is for {self.channels}-channel (colour) models; this one has {c} "
                                "channel(s), so there is no colour to restore")
        return 1, s

    def repeat(self, r: int) -> Greyscale:
        return self

    def to(self, device) -> Greyscale:
        return self


# ---------------------------------------------------------------------------------------------- the operator


@dataclass(frozen=True)
class Operator:
    """y = A(x) + sigma * n with A = maps[-1] o ... o maps[0] (applied in order) and A+ = maps[0]+ o ... o
    maps[-1]+ (a right inverse: A A+ = I on the measurements; for a composition of these maps it is again
    the Moore-Penrose pseudo-inverse, since each A+ is a multiple of A^T and they compose)."""

    maps: tuple = ()
    sigma: float = 0.0  # std of the measurement noise, in the [-1, 1] units of the images
    name: str = field(default="", compare=False)

    @property
    def tasks(self) -> tuple[str, ...]:
        """The task names this operator needs a family to offer (``inpaint``, ``sr``, ...)."""
        out = [m.task for m in self.maps]
        if self.sigma > 0:
            out.append("denoise")
        return tuple(dict.fromkeys(out)) or ("denoise",)

    @property
    def noiseless(self) -> bool:
        return self.sigma == 0

    @property
    def mask(self) -> torch.Tensor | None:
        """The mask, when the operator is a (possibly noisy) mask alone."""
        if len(self.maps) == 1 and isinstance(self.maps[0], Mask):
            return self.maps[0].mask
        return None

    @property
    def is_identity(self) -> bool:
        return not self.maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """A(x), without noise: (B, C, H, W) -> the measurement's shape."""
        for m in self.maps:
            x = m.forward(x)
        return x

    __call__ = forward

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """A+(y): the measurement's shape -> (B, C, H, W)."""
        for m in reversed(self.maps):
            y = m.pinv(y)
        return y

    def measure(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A(x) + sigma * n: what a camera (or a benchmark) would hand over."""
        y = self.forward(x)
        if self.sigma > 0:
            y = y + self.sigma * torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        return y

    def project(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """A+ y + (I - A+ A) x, written x + A+(y - A x) (the same by linearity): the point nearest x that
        explains y exactly (DDNM eq. 8: range-space from y, null-space from x)."""
        mask = self.mask
        if mask is not None:  # the same map, written so the known pixels are bit-exact copies of y
            return torch.where(mask.to(x.device).expand_as(x) > 0.5, y.expand_as(x), x)
        return x + self.pinv(y - self.forward(x))

    def count(self, y: torch.Tensor) -> torch.Tensor:
        """(B,) how many values each image's measurement holds (a mask: the known sub-pixels)."""
        mask = self.mask
        if mask is not None:
            return mask.to(y.device, y.dtype).expand_as(y).flatten(1).sum(1).clamp_min(1.0)
        return torch.full((y.shape[0],), float(y[0].numel()), device=y.device)

    def finalize(self, x: torch.Tensor, y: torch.Tensor, iterations: int = 60) -> torch.Tensor:
        """The result a family returns. Noiseless: the nearest image to x in [-1, 1] with A(x) = y. Every
        measured value here is the mean of its own group of pixels (a block, the channels, or both), and
        for one group the nearest point with a given mean inside the box is clip(x + t) for the scalar t
        that gives that mean (the KKT conditions), so t = A+ of a shift found by bisection, entry by entry
        (the groups are disjoint and the mean of clip(x + t) grows with t). A last exact projection puts
        A(x) on y to float precision. A mask keeps the given pixels. Noisy: clipped only, as y itself is
        not to be kept."""
        if not self.noiseless:
            return x.clamp(-1, 1)
        if self.mask is not None or self.is_identity:
            return self.project(x.clamp(-1, 1), y)
        y_in = y.clamp(-1, 1)  # a mean of values in [-1, 1] lies in [-1, 1]
        span = float(x.abs().max()) + 2.0
        lo, hi = torch.full_like(y, -span), torch.full_like(y, span)
        for _ in range(iterations):
            t = (lo + hi) / 2
            low = self.forward((x + self.pinv(t)).clamp(-1, 1)) < y_in
            lo, hi = torch.where(low, t, lo), torch.where(low, hi, t)
        x = (x + self.pinv((lo + hi) / 2)).clamp(-1, 1)
        return self.project(x, y)

    def measurement_shape(self, channels: int, size: int) -> tuple[int, int]:
        """(channels, size) of y for a model's (channels, size)."""
        c, s = channels, size
        for m in self.maps:
            c, s = m.out_shape(c, s)
        return c, s

    def repeat(self, r: int) -> Operator:
        """The operator for a batch whose images are each repeated r times (restarts, several draws)."""
        return Operator(tuple(m.repeat(r) for m in self.maps), self.sigma, self.name)

    def to(self, device) -> Operator:
        return Operator(tuple(m.to(device) for m in self.maps), self.sigma, self.name)

    def describe(self) -> str:
        return self.name or "+".join(self.tasks)


# ---------------------------------------------------------------------------------------------- parsing


def parse_task(task: str, channels: int, size: int, mask: torch.Tensor | None = None) -> Operator:
    """``sr2 | sr4 | srK | denoise:S | colourise | inpaint``, joined by ``+`` (``sr2+denoise:0.1``), for a
    model of ``channels`` x ``size`` x ``size``. ``inpaint`` needs ``mask`` ((N or 1, 1, H, W), 1 = known)."""
    if not isinstance(task, str) or not task.strip():
        raise ImagegenError(f"--task must be one of sr2, sr4, denoise:0.2, colourise, inpaint (or joined with +), "
                            f"got {task!r}")
    maps: list = []
    sigma = 0.0
    seen: set[str] = set()
    for part in (p.strip().lower() for p in task.split("+")):
        name, _, arg = part.partition(":")
        if name.startswith("sr"):
            try:
                k = int(name[2:] or arg)
            except ValueError:
                k = 0
            if k < 2:
                raise ImagegenError(f"'{part}': super-resolution is srK with an integer K >= 2, e.g. sr2 or sr4")
            if "sr" in seen:
                raise ImagegenError(f"--task {task}: give one srK (sr2+sr2 is sr4)")
            maps.append(Downsample(k))
            seen.add("sr")
        elif name in _COLOUR_NAMES:
            if "colourise" in seen:
                raise ImagegenError(f"--task {task}: colourise appears twice")
            maps.insert(0, Greyscale(3))  # first: the channel mean commutes with pooling anyway
            seen.add("colourise")
        elif name == "denoise":
            try:
                sigma = float(arg)
            except ValueError:
                sigma = float("nan")
            if not math.isfinite(sigma) or sigma <= 0:
                raise ImagegenError(f"'{part}': denoise takes the noise std in [-1, 1] units, e.g. denoise:0.2")
            seen.add("denoise")
        elif name == "inpaint":
            if mask is None:
                raise ImagegenError("inpaint needs a mask: --mask MASK.png (white = keep) or --keep top-half")
            maps.append(Mask(mask))
            seen.add("inpaint")
        else:
            raise ImagegenError(f"unknown restoration task '{part}'; use sr2, sr4, denoise:0.2, colourise or "
                                "inpaint (joined with +, e.g. sr2+denoise:0.1)")
    if "inpaint" in seen and len(maps) > 1:
        raise ImagegenError(f"--task {task}: inpaint combines only with denoise:S (a mask after pooling or a "
                            "channel mean is not a pixel mask of the image)")
    op = Operator(tuple(maps), sigma, task.strip().lower())
    op.measurement_shape(channels, size)  # checks divisibility and channels now, with a one-line error
    return op


def downsample(k: int, sigma: float = 0.0) -> Operator:
    return Operator((Downsample(k),), sigma, f"sr{k}" + (f"+denoise:{sigma:g}" if sigma else ""))


def greyscale(channels: int = 3, sigma: float = 0.0) -> Operator:
    return Operator((Greyscale(channels),), sigma, "colourise" + (f"+denoise:{sigma:g}" if sigma else ""))


def mask(m: torch.Tensor, sigma: float = 0.0) -> Operator:
    return Operator((Mask(m),), sigma, "inpaint" + (f"+denoise:{sigma:g}" if sigma else ""))


def noise(sigma: float) -> Operator:
    return Operator((), float(sigma), f"denoise:{sigma:g}")


# ---------------------------------------------------------------------------------------------- who offers what


def offered(family_tasks, op: Operator) -> bool:
    return all(t in family_tasks for t in op.tasks)


def check_offered(family: str, op: Operator) -> None:
    """A one-line error naming the families that offer ``op`` when ``family`` does not."""
    from . import registry

    if offered(registry.restore_tasks(family), op):
        return
    missing = [t for t in op.tasks if t not in registry.restore_tasks(family)]
    others = [f for f in registry.FAMILIES if offered(registry.restore_tasks(f), op)]
    raise ImagegenError(f"the {family} family does not offer {' + '.join(missing)} (task {op.describe()}); "
                        f"families that do: {', '.join(others) or 'none'} (see 'imagegen list')")


__all__ = ["TASKS", "TASK_HELP", "Downsample", "Greyscale", "Mask", "Operator", "check_offered", "downsample",
           "greyscale", "mask", "noise", "offered", "parse_task"]
