"""PixelSNAIL (Chen et al. 2018, "PixelSNAIL: An Improved Autoregressive Generative Model"): the network of
``model.arch=pixelsnail`` in the autoregressive family (``imagegen.families.pixelcnn`` owns the likelihoods,
the samplers and the contract; this module only adds the causal network and its incremental evaluation).

Layout (paper fig. 5; the official code's ``h6_noup`` spec, neocxi/pixelsnail-public):

* a first masked convolution of type A (the family's ``causal_kxk``: rows above, and the own row left of
  the pixel), plus a class-conditional bias;
* ``blocks`` blocks, each ``layers`` gated residual layers on causal (down-right-shifted) convolutions,
  then a causal attention layer whose keys and values see every earlier pixel, mixed back into the
  residual stream by a 1x1 gated residual layer;
* the family's output head of two masked 1x1 layers, with ELUs instead of its ReLUs (the official code's
  output is ``nin(elu(ul))``; an ELU has no dead units, so no channel group's output can go flat).

Gated residual layer (PixelCNN++, Salimans et al. 2017, sec. 2.6 and its ``gated_resnet``):
``h + a * sigmoid(b)`` with ``[a, b] = conv2(elu(conv1(elu(h)) [+ 1x1(elu(aux))])) [+ V^T y]``. The
convolutions are PixelCNN++'s down-right-shifted ones, a (k//2+1) x (k//2+1) kernel whose bottom-right tap is
the pixel itself (2x2 for ``kernel_size=3``): they see up and to the left only; the attention layers
reach everything else (the paper's point: the receptive field is the whole past, no blind spot).

Causal attention. Keys and values are 1x1 projections of [image, features, position] and queries of
[features, position] (the official code concatenates the same inputs; the "background" position channels
are (r - H/2)/H and (c - W/2)/W). Keys and values are shifted one step along the raster (the first slot
holds a zero key and a zero value), so an inclusive causal mask over the shifted sequence is a strict one
over pixels: pixel p attends to the zero slot and to pixels 0..p-1, never to itself. The image x may then
enter the keys and values unmasked, and the first pixel's attention output is exactly zero instead of a
softmax over nothing.

Channel order inside a pixel (``bernoulli``/``softmax`` on colour data: C channel groups, as in the rest of
the family). Keys and values come from earlier pixels only, which every channel of the current pixel may
see. The query is not: group g of the features at pixel p already depends on channels < g of p, so there is
one query per channel group, projected through a mask-B 1x1 (query g reads feature groups <= g), each
attending over the shared keys and values, and attention output g feeds feature group g only (mask B again).
The position channels carry no data and are visible to every group. With one group (grey, or the logistic
mixture) this is plain single-head attention.

Incremental evaluation (``sampler="cached"``): the convolutions use the family's channels-last position
buffers; each attention layer keeps a KV cache (keys and values of every finished pixel, one slot each) and
evaluates one query row per new pixel: O(p) work for pixel p, not a full forward pass. A pixel's key and
value are written when the next pixel starts (only then are all its channels known).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .pixelcnn import MaskedConv2d, _Head, _pad_buffer, causal_kxk, conv1x1, group_ids


def positions(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """The official code's "background": row and column in [-0.5, 0.5), (1, 2, H, W)."""
    r = (torch.arange(height, device=like.device, dtype=like.dtype) - height / 2) / height
    c = (torch.arange(width, device=like.device, dtype=like.dtype) - width / 2) / width
    return torch.stack([r[:, None].expand(height, width), c[None, :].expand(height, width)])[None]


class SnailHead(_Head):
    """ELU -> 1x1 -> ELU -> 1x1, both masked B (the family's head with the official code's ELU)."""

    def forward(self, h):
        return self.conv2(F.elu(self.conv1(F.elu(h))))

    def at(self, h, w):  # (n, Cin) -> (n, Cout)
        return torch.addmm(self.conv2.bias, F.elu(torch.addmm(self.conv1.bias, F.elu(h), w[0])), w[1])


class GatedResidual(nn.Module):
    """PixelCNN++'s gated ResNet layer on masked (type B, channel-grouped) convolutions of kernel
    ``kernel`` anchored at its bottom-right tap; ``aux_ch`` > 0 adds a 1x1 input from another tensor (the
    attention output)."""

    def __init__(self, ch: int, kernel: int, groups: int, num_classes: int, aux_ch: int = 0):
        super().__init__()
        g, g2 = group_ids(ch, groups), group_ids(2 * ch, groups, repeats=2)
        anchor = (kernel - 1, kernel - 1)
        self.conv1 = MaskedConv2d(ch, ch, (kernel, kernel), anchor, "B", g, g)
        self.conv2 = MaskedConv2d(ch, 2 * ch, (kernel, kernel), anchor, "B", g, g2)
        self.aux = conv1x1(aux_ch, ch, "B", group_ids(aux_ch, groups), g) if aux_ch else None
        self.cond = nn.Embedding(num_classes, 2 * ch) if num_classes else None
        self.spatial = kernel > 1

    def forward(self, h, y, aux=None):  # (B, ch, H, W) -> (B, ch, H, W)
        c = self.conv1(F.elu(h))
        if self.aux is not None:
            c = c + self.aux(F.elu(aux))
        c = self.conv2(F.elu(c))
        if self.cond is not None:
            c = c + self.cond(y)[:, :, None, None]
        a, b = c.chunk(2, dim=1)
        return h + a * torch.sigmoid(b)

    # --- incremental evaluation ---
    def init_cache(self, n, height, width, pad, like, y) -> dict:
        st = {"w1": self.conv1.flat_weight(), "w2": self.conv2.flat_weight(),
              "w_aux": None if self.aux is None else self.aux.flat_weight(),
              "cond": None if self.cond is None else self.cond(y)}
        if self.spatial:
            st["buf1"] = _pad_buffer(n, self.conv1.in_channels, height, width, pad, like)
            st["buf2"] = _pad_buffer(n, self.conv2.in_channels, height, width, pad, like)
        return st

    def at(self, st: dict, pad: int, i: int, j: int, h, aux=None):  # (n, ch) -> (n, ch)
        a_in = F.elu(h)
        if self.spatial:
            st["buf1"][:, i + pad, j + pad] = a_in
            c = self.conv1.at(st["buf1"], pad, i, j, st["w1"])
        else:
            c = torch.addmm(self.conv1.bias, a_in, st["w1"])
        if self.aux is not None:
            c = c + torch.addmm(self.aux.bias, F.elu(aux), st["w_aux"])
        c_in = F.elu(c)
        if self.spatial:
            st["buf2"][:, i + pad, j + pad] = c_in
            c = self.conv2.at(st["buf2"], pad, i, j, st["w2"])
        else:
            c = torch.addmm(self.conv2.bias, c_in, st["w2"])
        if st["cond"] is not None:
            c = c + st["cond"]
        a, b = c.chunk(2, dim=-1)
        return h + a * torch.sigmoid(b)


class CausalAttention(nn.Module):
    """Attention of every pixel over all strictly earlier pixels (see the module docstring), one query per
    channel group. Returns (B, groups * value_ch, H, W), group g in the g-th block of value_ch channels."""

    def __init__(self, ch: int, img_ch: int, key_ch: int, value_ch: int, groups: int):
        super().__init__()
        self.groups, self.key_ch, self.value_ch = groups, key_ch, value_ch
        kv_in = img_ch + ch + 2
        self.key = conv1x1(kv_in, key_ch)  # unmasked: a key is only ever read by later pixels
        self.value = conv1x1(kv_in, value_ch)
        q_groups = torch.cat([group_ids(ch, groups), torch.zeros(2, dtype=torch.long)])  # position: group 0
        self.query = conv1x1(ch + 2, groups * key_ch, "B", q_groups, group_ids(groups * key_ch, groups))

    def forward(self, h, x, pos):  # h (B, ch, H, W), x (B, C, H, W), pos (1, 2, H, W)
        b, _, height, width = h.shape
        n = height * width
        pos = pos.expand(b, -1, -1, -1)
        kv_in = torch.cat([x.to(h.dtype), h, pos], 1)
        k = self.key(kv_in).flatten(2).transpose(1, 2)  # (B, N, dk)
        v = self.value(kv_in).flatten(2).transpose(1, 2)  # (B, N, dv)
        # shift one step along the raster: slot s holds pixel s-1, slot 0 a zero key and value
        k = F.pad(k, (0, 0, 1, 0))[:, :n, None].transpose(1, 2)  # (B, 1, N, dk)
        v = F.pad(v, (0, 0, 1, 0))[:, :n, None].transpose(1, 2)
        q = self.query(torch.cat([h, pos], 1)).view(b, self.groups, self.key_ch, n).transpose(2, 3)  # (B, G, N, dk)
        g = self.groups
        if g > 1:  # every query group reads the same keys and values (contiguous: fused kernels want real heads)
            k, v = k.expand(b, g, n, self.key_ch).contiguous(), v.expand(b, g, n, self.value_ch).contiguous()
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, G, N, dv)
        return out.transpose(2, 3).reshape(b, g * self.value_ch, height, width)

    # --- incremental evaluation: a KV cache, one slot per finished pixel ---
    def init_cache(self, n: int, height: int, width: int, ch: int, like: torch.Tensor) -> dict:
        return {"k": like.new_zeros(n, height * width, self.key_ch),  # slot 0 stays zero
                "v": like.new_zeros(n, height * width, self.value_ch),
                "feat": like.new_zeros(n, height * width, ch),  # the layer's input h, per pixel
                "wk": self.key.flat_weight(), "wv": self.value.flat_weight(), "wq": self.query.flat_weight()}

    def write_slot(self, st: dict, slot: int, x_pix: torch.Tensor, pos_pix: torch.Tensor) -> None:
        """Key and value of pixel ``slot - 1`` (finished: x_pix (n, C) holds all its channels) into ``slot``."""
        kv_in = torch.cat([x_pix, st["feat"][:, slot - 1], pos_pix.expand(x_pix.shape[0], -1)], 1)
        st["k"][:, slot] = torch.addmm(self.key.bias, kv_in, st["wk"])
        st["v"][:, slot] = torch.addmm(self.value.bias, kv_in, st["wv"])

    def at(self, st: dict, p: int, h: torch.Tensor, pos_pix: torch.Tensor) -> torch.Tensor:
        """One query row: pixel p (raster index) over slots 0..p, (n, ch) -> (n, groups * dv)."""
        st["feat"][:, p] = h
        n = h.shape[0]
        q = torch.addmm(self.query.bias, torch.cat([h, pos_pix.expand(n, -1)], 1), st["wq"])
        q = q.view(n, self.groups, self.key_ch)
        scores = torch.einsum("ngd,nsd->ngs", q, st["k"][:, :p + 1]) / math.sqrt(self.key_ch)
        out = torch.einsum("ngs,nse->nge", torch.softmax(scores, -1), st["v"][:, :p + 1])
        return out.reshape(n, self.groups * self.value_ch)


class SnailBlock(nn.Module):
    def __init__(self, ch: int, img_ch: int, kernel: int, layers: int, key_ch: int, value_ch: int, groups: int,
                 num_classes: int):
        super().__init__()
        self.residual = nn.ModuleList(GatedResidual(ch, kernel, groups, num_classes) for _ in range(layers))
        self.attention = CausalAttention(ch, img_ch, key_ch, value_ch, groups)
        self.mix = GatedResidual(ch, 1, groups, num_classes, aux_ch=groups * value_ch)

    def forward(self, h, x, y, pos):
        for layer in self.residual:
            h = layer(h, y)
        return self.mix(h, y, self.attention(h, x, pos))


class PixelSNAIL(nn.Module):
    """PixelSNAIL with the family's constructor signature (``pixelcnn.AutoregressiveModel`` builds it)."""

    def __init__(self, cfg, channels: int, out_ch: int, groups: int, out_groups: torch.Tensor, num_classes: int):
        super().__init__()
        h = cfg.hidden_channels
        self.first = causal_kxk(channels, h, cfg.first_kernel_size, "A", group_ids(channels, groups),
                                group_ids(h, groups))
        self.first_cond = nn.Embedding(num_classes, h) if num_classes else None
        kernel = cfg.kernel_size // 2 + 1  # down-right-shifted: 2x2 for kernel_size 3 (PixelCNN++)
        self.blocks = nn.ModuleList(
            SnailBlock(h, channels, kernel, cfg.layers, cfg.key_channels, cfg.value_channels, groups, num_classes)
            for _ in range(cfg.blocks))
        self.head = SnailHead(h, cfg.head_channels, out_ch, groups, out_groups)
        self.pad = max(cfg.first_kernel_size, cfg.kernel_size) // 2

    def forward(self, x, y=None):  # (B, C, H, W) -> (B, P, H, W)
        h = self.first(x)
        if self.first_cond is not None:
            h = h + self.first_cond(y)[:, :, None, None]
        pos = positions(x.shape[2], x.shape[3], h)
        for block in self.blocks:
            h = block(h, x, y, pos)
        return self.head(h)

    # --- incremental evaluation ---
    def init_cache(self, x_buf: torch.Tensor, y, height: int, width: int) -> dict:
        n, p, ch = x_buf.shape[0], self.pad, self.first.out_channels
        return {
            "x": x_buf, "width": width, "kv_slots": 1,  # slots 0..kv_slots-1 of every KV cache are final
            "pos": positions(height, width, x_buf)[0].flatten(1).t().contiguous(),  # (H*W, 2)
            "w_first": self.first.flat_weight(),
            "c_first": None if self.first_cond is None else self.first_cond(y),
            "res": [[lay.init_cache(n, height, width, p, x_buf, y) for lay in b.residual] for b in self.blocks],
            "attn": [b.attention.init_cache(n, height, width, ch, x_buf) for b in self.blocks],
            "mix": [b.mix.init_cache(n, height, width, p, x_buf, y) for b in self.blocks],
            "w_head": self.head.flat_weights(),
        }

    def at(self, cache: dict, i: int, j: int) -> torch.Tensor:
        """Every layer at pixel (i, j) -> (n, P). May be called several times for one pixel (one call per
        channel group); pixel (i, j)'s key and value are written at the first call for the next pixel."""
        p, width = self.pad, cache["width"]
        idx = i * width + j
        x, pos = cache["x"], cache["pos"]
        while cache["kv_slots"] <= idx:  # the previous pixel is finished: fill its KV slot in every layer
            s = cache["kv_slots"]
            r, c = divmod(s - 1, width)
            for block, st in zip(self.blocks, cache["attn"]):
                block.attention.write_slot(st, s, x[:, r + p, c + p], pos[s - 1:s])
            cache["kv_slots"] = s + 1
        h = self.first.at(x, p, i, j, cache["w_first"])
        if cache["c_first"] is not None:
            h = h + cache["c_first"]
        for b, res, att, mix in zip(self.blocks, cache["res"], cache["attn"], cache["mix"]):
            for lay, st in zip(b.residual, res):
                h = lay.at(st, p, i, j, h)
            a = b.attention.at(att, idx, h, pos[idx:idx + 1])
            h = b.mix.at(mix, p, i, j, h, a)
        return self.head.at(h, cache["w_head"])

    def row_done(self, cache: dict, i: int, width: int) -> None:
        pass  # every layer is evaluated pixel by pixel
