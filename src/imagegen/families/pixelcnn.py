"""Autoregressive family: PixelCNN and Gated PixelCNN with exact likelihoods, fast sampling and completion.

An image is modelled as a product of conditionals in raster order (rows top to bottom, pixels left to
right, channels R -> G -> B within a pixel), p(x) = prod_i p(x_i | x_<i), so ``nll`` is exact.

Architectures (``arch``):

* ``pixelcnn``: van den Oord et al. 2016a ("Pixel Recurrent Neural Networks", sec. 3.4 and fig. 5): a
  masked convolution of type A (the centre pixel is hidden from itself), then residual blocks
  1x1 -> masked kxk type B -> 1x1. It has the known "blind spot" above-right of each pixel.
* ``gated``: van den Oord et al. 2016b ("Conditional Image Generation with PixelCNN Decoders", sec. 2.1
  to 2.3, fig. 2): a vertical stack (rows above) and a horizontal stack (the current row, to the left)
  joined by a 1x1 link from vertical to horizontal, gated units tanh(W_f * x) . sigmoid(W_g * x)
  (eq. 2) and class-conditional biases (eq. 4). No blind spot.
* ``pixelsnail``: Chen et al. 2018 ("PixelSNAIL", fig. 5): blocks of gated residual layers on causal
  (down-right-shifted) convolutions, each ending in a causal attention layer whose keys and values see every
  earlier pixel; the network lives in ``pixelsnail_net.py``. The cached sampler keeps a KV cache per
  attention layer, so each new pixel costs one row of attention.

Output distributions (``likelihood``):

* ``bernoulli`` per sub-pixel (binary data: batches in {-1, 1});
* ``softmax``: a 256-way categorical per sub-pixel (PixelRNN sec. 5.3), for grey or colour;
* ``logistic_mixture``: PixelCNN++ (Salimans et al. 2017, sec. 2.1-2.2): a mixture of discretised
  logistics per pixel, with the mean of G linear in R and of B linear in R and G.
* ``auto``: bernoulli for 1-bit data, softmax for 8-bit grey, logistic_mixture for colour.

Channel order inside a pixel. For ``bernoulli`` and ``softmax`` every feature map is split into C
channel groups (group g predicts/encodes channel g); at the centre tap, mask A lets group g see input
groups < g and mask B groups <= g (PixelRNN sec. 3.4, fig. 4). For ``logistic_mixture`` the network only
sees pixels strictly before the current one (one group), and the R -> G -> B dependence is the
closed-form linear one of PixelCNN++.

Sampling (``sampler``):

* ``naive``: the reference: re-run the whole network for every pixel (and every channel, for channel
  groups), H*W*C forward passes.
* ``cached`` (default): exact incremental evaluation in the spirit of Fast PixelCNN++ generation
  (Ramachandran et al. 2017). In a causal network the activation of every layer at position p depends
  only on pixels before p, so it is computed exactly once, at the step that generates p: each step runs
  every layer at one position (a patch times a weight matrix) and stores the result in a per-layer
  buffer that later steps read. The vertical stack of the Gated PixelCNN sees whole rows, so it is run
  once per row, when the row is complete. Total work is about one forward pass instead of H*W of them.
  Both paths draw the same random numbers in the same order, so the same generator seed gives the same
  samples (up to float rounding changing a draw that lands within ~1e-7 of a decision boundary).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .. import rng
from ..data import KEEPS, make_mask  # noqa: F401  (re-exported: completion masks)
from ..distributions import discretized_logistic_log_prob
from ..errors import ImagegenError
from ..restoration import check_offered
from .base import bits_per_dim, check_labels, optimizer_step

NAME = "pixelcnn"

ARCHS = ("pixelcnn", "gated", "pixelsnail")
LIKELIHOODS = ("auto", "bernoulli", "softmax", "logistic_mixture")
SAMPLERS = ("naive", "cached")
SAMPLE_CHOICES = {"sampler": SAMPLERS}  # the values sample() takes (imagegen compare reads them)


@dataclass
class Config:
    # the defaults are a small model that trains usefully on a CPU; the presets hold the full-size recipes
    arch: str = "gated"  # pixelcnn | gated | pixelsnail
    hidden_channels: int = 32  # gated: channels of each stack; pixelcnn: residual stream (2h in the paper)
    layers: int = 5  # gated layers / residual blocks after the first masked layer
    kernel_size: int = 3  # kernel of the hidden layers (odd)
    first_kernel_size: int = 7  # kernel of the first (type A) layer (odd)
    head_channels: int = 128  # width of the hidden 1x1 output layer
    likelihood: str = "auto"  # auto | bernoulli | softmax | logistic_mixture
    mixture_components: int = 10  # logistic_mixture only (PixelCNN++ uses 10)
    class_cond: bool = False  # class-conditional biases in every layer (Gated PixelCNN eq. 4)
    # P(label -> a "null" class) in training; > 0 adds that class, so the same net is also unconditional and
    # sample(..., guidance=g) can mix the two: classifier-free guidance on the logits (Ho & Salimans 2022, as
    # autoregressive image models use it, e.g. Yu et al. 2022, Parti); 0 keeps the plain conditional model
    label_dropout: float = 0.0
    # pixelsnail only: `blocks` blocks of `layers` gated residual layers, each block ending in causal attention
    blocks: int = 2
    key_channels: int = 16  # attention keys/queries (per channel group)
    value_channels: int = 32  # attention values (per channel group)

    RANGES: ClassVar[dict[str, str]] = {  # checked when a config is read (config.check_range)
        "hidden_channels": "[1,inf)", "layers": "[0,1000]", "kernel_size": "[1,inf)", "first_kernel_size": "[1,inf)",
        "head_channels": "[1,inf)", "mixture_components": "[1,inf)", "blocks": "[0,inf)", "key_channels": "[1,inf)",
        "value_channels": "[1,inf)", "label_dropout": "[0,1)"}


TRAIN_DEFAULTS = {"lr": 1e-3, "batch_size": 64, "ema_decay": 0.999}
TEST_CONFIG = {"hidden_channels": 8, "layers": 2, "kernel_size": 3, "first_kernel_size": 3,
               "head_channels": 8, "mixture_components": 2, "blocks": 2, "key_channels": 4, "value_channels": 4}


# ---------------------------------------------------------------------------------------------- masks


def group_ids(n: int, groups: int, repeats: int = 1) -> torch.Tensor:
    """Channel -> channel group for ``n`` channels: contiguous blocks, the layout ``repeats`` times (the
    tanh and sigmoid halves of a gated layer each carry the full group layout)."""
    per = n // repeats
    if per < groups:
        raise ImagegenError(f"model.hidden_channels and model.head_channels must be at least {groups} "
                            f"(one feature per colour channel), got {per}")
    return (torch.arange(per) * groups // per).repeat(repeats)


class MaskedConv2d(nn.Conv2d):
    """A convolution whose kernel is (kh, kw) with the output pixel aligned to tap ``anchor``; the input
    is zero-padded so the output has the input's size. ``mask``: None (all taps), "A" or "B": taps after
    the anchor in raster order are zeroed; at the anchor, output group g sees input groups < g (A) or
    <= g (B) (PixelRNN sec. 3.4)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: tuple[int, int], anchor: tuple[int, int],
                 mask: str | None = None, in_groups: torch.Tensor | None = None,
                 out_groups: torch.Tensor | None = None):
        super().__init__(in_ch, out_ch, kernel, padding=0)
        kh, kw = kernel
        ah, aw = anchor
        self.anchor = anchor
        self.pad = (aw, kw - 1 - aw, ah, kh - 1 - ah)  # F.pad order: left, right, top, bottom
        m = torch.ones(out_ch, in_ch, kh, kw)
        if mask is not None:
            m[:, :, ah + 1:] = 0
            m[:, :, ah, aw + 1:] = 0
            gi = in_groups if in_groups is not None else torch.zeros(in_ch, dtype=torch.long)
            go = out_groups if out_groups is not None else torch.zeros(out_ch, dtype=torch.long)
            centre = (gi[None, :] < go[:, None]) if mask == "A" else (gi[None, :] <= go[:, None])
            m[:, :, ah, aw] = centre.float()
        self.register_buffer("mask", m, persistent=False)

    def masked_weight(self) -> torch.Tensor:
        return self.weight * self.mask

    def forward(self, x):  # (B, Cin, H, W) -> (B, Cout, H, W)
        return F.conv2d(F.pad(x, self.pad), self.masked_weight(), self.bias)

    # --- incremental evaluation (see the module docstring) ---
    # Caches are channels-last, (n, H+pad, W+2pad, C), zero-padded by ``pad`` on top, left and right: a
    # pixel's features are contiguous, so reading a patch or writing a pixel touches few cache lines.
    def flat_weight(self) -> torch.Tensor:
        return self.masked_weight().permute(0, 2, 3, 1).flatten(1).t().contiguous()  # (kh*kw*Cin, Cout)

    def at(self, buf: torch.Tensor, pad: int, i: int, j: int, w_flat: torch.Tensor) -> torch.Tensor:
        """Output at pixel (i, j) from the channels-last cache ``buf`` -> (n, Cout)."""
        kh, kw = self.kernel_size
        r0, c0 = i + pad - self.anchor[0], j + pad - self.anchor[1]
        patch = buf[:, r0:r0 + kh, c0:c0 + kw].reshape(buf.shape[0], -1)  # (n, kh*kw*Cin)
        return torch.addmm(self.bias, patch, w_flat)

    def row(self, buf: torch.Tensor, pad: int, i: int, width: int) -> torch.Tensor:
        """Output row i (all columns) from the channels-last cache ``buf`` -> (n, W, Cout)."""
        kh, kw = self.kernel_size
        r0, c0 = i + pad - self.anchor[0], pad - self.anchor[1]
        patch = buf[:, r0:r0 + kh, c0:c0 + width + kw - 1].permute(0, 3, 1, 2)  # (n, Cin, kh, W+kw-1)
        return F.conv2d(patch, self.masked_weight(), self.bias)[:, :, 0].transpose(1, 2)


def conv1x1(in_ch, out_ch, mask=None, in_groups=None, out_groups=None) -> MaskedConv2d:
    return MaskedConv2d(in_ch, out_ch, (1, 1), (0, 0), mask, in_groups, out_groups)


def causal_kxk(in_ch, out_ch, k, mask, in_groups, out_groups) -> MaskedConv2d:
    """A masked k x k convolution; the rows below the centre are all masked, so the kernel keeps only
    rows 0..k//2 (half the work, same function)."""
    return MaskedConv2d(in_ch, out_ch, (k // 2 + 1, k), (k // 2, k // 2), mask, in_groups, out_groups)


def gate(a: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Gated activation unit tanh(a_f) * sigmoid(a_g) (Gated PixelCNN eq. 2)."""
    f, g = a.chunk(2, dim=dim)
    return torch.tanh(f) * torch.sigmoid(g)


def _pad_buffer(n: int, ch: int, height: int, width: int, pad: int, like: torch.Tensor) -> torch.Tensor:
    return like.new_zeros(n, height + pad, width + 2 * pad, ch)  # channels-last


# ---------------------------------------------------------------------------------------------- networks


class _Head(nn.Module):
    """ReLU -> 1x1 -> ReLU -> 1x1 to the distribution parameters, both masked B (PixelRNN sec. 3.4)."""

    def __init__(self, in_ch: int, head_ch: int, out_ch: int, groups: int, out_groups: torch.Tensor):
        super().__init__()
        self.conv1 = conv1x1(in_ch, head_ch, "B", group_ids(in_ch, groups), group_ids(head_ch, groups))
        self.conv2 = conv1x1(head_ch, out_ch, "B", group_ids(head_ch, groups), out_groups)

    def forward(self, h):
        return self.conv2(F.relu(self.conv1(F.relu(h))))

    def at(self, h, w):  # (n, Cin) -> (n, Cout)
        return torch.addmm(self.conv2.bias, F.relu(torch.addmm(self.conv1.bias, F.relu(h), w[0])), w[1])

    def flat_weights(self):
        return [self.conv1.flat_weight(), self.conv2.flat_weight()]


class _ResidualBlock(nn.Module):
    """PixelRNN fig. 5 (PixelCNN): ReLU -> 1x1 (2h -> h) -> ReLU -> masked kxk B -> ReLU -> 1x1 (h -> 2h)."""

    def __init__(self, ch: int, k: int, groups: int, num_classes: int):
        super().__init__()
        half = max(ch // 2, groups)
        g_ch, g_half = group_ids(ch, groups), group_ids(half, groups)
        self.reduce = conv1x1(ch, half, "B", g_ch, g_half)
        self.conv = causal_kxk(half, half, k, "B", g_half, g_half)
        self.expand = conv1x1(half, ch, "B", g_half, g_ch)
        self.cond = nn.Embedding(num_classes, half) if num_classes else None

    def forward(self, h, y):
        a = F.relu(self.reduce(F.relu(h)))
        c = self.conv(a)
        if self.cond is not None:
            c = c + self.cond(y)[:, :, None, None]
        return h + self.expand(F.relu(c))


class PixelCNN(nn.Module):
    """The original PixelCNN (PixelRNN paper sec. 3.4) with a configurable output distribution."""

    def __init__(self, cfg: Config, channels: int, out_ch: int, groups: int, out_groups: torch.Tensor,
                 num_classes: int):
        super().__init__()
        h = cfg.hidden_channels
        self.first = causal_kxk(channels, h, cfg.first_kernel_size, "A", group_ids(channels, groups),
                                group_ids(h, groups))
        self.first_cond = nn.Embedding(num_classes, h) if num_classes else None
        self.blocks = nn.ModuleList(_ResidualBlock(h, cfg.kernel_size, groups, num_classes)
                                    for _ in range(cfg.layers))
        self.head = _Head(h, cfg.head_channels, out_ch, groups, out_groups)
        self.pad = max(cfg.first_kernel_size, cfg.kernel_size) // 2

    def forward(self, x, y=None):  # (B, C, H, W) -> (B, P, H, W)
        h = self.first(x)
        if self.first_cond is not None:
            h = h + self.first_cond(y)[:, :, None, None]
        for block in self.blocks:
            h = block(h, y)
        return self.head(h)

    # --- incremental evaluation ---
    def init_cache(self, x_buf: torch.Tensor, y, height: int, width: int) -> dict:
        n = x_buf.shape[0]
        return {
            "x": x_buf,
            "a": [_pad_buffer(n, b.conv.in_channels, height, width, self.pad, x_buf) for b in self.blocks],
            "w_first": self.first.flat_weight(),
            "w_blocks": [(b.reduce.flat_weight(), b.conv.flat_weight(), b.expand.flat_weight())
                         for b in self.blocks],
            "w_head": self.head.flat_weights(),
            "c_first": None if self.first_cond is None else self.first_cond(y),
            "c_blocks": [None if b.cond is None else b.cond(y) for b in self.blocks],
        }

    def at(self, cache: dict, i: int, j: int) -> torch.Tensor:
        """Every layer at pixel (i, j), reading earlier positions from the buffers -> (n, P)."""
        p = self.pad
        h = self.first.at(cache["x"], p, i, j, cache["w_first"])
        if cache["c_first"] is not None:
            h = h + cache["c_first"]
        layers = zip(self.blocks, cache["a"], cache["w_blocks"], cache["c_blocks"])
        for b, buf, (w_r, w_c, w_e), cond in layers:
            a = F.relu(torch.addmm(b.reduce.bias, F.relu(h), w_r))
            buf[:, i + p, j + p] = a
            c = b.conv.at(buf, p, i, j, w_c)
            if cond is not None:
                c = c + cond
            h = h + torch.addmm(b.expand.bias, F.relu(c), w_e)
        return self.head.at(h, cache["w_head"])

    def row_done(self, cache: dict, i: int, width: int) -> None:
        pass  # every layer is evaluated pixel by pixel


class GatedLayer(nn.Module):
    """One layer of the Gated PixelCNN (van den Oord et al. 2016b, fig. 2).

    The vertical stack at row r sees input rows r-k//2..r (a (k//2+1) x k kernel); it reaches the
    horizontal stack only shifted down by one row, so pixel (r, c) receives rows < r from it. The
    horizontal stack sees the current row, columns c-k//2..c (1 x (k//2+1)), masked A in the first layer
    (the centre is the pixel being predicted) and B after; it has a residual connection (not in the first
    layer, whose input is the image)."""

    def __init__(self, in_ch: int, ch: int, k: int, first: bool, groups: int, num_classes: int,
                 has_v_out: bool = True):
        super().__init__()
        g_in = group_ids(in_ch, groups)
        g_2ch, g_ch = group_ids(2 * ch, groups, repeats=2), group_ids(ch, groups)
        self.first, self.ch, self.has_v_out = first, ch, has_v_out
        self.v_conv = MaskedConv2d(in_ch, 2 * ch, (k // 2 + 1, k), (k // 2, k // 2))  # rows above + own row
        self.h_conv = MaskedConv2d(in_ch, 2 * ch, (1, k // 2 + 1), (0, k // 2), "A" if first else "B",
                                   g_in, g_2ch)
        self.v_to_h = conv1x1(2 * ch, 2 * ch)  # fed rows strictly above: no mask needed
        self.h_out = conv1x1(ch, ch, "B", g_ch, g_ch)
        # class-conditional biases V^T h of eq. 4, one for each stack (the last layer's v output is unused)
        self.cond_v = nn.Embedding(num_classes, 2 * ch) if num_classes and has_v_out else None
        self.cond_h = nn.Embedding(num_classes, 2 * ch) if num_classes else None

    def forward(self, v, h, y):
        v_pre = self.v_conv(v)  # (B, 2ch, H, W)
        v_shift = F.pad(v_pre, (0, 0, 1, 0))[:, :, :-1]  # row r now holds row r-1: strictly above
        h_pre = self.h_conv(h) + self.v_to_h(v_shift)
        if self.cond_h is not None:
            h_pre = h_pre + self.cond_h(y)[:, :, None, None]
        h_new = self.h_out(gate(h_pre))
        if not self.first:
            h_new = h + h_new
        if not self.has_v_out:
            return None, h_new
        if self.cond_v is not None:
            v_pre = v_pre + self.cond_v(y)[:, :, None, None]
        return gate(v_pre), h_new


class GatedPixelCNN(nn.Module):
    def __init__(self, cfg: Config, channels: int, out_ch: int, groups: int, out_groups: torch.Tensor,
                 num_classes: int):
        super().__init__()
        ch = cfg.hidden_channels
        n = cfg.layers + 1
        self.layers = nn.ModuleList(
            GatedLayer(channels if i == 0 else ch, ch, cfg.first_kernel_size if i == 0 else cfg.kernel_size,
                       first=i == 0, groups=groups, num_classes=num_classes, has_v_out=i < n - 1)
            for i in range(n))
        self.head = _Head(ch, cfg.head_channels, out_ch, groups, out_groups)
        self.pad = max(cfg.first_kernel_size, cfg.kernel_size) // 2

    def forward(self, x, y=None):  # (B, C, H, W) -> (B, P, H, W)
        v, h = x, x
        for layer in self.layers:
            v, h = layer(v, h, y)
        return self.head(h)

    # --- incremental evaluation ---
    def init_cache(self, x_buf: torch.Tensor, y, height: int, width: int) -> dict:
        n, p = x_buf.shape[0], self.pad
        # v[l], h[l]: inputs of layer l, padded; vh[l]: v_to_h(shifted v_pre), row r = from row r-1
        v = [x_buf] + [_pad_buffer(n, lay.ch, height, width, p, x_buf) for lay in self.layers[:-1]]
        h = [x_buf] + [_pad_buffer(n, lay.ch, height, width, p, x_buf) for lay in self.layers[:-1]]
        vh = []
        for lay in self.layers:
            buf = x_buf.new_empty(n, height, width, 2 * lay.ch)  # channels-last
            buf[:, 0] = lay.v_to_h.bias  # row 0 sees the shifted-in zero row: bias only
            vh.append(buf)
        return {
            "x": x_buf, "v": v, "h": h, "vh": vh,
            "w_h": [lay.h_conv.flat_weight() for lay in self.layers],
            "w_out": [lay.h_out.flat_weight() for lay in self.layers],
            "w_head": self.head.flat_weights(),
            "c_v": [None if lay.cond_v is None else lay.cond_v(y)[:, None, :] for lay in self.layers],
            "c_h": [None if lay.cond_h is None else lay.cond_h(y) for lay in self.layers],
        }

    def at(self, cache: dict, i: int, j: int) -> torch.Tensor:
        """The horizontal stack and the head at pixel (i, j) -> (n, P)."""
        p = self.pad
        h = None
        for l, lay in enumerate(self.layers):
            h_in = cache["h"][l]
            h_pre = lay.h_conv.at(h_in, p, i, j, cache["w_h"][l]) + cache["vh"][l][:, i, j]
            if cache["c_h"][l] is not None:
                h_pre = h_pre + cache["c_h"][l]
            h_new = torch.addmm(lay.h_out.bias, gate(h_pre), cache["w_out"][l])
            if not lay.first:
                h_new = h_new + h_in[:, i + p, j + p]
            if l + 1 < len(self.layers):
                cache["h"][l + 1][:, i + p, j + p] = h_new
            h = h_new
        return self.head.at(h, cache["w_head"])

    def row_done(self, cache: dict, i: int, width: int) -> None:
        """Row i of the image is complete: run the vertical stack on row i (it feeds row i+1)."""
        p = self.pad
        for l, lay in enumerate(self.layers):
            v_pre = lay.v_conv.row(cache["v"][l], p, i, width)  # (n, W, 2ch)
            if i + 1 < cache["vh"][l].shape[1]:
                w = lay.v_to_h.weight[:, :, 0, 0]  # (2ch, 2ch)
                cache["vh"][l][:, i + 1] = F.linear(v_pre, w, lay.v_to_h.bias)
            if lay.has_v_out:
                if cache["c_v"][l] is not None:
                    v_pre = v_pre + cache["c_v"][l]
                cache["v"][l + 1][:, i + p, p:p + width] = gate(v_pre, dim=-1)


# ---------------------------------------------------------------------------------------------- likelihoods


def _n_coeffs(c: int) -> int:
    return c * (c - 1) // 2


def _split_mixture(params: torch.Tensor, c: int, m: int):
    """(B, M(1 + 2C + C(C-1)/2), ...) -> logits (B, M, ...), means, log_scales (B, C, M, ...),
    coeffs (B, C(C-1)/2, M, ...)."""
    logits = params[:, :m]
    rest = params[:, m:].unflatten(1, (2 * c + _n_coeffs(c), m))
    means, log_scales = rest[:, :c], rest[:, c:2 * c].clamp(min=-7.0)  # PixelCNN++ clamps log s at -7
    coeffs = torch.tanh(rest[:, 2 * c:])  # PixelCNN++ sec. 2.2 keeps the coefficients in (-1, 1)
    return logits, means, log_scales, coeffs


def logistic_mixture_log_prob(params: torch.Tensor, x: torch.Tensor, m: int) -> torch.Tensor:
    """log p(pixel) under the PixelCNN++ mixture (sec. 2.2): params (B, P, H, W), x (B, C, H, W) -> (B, H, W).
    Channel c's mean in component k is mu_{c,k} + sum_{c' < c} alpha_{c,c',k} x_{c'} (R -> G -> B)."""
    c = x.shape[1]
    logits, means, log_scales, coeffs = _split_mixture(params, c, m)
    xe = x.unsqueeze(2)  # (B, C, 1, H, W)
    adjusted, k = [], 0
    for ci in range(c):
        mean = means[:, ci]
        for cj in range(ci):
            mean = mean + coeffs[:, k] * xe[:, cj]
            k += 1
        adjusted.append(mean)
    mean = torch.stack(adjusted, 1)  # (B, C, M, H, W)
    log_p = discretized_logistic_log_prob(xe, mean, log_scales).sum(1)  # (B, M, H, W): channels given k
    return torch.logsumexp(log_p + F.log_softmax(logits, dim=1), dim=1)


def to_levels(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> integer levels 0..255 (as data.to_uint8 quantises)."""
    return ((x.clamp(-1, 1) + 1) * 127.5 + 0.5).floor().clamp(0, 255).long()


def from_levels(k: torch.Tensor) -> torch.Tensor:
    return k.float() / 127.5 - 1.0


# ---------------------------------------------------------------------------------------------- the model


class AutoregressiveModel(nn.Module):
    """A causal network plus its output distribution. ``forward(x, y)`` returns -log p(x | y) in nats per
    image (B,), so a DDP-wrapped forward is the whole training loss; ``net(x, y)`` the parameters."""

    def __init__(self, cfg: Config, info):
        super().__init__()
        for name, value, valid in (("arch", cfg.arch, ARCHS), ("likelihood", cfg.likelihood, LIKELIHOODS)):
            if value not in valid:
                raise ImagegenError(f"model.{name} must be one of {', '.join(valid)}, got '{value}'")
        for name in ("kernel_size", "first_kernel_size"):
            k = getattr(cfg, name)
            if k % 2 == 0:
                raise ImagegenError(f"model.{name} must be odd, got {k}")
        if cfg.class_cond and info.num_classes == 0:
            raise ImagegenError("model.class_cond=true needs labelled data; this dataset has no labels "
                                "(use --set model.class_cond=false)")
        self.cfg, self.info = cfg, info
        c = info.channels
        if cfg.likelihood == "auto":
            self.likelihood = "bernoulli" if info.bits == 1 else ("softmax" if c == 1 else "logistic_mixture")
        else:
            self.likelihood = cfg.likelihood
        self.channels = c
        self.num_classes = info.num_classes if cfg.class_cond else 0
        # the null class of classifier-free guidance: one more embedding row, index num_classes
        self.null_label = self.num_classes if self.num_classes and cfg.label_dropout > 0 else None
        self.mixtures = cfg.mixture_components
        if self.likelihood == "logistic_mixture":
            groups, out_ch = 1, self.mixtures * (1 + 2 * c + _n_coeffs(c))
            out_groups = torch.zeros(out_ch, dtype=torch.long)
        else:
            per = 1 if self.likelihood == "bernoulli" else 256
            groups, out_ch = c, c * per
            out_groups = torch.arange(out_ch) // per  # (C, per) layout: block c predicts channel c
        self.groups = groups  # channel groups: > 1 means a pixel's channels are predicted one at a time
        if cfg.arch == "pixelsnail":
            from .pixelsnail_net import PixelSNAIL as arch  # a sibling module that imports this one
        else:
            arch = GatedPixelCNN if cfg.arch == "gated" else PixelCNN
        self.net = arch(cfg, c, out_ch, groups, out_groups, self.num_classes + (self.null_label is not None))

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x) summed over the image: params (B, P, H, W), x (B, C, H, W) in [-1, 1] -> (B,) nats."""
        params = params.float()
        if self.likelihood == "bernoulli":
            target = (x > 0).float()
            return -F.binary_cross_entropy_with_logits(params, target, reduction="none").flatten(1).sum(1)
        if self.likelihood == "softmax":
            b, c, h, w = x.shape
            logits = params.view(b, c, 256, h, w)
            lp = F.log_softmax(logits, dim=2).gather(2, to_levels(x).unsqueeze(2))
            return lp.flatten(1).sum(1)
        return logistic_mixture_log_prob(params, x.float(), self.mixtures).flatten(1).sum(1)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """-log p(x | y) in nats per image, (B,)."""
        return -self.log_prob(self.net(x, y), x)

    # --- sampling one pixel from its parameters (shared by both samplers) ---
    def randoms_per_pixel(self) -> int:
        return self.channels + (1 if self.likelihood == "logistic_mixture" else 0)

    def sample_channels(self, params: torch.Tensor, channels: range, x_pix: torch.Tensor, u: torch.Tensor,
                        temperature: float) -> torch.Tensor:
        """Draw ``channels`` of one pixel from its parameters ``params`` (n, P) with uniforms ``u``
        (n, randoms_per_pixel); ``x_pix`` (n, C) holds the channels already fixed. Returns the updated
        pixel (n, C) in [-1, 1]. Inverse-CDF draws use one uniform per channel, so both samplers consume
        the generator identically."""
        params = params.float()
        x_pix = x_pix.clone()
        if self.likelihood == "bernoulli":
            for ci in channels:
                p1 = torch.sigmoid(params[:, ci] / temperature)
                x_pix[:, ci] = (u[:, ci] < p1).float() * 2 - 1
            return x_pix
        if self.likelihood == "softmax":
            logits = params.view(params.shape[0], self.channels, 256)
            for ci in channels:
                x_pix[:, ci] = from_levels(_categorical(logits[:, ci] / temperature, u[:, ci]))
            return x_pix
        # PixelCNN++ mixture: pick a component, then channels in order with means linear in earlier ones
        c, m = self.channels, self.mixtures
        logits, means, log_scales, coeffs = _split_mixture(params, c, m)
        k = _categorical(logits / temperature, u[:, 0])  # (n,)
        pick = k[:, None]
        uu = u[:, 1:].clamp(1e-5, 1 - 1e-5)
        idx = 0
        for ci in range(c):
            mean = means[:, ci].gather(1, pick)[:, 0]
            for cj in range(ci):
                mean = mean + coeffs[:, idx].gather(1, pick)[:, 0] * x_pix[:, cj]
                idx += 1
            if ci in channels:
                s = log_scales[:, ci].gather(1, pick)[:, 0].exp() * temperature
                val = mean + s * (torch.log(uu[:, ci]) - torch.log1p(-uu[:, ci]))  # inverse logistic CDF
                x_pix[:, ci] = from_levels(to_levels(val))
        return x_pix


def _categorical(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw from softmax(logits) (n, K) with uniforms u (n,) -> (n,) long."""
    cdf = torch.softmax(logits.float(), dim=-1).cumsum(-1)
    idx = (cdf < u[:, None] * cdf[:, -1:]).sum(-1)
    return idx.clamp(max=logits.shape[-1] - 1)


# ---------------------------------------------------------------------------------------------- sampling


def _guided_batch(model: AutoregressiveModel, x, known, y, guidance: float):
    """Classifier-free guidance doubles the batch: rows n.. are the same images with the null label."""
    if model.null_label is None:
        raise ImagegenError("--guidance needs a class-conditional model trained with label dropout "
                            "(--set model.class_cond=true --set model.label_dropout=0.1); this one was not")
    if model.likelihood == "logistic_mixture":
        raise ImagegenError("--guidance mixes logits: it works with the softmax and bernoulli likelihoods, "
                            "not logistic_mixture")
    known = None if known is None else torch.cat([known, known])
    return torch.cat([x, x]), known, torch.cat([y, torch.full_like(y, model.null_label)])


def _raster_sample(model: AutoregressiveModel, x: torch.Tensor, known: torch.Tensor | None, y,
                   generator, temperature: float, sampler: str, rows: int | None = None,
                   guidance: float = 1.0) -> torch.Tensor:
    """Fill ``x`` (n, C, H, W) in raster order; where ``known`` (n, C, H, W) bool is true, keep x.
    ``rows`` stops after that many rows (benchmarks time the naive sampler on a few rows). ``guidance`` g != 1
    draws each pixel from the logits l_null + g (l_y - l_null) (classifier-free guidance)."""
    if sampler not in SAMPLERS:
        raise ImagegenError(f"--sampler must be one of {', '.join(SAMPLERS)}, got '{sampler}'")
    if not temperature > 0:
        raise ImagegenError(f"--temperature must be positive, got {temperature}")
    n = x.shape[0]  # images; the network may see twice as many rows (guidance)
    guided = guidance != 1.0
    if guided:
        x, known, y = _guided_batch(model, x, known, y, guidance)
    rows_net, c, height, width = x.shape
    device = x.device
    x = x.clone()
    net = model.net
    cache, p = None, net.pad
    if sampler == "cached":
        cache = net.init_cache(x.new_zeros(rows_net, height + p, width + 2 * p, c), y, height, width)
    per_channel = model.groups > 1  # a pixel's channels come from separate evaluations
    d = model.randoms_per_pixel()
    # per-image streams (imagegen.rng): each image's uniforms for the whole raster in one draw, n calls in all
    # instead of n per pixel (one kernel launch each on a GPU)
    u_all = rng.rand(n, height, width, d, device=device, generator=generator) \
        if isinstance(generator, rng.ImageGenerators) else None
    for i in range(height if rows is None else min(rows, height)):
        for j in range(width):
            k_ij = None if known is None else known[:, :, i, j]  # (n, C)
            if k_ij is not None and bool(k_ij.all()):
                if cache is not None:  # given pixel: its activations are still needed by later pixels
                    cache["x"][:, i + p, j + p] = x[:, :, i, j]
                    net.at(cache, i, j)
                continue
            u = u_all[:, i, j] if u_all is not None else torch.rand(n, d, device=device, generator=generator)
            pix = x[:, :, i, j] if k_ij is not None else torch.zeros(rows_net, c, device=device)
            for chans in ([range(ci, ci + 1) for ci in range(c)] if per_channel else [range(c)]):
                if cache is None:
                    x[:, :, i, j] = pix
                    params = net(x, y)[:, :, i, j]
                else:
                    cache["x"][:, i + p, j + p] = pix
                    params = net.at(cache, i, j)
                if guided:  # (2n, P) -> (n, P): l_null + g (l_y - l_null), then both halves take the draw
                    params = params[n:] + guidance * (params[:n] - params[n:])
                    new = model.sample_channels(params, chans, pix[:n], u, temperature).repeat(2, 1)
                else:
                    new = model.sample_channels(params, chans, pix, u, temperature)
                pix = new if k_ij is None else torch.where(k_ij, pix, new)
            x[:, :, i, j] = pix
            if cache is not None:
                cache["x"][:, i + p, j + p] = pix
        if cache is not None:
            net.row_done(cache, i, width)
    return x[:n]


def _model_labels(model: AutoregressiveModel, labels, n: int, device, generator) -> torch.Tensor | None:
    if labels is None:
        if not model.num_classes:
            return None
        # a class-conditional model without labels: draw y uniformly (p(x) = mean_y p(x | y))
        return rng.randint(0, model.num_classes, (n,), device=device, generator=generator)
    return check_labels(labels, n, model.num_classes, device)


@torch.no_grad()
def sample(model: AutoregressiveModel, n: int, labels=None, generator=None, temperature: float = 1.0,
           sampler: str = "cached", guidance: float = 1.0) -> torch.Tensor:
    """``n`` images (n, C, H, W) in [-1, 1], pixel by pixel in raster order. ``temperature`` divides the
    logits (and multiplies the logistic scales); ``sampler``: cached (fast) or naive (the reference).
    A class-conditional model given no labels draws them uniformly. ``guidance`` g != 1 (a model trained with
    ``model.label_dropout`` > 0): classifier-free guidance, each sub-pixel drawn from l_null + g (l_y - l_null)."""
    device = next(model.parameters()).device
    y = _model_labels(model, labels, n, device, generator)
    s = model.info.size
    x = torch.zeros(n, model.channels, s, s, device=device)
    return _raster_sample(model, x, None, y, generator, temperature, sampler, guidance=guidance)


@torch.no_grad()
def nll(model: AutoregressiveModel, x: torch.Tensor, labels=None, marginal: bool = False) -> torch.Tensor:
    """Exact -log p(x) in nats per image (B,). With labels: -log p(x | y). A class-conditional model without
    labels (or with ``marginal=True``) gives the exact marginal -log sum_y p(y) p(x | y) with a uniform p(y)
    (one pass per class): the number comparable with unconditional models."""
    if marginal:
        labels = None
    if labels is not None or not model.num_classes:
        y = None if labels is None else check_labels(labels, x.shape[0], model.num_classes, x.device)
        return model(x, y)
    log_px_y = torch.stack([-model(x, torch.full((x.shape[0],), k, device=x.device, dtype=torch.long))
                            for k in range(model.num_classes)])  # (K, B)
    return -(torch.logsumexp(log_px_y, 0) - math.log(model.num_classes))


def bpd(model: AutoregressiveModel, x: torch.Tensor, labels=None) -> torch.Tensor:
    """Bits per sub-pixel (B,)."""
    return bits_per_dim(nll(model, x, labels), x[0].numel())


def _prefix_log_prob(model: AutoregressiveModel, x, known, y) -> torch.Tensor:
    """log p(the known raster prefix | y) (B,): the sum of log p(x_i | x_<i) over the sub-pixels before
    the first unknown one (exact: those conditionals see only known values)."""
    params = model.net(x, y).float()
    b, c, h, w = x.shape
    if model.likelihood == "bernoulli":
        lp = -F.binary_cross_entropy_with_logits(params, (x > 0).float(), reduction="none")  # (B, C, H, W)
    elif model.likelihood == "softmax":
        lp = F.log_softmax(params.view(b, c, 256, h, w), 2).gather(2, to_levels(x).unsqueeze(2))[:, :, 0]
    else:  # one term per pixel: count it if the whole pixel is known
        lp = logistic_mixture_log_prob(params, x, model.mixtures).unsqueeze(1)  # (B, 1, H, W)
        known = known.all(1, keepdim=True)
    order = lp.permute(0, 2, 3, 1).flatten(1)  # raster, then channel order
    k = known.permute(0, 2, 3, 1).flatten(1).float()
    prefix = torch.cumprod(k, dim=1)  # 1 until the first unknown sub-pixel
    return (order * prefix).sum(1)


@torch.no_grad()
def complete(model: AutoregressiveModel, x: torch.Tensor, mask: torch.Tensor, labels=None, generator=None,
             temperature: float = 1.0, sampler: str = "cached") -> torch.Tensor:
    """Fill the pixels where ``mask == 0`` in raster order; pixels where ``mask == 1`` are returned
    unchanged. x: (B, C, H, W) in [-1, 1]; mask: broadcastable to it ((1|B, 1|C, H, W)).

    Exact conditional sampling when the known pixels are a raster-order prefix (e.g. ``top-half``);
    for other masks (``left-half``) each unknown pixel is conditioned on every pixel before it, and known
    pixels after it are kept but cannot be looked ahead at (the model is causal). A class-conditional model
    given no labels draws y from p(y | known prefix) (Bayes' rule with a uniform prior), so a completion
    continues the digit it was given."""
    device = next(model.parameters()).device
    x = x.to(device).float()
    if x.dim() != 4 or x.shape[1:] != (model.channels, model.info.size, model.info.size):
        raise ImagegenError(f"complete expects images of shape (B, {model.channels}, {model.info.size}, "
                            f"{model.info.size}), got {tuple(x.shape)}")
    x_given = x
    try:
        known = (mask.to(device) > 0.5).expand_as(x).clone()
    except RuntimeError:
        raise ImagegenError(f"mask of shape {tuple(mask.shape)} does not fit images {tuple(x.shape)}; "
                            f"use (1, 1, H, W) or (B, C, H, W)") from None
    if model.likelihood == "bernoulli":
        x = torch.where(x > 0, 1.0, -1.0)
    else:
        x = from_levels(to_levels(x))
    n = x.shape[0]
    if labels is None and model.num_classes:
        log_prior = torch.stack([_prefix_log_prob(model, x, known, torch.full((n,), k, device=device))
                                 for k in range(model.num_classes)], 1)  # (B, K)
        u = torch.rand(n, device=device, generator=generator)
        y = _categorical(log_prior, u)
    else:
        y = _model_labels(model, labels, n, device, generator)
    out = _raster_sample(model, x, known, y, generator, temperature, sampler)
    return torch.where(known, x_given, out)  # the given pixels exactly as they came in


RESTORE_TASKS = ("inpaint",)


def restore(model: AutoregressiveModel, y_meas: torch.Tensor, operator, labels=None, generator=None,
            temperature: float = 1.0, sampler: str = "cached") -> torch.Tensor:
    """Restoration for an autoregressive model: exact conditional sampling needs the known values to be
    pixels of the image, so only a noiseless mask is offered (it is :func:`complete`). Any other operator
    (a pooled, grey or noisy measurement) would need p(x | A x) summed over every image: a one-line error
    names the families that offer it."""
    check_offered(NAME, operator)  # a mask with noise asks for denoise too, which is not offered here
    return complete(model, y_meas, operator.mask, labels, generator, temperature=temperature, sampler=sampler)


# ---------------------------------------------------------------------------------------------- contract


def build(cfg: Config, data_info) -> nn.Module:
    return AutoregressiveModel(cfg, data_info)


def train_step(model, batch, opts, step: int, accel, grad_clip: float = 0.0) -> dict:
    inner = accel.unwrap_model(model)
    if inner.num_classes and batch.y is None:
        raise ImagegenError("model.class_cond=true but the batches carry no labels")
    y = batch.y if inner.num_classes else None
    if y is not None and inner.null_label is not None:  # label dropout: the null class learns p(x)
        y = torch.where(torch.rand(y.shape, device=y.device) < inner.cfg.label_dropout,
                        torch.full_like(y, inner.null_label), y)
    nll_nats = model(batch.x, y)  # (B,)
    dims = batch.x[0].numel()
    loss = nll_nats.mean() / dims  # nats per sub-pixel, so lr and clipping do not depend on image size
    accel.backward(loss)
    optimizer_step(accel, opts["main"], model.parameters(), grad_clip)
    return {"loss": loss.detach(), "nll_nats": nll_nats.mean().detach(), "bpd": loss.detach() / math.log(2.0)}
