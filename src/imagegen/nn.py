"""Network blocks shared by more than one family: GroupNorm ResBlocks with a conditioning embedding,
sinusoidal embeddings, self-attention on feature maps (``F.scaled_dot_product_attention``), and the
re-sampling layers of the DDPM UNet (Ho et al. 2020, appendix B).

Every block works on CPU and CUDA, in float32 and under bf16 autocast, and in either memory format
(channels_last is usually faster for convolutions on tensor-core GPUs).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def norm_groups(channels: int, groups: int = 32) -> int:
    """A group count <= ``groups`` that divides ``channels`` (gcd: 32 for the paper's widths; tiny test
    models with 8 or 12 channels still get a valid GroupNorm), with at least 2 channels per group: with
    one channel per group the norm subtracts each channel's mean, which erases the per-channel offset
    through which ``ResBlock`` adds its embedding, so those blocks could not see the time step or label."""
    g = math.gcd(channels, groups)
    if channels >= 2 and channels // g < 2:
        g = math.gcd(channels, min(groups, channels // 2))
    return g


def group_norm(channels: int, groups: int = 32) -> nn.GroupNorm:
    return nn.GroupNorm(norm_groups(channels, groups), channels, eps=1e-6)


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) float -> (B, dim): the Transformer's position encoding (Vaswani et al. 2017, sec. 3.5) as
    used for the diffusion time step in DDPM; cos half then sin half, as in the DDPM code."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv3x3, add a projection of the embedding, GroupNorm -> SiLU -> dropout ->
    conv3x3, plus a (1x1 when the width changes) skip connection (DDPM's ``resnet_block``).

    The last conv starts at zero so every block starts as the identity (Nichol & Dhariwal 2021 use the
    same "zero_module" init), which makes deep UNets train stably from step 0."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int | None, dropout: float = 0.0, groups: int = 32):
        super().__init__()
        self.norm1 = group_norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_ch) if emb_dim else None
        self.norm2 = group_norm(out_ch, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, out, H, W)
        if self.emb_proj is not None and emb is not None:
            h = h + self.emb_proj(F.silu(emb))[:, :, None, None].to(h.dtype)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over the H*W positions of a feature map, with a residual connection
    (DDPM's ``attn_block``; one head there). Uses ``F.scaled_dot_product_attention`` so PyTorch picks
    the flash / memory-efficient kernel on GPUs and a fused one on CPU."""

    def __init__(self, ch: int, heads: int = 1, groups: int = 32):
        super().__init__()
        if ch % heads:  # a config value (diffusion's model.attn_heads): the user's to fix, in one line
            from .errors import ImagegenError

            raise ImagegenError(f"model.attn_heads={heads} must divide the attention width {ch} (base_channels x "
                                f"channel_mult at that resolution); pick a divisor of {ch}")
        self.heads = heads
        self.norm = group_norm(ch, groups)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x))  # (B, 3C, H, W)
        # (B, 3C, H, W) -> 3 x (B, heads, HW, C/heads)
        q, k, v = qkv.reshape(b, 3, self.heads, c // self.heads, h * w).permute(1, 0, 2, 4, 3).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, C/heads)
        out = out.transpose(2, 3).reshape(b, c, h, w)
        return x + self.proj(out)


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3x3 conv (DDPM's ``resamp_with_conv=True``)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour then a 3x3 conv (DDPM's ``upsample``)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


__all__ = ["Downsample", "ResBlock", "SelfAttention2d", "Upsample", "group_norm", "norm_groups",
           "sinusoidal_embedding"]
