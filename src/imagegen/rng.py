"""Per-image random streams, so the same seed gives the same image at any batch size.

EDM's ``generate.py`` seeds every image on its own (``StackedRandomGenerator``): image ``i`` of a run with
seed ``s`` is drawn from a generator seeded by ``(s, i)`` alone, never from a stream shared with the other
images of its batch. :class:`ImageGenerators` is that object; the family functions and samplers draw their
noise through :func:`randn`, :func:`rand` and :func:`randint` here, which accept either a plain
``torch.Generator`` (or None: the global stream), drawn from exactly as ``torch.randn(..., generator=g)``
would, or an :class:`ImageGenerators`, which draws row ``i`` of the result (the first dimension is the
image) from image ``i``'s own generator.

This module is at the bottom of the package's layers: it imports torch and numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def image_seed(seed: int, index: int) -> int:
    """The seed of image ``index`` of a run seeded ``seed``: numpy's SeedSequence of the pair, so that
    (seed, index) pairs do not collide as ``seed * K + index`` would (seed 1 image 0 vs seed 0 image K)."""
    return int(np.random.SeedSequence([seed % 2**64, index]).generate_state(1, np.uint64)[0] >> 1)


class ImageGenerators:
    """One ``torch.Generator`` per image (EDM's ``StackedRandomGenerator``): a draw of shape (n, ...) is n
    draws of shape (...), row i from generator i. Pass it wherever a family takes ``generator``."""

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.seeds = [int(s) for s in seeds]
        self.generators = [torch.Generator(device=self.device).manual_seed(s) for s in self.seeds]

    @classmethod
    def for_images(cls, seed: int, start: int, n: int, device: torch.device | str = "cpu") -> ImageGenerators:
        """The generators of images ``start .. start + n - 1`` of a run seeded ``seed``."""
        return cls([image_seed(seed, i) for i in range(start, start + n)], device)

    def __len__(self) -> int:
        return len(self.generators)

    def _stack(self, draw, size) -> torch.Tensor:
        size = tuple(size)
        if not size or size[0] != len(self.generators):
            raise ValueError(f"a per-image draw must have one row per image ({len(self.generators)}), "
                             f"got shape {size}")
        return torch.stack([draw(size[1:], g) for g in self.generators])


def _size(size) -> tuple[int, ...]:
    return tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else tuple(size)


def _draw(fn, size, generator, device, dtype) -> torch.Tensor:
    """``fn(size, generator=..., device=..., dtype=...)`` (torch.randn or torch.rand), or per image."""
    size = _size(size)
    if isinstance(generator, ImageGenerators):
        return generator._stack(lambda s, g: fn(s, generator=g, device=generator.device, dtype=dtype),
                                size).to(device or generator.device)
    return fn(size, generator=generator, device=device, dtype=dtype)


def randn(*size, generator=None, device=None, dtype=None) -> torch.Tensor:
    """``torch.randn(*size, generator=generator, device=device, dtype=dtype)``, or per image."""
    return _draw(torch.randn, size, generator, device, dtype)


def rand(*size, generator=None, device=None, dtype=None) -> torch.Tensor:
    """``torch.rand(*size, generator=generator, device=device, dtype=dtype)``, or per image."""
    return _draw(torch.rand, size, generator, device, dtype)


def randint(low: int, high: int, size, generator=None, device=None) -> torch.Tensor:
    """``torch.randint(low, high, size, generator=generator, device=device)``, or per image."""
    size = tuple(size)
    if isinstance(generator, ImageGenerators):
        return generator._stack(lambda s, g: torch.randint(low, high, s, generator=g, device=generator.device),
                                size).to(device or generator.device)
    return torch.randint(low, high, size, generator=generator, device=device)
