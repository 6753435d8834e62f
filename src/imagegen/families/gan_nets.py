"""Generator and discriminator networks of the GAN family.

Two architectures, picked by ``model.arch``:

- ``dcgan``: Radford, Metz & Chintala 2015 ("DCGAN"): a transposed-convolution generator with
  BatchNorm and ReLU, a strided-convolution discriminator with LeakyReLU(0.2) and BatchNorm
  (dropped when spectral norm or a gradient penalty is on: both assume per-sample discriminators).
- ``resnet``: the residual networks of Miyato et al. 2018 (SNGAN, appendix B) / Gulrajani et al. 2017:
  pre-activation up-sampling blocks in G, down-sampling blocks with average pooling and global sum
  pooling in D.

Both take any image size that halves to a base of 3..9 pixels at least once (16, 28, 32, 64, ...).
Class conditioning uses conditional BatchNorm in G (de Vries et al. 2017; Miyato & Koyama 2018) and a
projection discriminator in D (Miyato & Koyama 2018, eq. 3: ``D(x, y) = psi(phi(x)) + <embed(y), phi(x)>``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ..errors import ImagegenError


def stages(size: int) -> tuple[int, int]:
    """Image size -> (base, k): the generator starts at ``base x base`` and doubles ``k`` times."""
    base, k = size, 0
    while base % 2 == 0 and base // 2 >= 3:
        base //= 2
        k += 1
    if k < 1 or base > 9:
        raise ImagegenError(f"the GAN networks cannot make {size}x{size} images (the size must halve to "
                            f"3..9 pixels, e.g. 16, 28, 32 or 64); set --set data.image_size=32")
    return base, k


def _sn(module: nn.Module, enabled: bool) -> nn.Module:
    # Spectral normalisation (Miyato et al. 2018): W / sigma(W), sigma by one power iteration per
    # training forward; bounds each layer's Lipschitz constant by 1.
    return spectral_norm(module) if enabled else module


class CondBatchNorm2d(nn.Module):
    """BatchNorm whose gain and bias are looked up per class (conditional BN). ``y`` may also be soft
    class weights (B, K), which lets interpolation morph between classes. Without classes it is plain BN."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.bn = nn.BatchNorm2d(channels, affine=num_classes == 0)
        if num_classes:
            self.gain = nn.Embedding(num_classes, channels)
            self.bias = nn.Embedding(num_classes, channels)
            nn.init.ones_(self.gain.weight)
            nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = self.bn(x)
        if not self.num_classes:
            return h
        if y is None:
            raise ValueError("a class-conditional generator needs labels")
        if y.is_floating_point():  # (B, K) class weights
            gamma, beta = y @ self.gain.weight, y @ self.bias.weight
        else:  # (B,) labels
            gamma, beta = self.gain(y), self.bias(y)
        return h * gamma[:, :, None, None] + beta[:, :, None, None]


class Projection(nn.Module):
    """Final linear layer + projection term: logits = w . h + <embed(y), h> (Miyato & Koyama 2018)."""

    def __init__(self, features: int, num_classes: int, sn: bool):
        super().__init__()
        self.linear = _sn(nn.Linear(features, 1), sn)
        self.embed = None
        if num_classes:
            embed = nn.Embedding(num_classes, features)
            # nn.Embedding's N(0, 1) default would make <embed(y), h> dominate the logit at the start
            nn.init.xavier_uniform_(embed.weight)
            self.embed = _sn(embed, sn)

    def forward(self, h: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        out = self.linear(h).squeeze(1)  # (B,)
        if self.embed is not None:
            if y is None:
                raise ValueError("a class-conditional discriminator needs labels")
            out = out + (self.embed(y) * h).sum(1)
        return out


# ---------------------------------------------------------------------------------------------- DCGAN


class DCGANGenerator(nn.Module):
    def __init__(self, z_dim: int, channels: int, size: int, width: int, num_classes: int):
        super().__init__()
        base, k = stages(size)
        chs = [width * 2 ** (k - 1 - i) for i in range(k)]  # widest first, e.g. [4w, 2w, w]
        self.z_dim = z_dim
        # a transposed conv from a 1x1 "image" is a linear layer to (chs[0], base, base)
        self.input = nn.ConvTranspose2d(z_dim, chs[0], base, 1, 0, bias=False)
        self.norms = nn.ModuleList([CondBatchNorm2d(c, num_classes) for c in chs])
        self.ups = nn.ModuleList([nn.ConvTranspose2d(chs[i - 1], chs[i], 4, 2, 1, bias=False)
                                  for i in range(1, k)])
        self.out = nn.ConvTranspose2d(chs[-1], channels, 4, 2, 1)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.input(z.view(z.shape[0], self.z_dim, 1, 1))  # (B, 4w, base, base)
        h = F.relu(self.norms[0](h, y))
        for up, norm in zip(self.ups, self.norms[1:]):
            h = F.relu(norm(up(h), y))  # doubles H and W
        return torch.tanh(self.out(h))  # (B, C, H, W) in [-1, 1]


class DCGANDiscriminator(nn.Module):
    def __init__(self, channels: int, size: int, width: int, num_classes: int, batchnorm: bool, sn: bool):
        super().__init__()
        base, k = stages(size)
        chs = [width * 2**i for i in range(k)]  # e.g. [w, 2w, 4w]
        layers: list[nn.Module] = [_sn(nn.Conv2d(channels, chs[0], 4, 2, 1), sn), nn.LeakyReLU(0.2)]
        for i in range(1, k):
            layers.append(_sn(nn.Conv2d(chs[i - 1], chs[i], 4, 2, 1, bias=not batchnorm), sn))
            if batchnorm:
                layers.append(nn.BatchNorm2d(chs[i]))
            layers.append(nn.LeakyReLU(0.2))
        self.features = nn.Sequential(*layers)
        # DCGAN ends with a base x base convolution to one logit: the same as a linear layer on the
        # flattened features, which is what the projection term needs
        self.head = Projection(chs[-1] * base * base, num_classes, sn)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x).flatten(1)  # (B, 4w * base * base)
        return self.head(h, y)  # (B,) logits


# ---------------------------------------------------------------------------------------------- ResNet


class GBlock(nn.Module):
    """Pre-activation residual block that doubles the resolution (SNGAN appendix B, Fig. 8a)."""

    def __init__(self, c_in: int, c_out: int, num_classes: int):
        super().__init__()
        self.norm1 = CondBatchNorm2d(c_in, num_classes)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.norm2 = CondBatchNorm2d(c_out, num_classes)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.skip = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = F.interpolate(F.relu(self.norm1(x, y)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.norm2(self.conv1(h), y)))
        return h + self.skip(F.interpolate(x, scale_factor=2, mode="nearest"))


class DBlock(nn.Module):
    """Residual block of the discriminator, optionally halving the resolution with average pooling.
    ``first`` is SNGAN's "optimized" first block: no ReLU before the first conv (it would clip the image)."""

    def __init__(self, c_in: int, c_out: int, down: bool, first: bool, sn: bool):
        super().__init__()
        self.down, self.first = down, first
        self.conv1 = _sn(nn.Conv2d(c_in, c_out, 3, 1, 1), sn)
        self.conv2 = _sn(nn.Conv2d(c_out, c_out, 3, 1, 1), sn)
        self.skip = _sn(nn.Conv2d(c_in, c_out, 1), sn) if (c_in != c_out or down) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(x)
        h = self.conv2(F.relu(self.conv1(h)))
        if self.down:
            h = F.avg_pool2d(h, 2)
        s = x
        if self.skip is not None:
            # the first block pools before its 1x1 conv (cheaper, same function); the others after
            if self.first and self.down:
                s = self.skip(F.avg_pool2d(s, 2))
            else:
                s = self.skip(s)
                s = F.avg_pool2d(s, 2) if self.down else s
        return h + s


class ResNetGenerator(nn.Module):
    def __init__(self, z_dim: int, channels: int, size: int, width: int, num_classes: int):
        super().__init__()
        self.base, k = stages(size)
        self.width = width
        self.input = nn.Linear(z_dim, width * self.base * self.base)
        self.blocks = nn.ModuleList([GBlock(width, width, num_classes) for _ in range(k)])
        self.norm = nn.BatchNorm2d(width)
        self.out = nn.Conv2d(width, channels, 3, 1, 1)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.input(z).view(z.shape[0], self.width, self.base, self.base)  # (B, w, base, base)
        for block in self.blocks:
            h = block(h, y)
        return torch.tanh(self.out(F.relu(self.norm(h))))  # (B, C, H, W) in [-1, 1]


class ResNetDiscriminator(nn.Module):
    def __init__(self, channels: int, size: int, width: int, num_classes: int, sn: bool):
        super().__init__()
        _, k = stages(size)
        blocks = [DBlock(channels, width, down=True, first=True, sn=sn)]
        blocks += [DBlock(width, width, down=True, first=False, sn=sn) for _ in range(k - 1)]
        blocks += [DBlock(width, width, down=False, first=False, sn=sn)]
        self.blocks = nn.Sequential(*blocks)
        self.head = Projection(width, num_classes, sn)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))  # (B, w): global sum pooling (SNGAN)
        return self.head(h, y)  # (B,) logits


def dcgan_init(module: nn.Module) -> None:
    """DCGAN's initialisation: conv weights ~ N(0, 0.02), BatchNorm gains ~ N(1, 0.02) (Radford et al.)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            w = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            nn.init.normal_(w, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
