"""Image bytes in and out of the server: decode an upload with Pillow and check it (bytes, format, pixels,
mode, size) before any model sees it, and encode results as PNG / .npz.

Every check raises :class:`ImageRejected` with an HTTP status and a one-line message; nothing here looks at a
file path, so a request can only hand the server bytes, never make it open a file.
"""

from __future__ import annotations

import base64
import binascii
import io
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..data import DataInfo, save_image_array, to_float, to_uint8

FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")  # what Pillow decodes that a browser also produces
MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA")  # 8-bit modes; 16-bit, float and CMYK images are refused


class ImageRejected(Exception):
    """An upload the server will not use: ``status`` (400 bad, 413 too large) and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def b64decode(data: str, what: str, max_bytes: int) -> bytes:
    """A base64 string (or a ``data:image/...;base64,`` URL, as a browser's canvas gives) -> bytes."""
    if data.startswith("data:"):
        head, _, data = data.partition(",")
        if ";base64" not in head:
            raise ImageRejected(400, f"{what}: a data URL must be base64 encoded")
    if len(data) > (max_bytes * 4) // 3 + 8:  # refuse before decoding what cannot fit
        raise ImageRejected(413, f"{what} is larger than the server's limit of {max_bytes} bytes")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ImageRejected(400, f"{what} is not valid base64; send the file's bytes base64 encoded") from None
    if len(raw) > max_bytes:
        raise ImageRejected(413, f"{what} is {len(raw)} bytes, over the server's limit of {max_bytes}")
    if not raw:
        raise ImageRejected(400, f"{what} is empty")
    return raw


def decode(raw: bytes, what: str, info: DataInfo, max_pixels: int, resize: bool, channels: int | None = None):
    """Bytes -> uint8 (C, H, W) at the model's size. The size is read from the header and checked against
    ``max_pixels`` before any pixel is decoded (a small file can declare a huge image); then the whole file
    is decoded, so a truncated one is refused here and not half-used. ``resize``: centre-crop and resize to
    the model's size (as ``imagegen complete`` does); otherwise a different size is refused."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    channels = channels or info.channels
    try:
        im = Image.open(io.BytesIO(raw))
    except UnidentifiedImageError:
        raise ImageRejected(400, f"{what} is not an image file ({', '.join(FORMATS)})") from None
    except Image.DecompressionBombError:
        raise ImageRejected(413, f"{what} declares more pixels than the server accepts ({max_pixels})") from None
    except Exception as e:  # Pillow raises several types for a malformed header
        raise ImageRejected(400, f"{what} cannot be read: {_one_line(e)}") from None
    with im:
        if im.format not in FORMATS:
            raise ImageRejected(400, f"{what} is {im.format}; send one of {', '.join(FORMATS)}")
        w, h = im.size
        if w * h > max_pixels:
            raise ImageRejected(413, f"{what} is {w}x{h} = {w * h} pixels, over the server's limit of {max_pixels}")
        if im.mode not in MODES:
            raise ImageRejected(400, f"{what} has mode {im.mode}; send an 8-bit grey or RGB(A) image")
        if (w, h) != (info.size, info.size) and not resize:
            raise ImageRejected(400, f"{what} is {w}x{h} but this model takes {info.size}x{info.size} images; "
                                     "resize it, or send \"resize\": true to centre-crop and resize it on the server")
        try:
            im.load()
        except Exception as e:  # truncated data, a bad checksum, a broken palette, ...
            raise ImageRejected(400, f"{what} is truncated or corrupt: {_one_line(e)}") from None
        if im.mode in ("P", "PA"):
            im = im.convert("RGBA")
        if im.mode in ("RGBA", "LA"):  # transparency onto black, as the dataset loaders do
            rgba = im.convert("RGBA")
            im = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
        im = im.convert("L" if channels == 1 else "RGB")
        if (w, h) != (info.size, info.size):
            im = ImageOps.fit(im, (info.size, info.size), method=Image.Resampling.BICUBIC)
        arr = np.array(im, dtype=np.uint8)
    arr = arr[None] if channels == 1 else arr.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr))  # (C, H, W) uint8


def decode_image(data: str, what: str, info: DataInfo, max_bytes: int, max_pixels: int,
                 resize: bool) -> torch.Tensor:
    """A base64 image for the model -> (1, C, H, W) float in [-1, 1]."""
    u8 = decode(b64decode(data, what, max_bytes), what, info, max_pixels, resize)
    return to_float(u8.unsqueeze(0))


def decode_mask(data: str, info: DataInfo, max_bytes: int, max_pixels: int, resize: bool) -> torch.Tensor:
    """A base64 mask image -> (1, 1, H, W) float 0/1: white (>= 128) keeps a pixel, black asks to fill it
    (the convention of ``imagegen complete --mask``)."""
    u8 = decode(b64decode(data, "mask", max_bytes), "mask", info, max_pixels, resize, channels=1)
    return (u8.unsqueeze(0).float() >= 128).float()


def png_bytes(u8: torch.Tensor) -> bytes:
    """uint8 (C, H, W) -> PNG bytes (lossless, so a known pixel reads back exactly)."""
    from PIL import Image

    arr = u8.cpu().numpy()
    im = Image.fromarray(arr[0], "L") if arr.shape[0] == 1 else Image.fromarray(arr.transpose(1, 2, 0), "RGB")
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def data_url(u8: torch.Tensor) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(u8)).decode("ascii")


def grid_png(u8: torch.Tensor, nrow: int) -> bytes:
    """uint8 (N, C, H, W) -> one PNG grid (torchvision's make_grid, 1 px padding as the trainer's grids)."""
    from torchvision.utils import make_grid

    grid = make_grid(u8, nrow=max(1, nrow), padding=1, pad_value=0)
    return png_bytes(grid[: u8.shape[1]])


def npz_bytes(u8: torch.Tensor, labels: torch.Tensor | None) -> bytes:
    """The .npz layout ``imagegen sample --out x.npz`` writes and ``imagegen eval-folder`` reads."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "images.npz"
        save_image_array(path, u8, labels)
        return path.read_bytes()


def quantise(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> uint8, exactly as real images are quantised."""
    return to_uint8(x.detach().cpu())


def _one_line(e: Exception) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__
