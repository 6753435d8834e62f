"""Datasets -> uint8 image tensors (N, C, H, W) + labels, and batches as floats in [-1, 1].

Every dataset is decoded once and held as a uint8 tensor (on the GPU when it fits), so an epoch never
re-decodes files and the batch iterator is an index lookup. Folder datasets are cached on disk
(safetensors, keyed by the files' names, sizes and mtimes and the resize options).

Names: ``digits`` (scikit-learn's 8x8 digits, the embedded default), ``mnist``, ``fashion-mnist``,
``binarized-mnist`` (dynamically binarised: resampled every time a batch is drawn), ``cifar10`` and
``folder:PATH``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from safetensors import safe_open

from . import augment as augmentation  # as a module: its apply is looked up when called
from .cache import cache_dir  # noqa: F401  (re-exported: imagegen.data.cache_dir is where callers look)
from .checkpoint import atomic_save_tensors
from .config import MAX_IMAGE_SIZE, DataConfig, check_range
from .errors import ImagegenError
from .families.base import Batch  # defined below memory, which builds one (imagegen.data.Batch stays its name)
from .memory import check_data

DATASETS = ("digits", "mnist", "fashion-mnist", "binarized-mnist", "cifar10", "folder:PATH")
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


@dataclass(frozen=True)
class DataInfo:
    """What a family needs to know to build a model for a dataset."""

    channels: int
    size: int
    num_classes: int = 0  # 0: unlabelled
    bits: int = 8  # 8: 256 levels per sub-pixel; 1: binary {0, 1}
    name: str = ""
    class_names: tuple[str, ...] = ()
    channels_from: str = ""  # how the channel count was decided, where it was (an image folder without --channels)

    @property
    def num_dims(self) -> int:
        return self.channels * self.size * self.size

    def to_dict(self) -> dict:
        d = {"channels": self.channels, "size": self.size, "num_classes": self.num_classes,
             "bits": self.bits, "name": self.name, "class_names": list(self.class_names)}
        if self.channels_from:
            d["channels_from"] = self.channels_from
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DataInfo:
        return cls(channels=int(d["channels"]), size=int(d["size"]), num_classes=int(d.get("num_classes", 0)),
                   bits=int(d.get("bits", 8)), name=d.get("name", ""),
                   class_names=tuple(d.get("class_names", ())), channels_from=d.get("channels_from", ""))


@dataclass
class ImageDataset:
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor | None  # (N,) long
    info: DataInfo
    binarize: bool = False  # draw each pixel ~ Bernoulli(intensity) when a batch is made

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device) -> ImageDataset:
        labels = None if self.labels is None else self.labels.to(device)
        return ImageDataset(self.images.to(device), labels, self.info, self.binarize)

    def batch(self, idx: torch.Tensor, generator: torch.Generator | None = None, hflip: bool = False,
              augment: list[str] | None = None) -> Batch:
        """Gather images ``idx`` and turn them into floats in [-1, 1] on the dataset's device. ``augment``:
        ``data.augment`` (imagegen.augment), per image, applied before binarisation so the Bernoulli draws
        see the transformed intensities."""
        u8 = self.images[idx]
        if augment:
            x = augmentation.apply(to_float(u8), augment, generator)
            if self.binarize:
                x = to_float(((x + 1) * 127.5).round().to(torch.uint8), True, generator)
        else:
            x = to_float(u8, self.binarize, generator)
        if hflip:
            flip = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        y = None if self.labels is None else self.labels[idx]
        return Batch(x, y)

    def fixed_binarization(self, seed: int = 0) -> ImageDataset:
        """A binarised copy drawn once with ``seed``: the evaluation set for binarised-data likelihoods."""
        if not self.binarize:
            return self
        g = torch.Generator(device=self.images.device).manual_seed(seed)
        p = self.images.float() / 255.0
        bits = (torch.rand(p.shape, generator=g, device=p.device) < p).to(torch.uint8) * 255
        return ImageDataset(bits, self.labels, self.info, binarize=False)


def to_float(u8: torch.Tensor, binarize: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    p = u8.float() / 255.0
    if binarize:
        p = (torch.rand(p.shape, device=p.device, generator=generator) < p).float()
    return p * 2.0 - 1.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> uint8 exactly as real images are quantised (round half up, clamp)."""
    return ((x.clamp(-1, 1) + 1) * 127.5 + 0.5).floor().clamp(0, 255).to(torch.uint8)


# ---------------------------------------------------------------------------------------------- batches


class BatchSampler:
    """Shuffled batches of indices, reproducible from (seed, epoch) alone, so resuming needs only
    ``(epoch, position)``. With several processes every rank draws the same permutation and takes
    its own stride of it, so the ranks never see the same image in one step."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if n < batch_size * world:
            batch_size = max(1, n // world)
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.epoch, self.pos = 0, 0
        self._perm = None

    @property
    def batches_per_epoch(self) -> int:
        return self.n // (self.batch_size * self.world)

    def _permutation(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.n, generator=g)

    def next(self) -> torch.Tensor:
        if self.pos >= self.batches_per_epoch:
            self.epoch, self.pos = self.epoch + 1, 0
            self._perm = None
        if self._perm is None:
            self._perm = self._permutation()
        global_bs = self.batch_size * self.world
        chunk = self._perm[self.pos * global_bs:(self.pos + 1) * global_bs]
        self.pos += 1
        return chunk[self.rank::self.world]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, d: dict) -> None:
        self.epoch, self.pos, self._perm = int(d["epoch"]), int(d["pos"]), None


# ---------------------------------------------------------------------------------------------- loading


def data_root(cfg: DataConfig) -> Path | None:
    root = cfg.root or os.environ.get("IMAGEGEN_DATA")
    return Path(root).expanduser() if root else None


def load_dataset(cfg: DataConfig, split: str | None = None) -> ImageDataset:
    """The registry of datasets: ``cfg.name`` -> an ImageDataset of the requested split."""
    split = split or cfg.split
    name = cfg.name
    if name.startswith("folder:"):
        ds = load_folder(Path(name[len("folder:"):]).expanduser(), split, cfg.image_size, cfg.channels)
    elif name == "digits":
        ds = load_digits(split, cfg.image_size or 16)
    elif name in ("mnist", "fashion-mnist", "binarized-mnist"):
        ds = load_mnist_like(name, cfg, split)
    elif name == "cifar10":
        ds = load_cifar10(cfg, split)
    else:
        raise ImagegenError(f"unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}")
    if name == "digits":  # already drawn at image_size
        ds = _convert(ds, None, cfg.channels)
    elif not name.startswith("folder:"):
        ds = _convert(ds, cfg.image_size, cfg.channels)
    if cfg.limit is not None:
        check_range(cfg.limit, DataConfig.RANGES["limit"], "data.limit")  # configs made by replace() skip from_dict
        ds = ImageDataset(ds.images[: cfg.limit], None if ds.labels is None else ds.labels[: cfg.limit],
                          ds.info, ds.binarize)
    return ds


def _check_split(split: str, name: str) -> None:
    if split not in ("train", "test"):
        raise ImagegenError(f"dataset '{name}' has splits 'train' and 'test', not '{split}'")


def _resize_u8(images: torch.Tensor, size: int, what: str = "the data") -> torch.Tensor:
    """Area-preserving (antialiased bicubic) resize of a uint8 batch, back to uint8. Works in chunks of images,
    so the float intermediates stay small next to the uint8 result, whose size is checked first."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    if size > MAX_IMAGE_SIZE:  # configs made by replace() skip from_dict's range check
        raise ImagegenError(f"data.image_size={size} is above the largest the loaders resize to "
                            f"({MAX_IMAGE_SIZE}); pick a smaller --image-size")
    n, c, h, w = images.shape
    chunk = max(1, min(n, (64 * 1024**2) // (4 * c * max(size * size, h * w))))  # ~64 MiB of floats at a time
    check_data(n, c, size, what, extra_per_image=0, device=images.device)
    out = torch.empty(n, c, size, size, dtype=torch.uint8, device=images.device)
    for i in range(0, n, chunk):
        x = F.interpolate(images[i:i + chunk].float(), size=(size, size), mode="bicubic", antialias=True,
                          align_corners=False)
        out[i:i + chunk] = x.round().clamp(0, 255).to(torch.uint8)
    return out


def _convert(ds: ImageDataset, size: int | None, channels: int | None) -> ImageDataset:
    images = ds.images
    if channels is not None and channels != images.shape[1]:
        if channels == 3 and images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1).contiguous()
        elif channels == 1 and images.shape[1] == 3:  # ITU-R 601-2 luma, as PIL's convert("L")
            w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
        else:
            raise ImagegenError(f"data.channels must be 1 or 3, got {channels}")
    if size is not None:
        images = _resize_u8(images, size, f"the {ds.info.name} images")
    info = DataInfo(channels=images.shape[1], size=images.shape[-1], num_classes=ds.info.num_classes,
                    bits=ds.info.bits, name=ds.info.name, class_names=ds.info.class_names,
                    channels_from=ds.info.channels_from)
    return ImageDataset(images, ds.labels, info, ds.binarize)


def load_digits(split: str, size: int) -> ImageDataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, 17 grey levels); the last 297 are the test split."""
    from sklearn.datasets import load_digits as sk_load  # scikit-learn is slow to import: only when used

    _check_split(split, "digits")
    d = sk_load()
    images = torch.from_numpy(np.round(d.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(d.target.astype(np.int64))
    sl = slice(0, 1500) if split == "train" else slice(1500, None)
    images = _resize_u8(images[sl], size, f"the digits {split} split")
    info = DataInfo(channels=1, size=size, num_classes=10, name="digits",
                    class_names=tuple(str(i) for i in range(10)))
    return ImageDataset(images, labels[sl], info)


# --- MNIST family --------------------------------------------------------------------------------------

_MNIST_DIRS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "binarized-mnist": "MNIST"}
_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): big-endian header, magic 0x0000 08 NDIM, then uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ImagegenError(f"cannot read {path}: {e}; delete it and let it be fetched again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ImagegenError(f"{path} is not an IDX uint8 file (bad magic number); replace it with the original")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    count = int(np.prod(dims))
    if len(raw) - offset != count:
        raise ImagegenError(f"{path} is truncated or corrupt ({len(raw) - offset} bytes of data, expected "
                            f"{count}); replace it with the original")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _find_idx(raw_dir: Path, stem: str) -> Path | None:
    for candidate in (raw_dir / stem, raw_dir / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _torchvision_download(name: str, target: Path) -> None:
    """Fetch the dataset the way torchvision users expect (its mirrors and md5 checks)."""
    import torchvision  # slow to import: only when a download is needed

    cls = {"MNIST": torchvision.datasets.MNIST, "FashionMNIST": torchvision.datasets.FashionMNIST}[name]
    for train in (True, False):
        cls(root=str(target), train=train, download=True)


def load_mnist_like(name: str, cfg: DataConfig, split: str) -> ImageDataset:
    _check_split(split, name)
    folder = _MNIST_DIRS[name]
    img_stem, lbl_stem = _MNIST_FILES[split]
    roots = [r for r in (data_root(cfg), cache_dir() / "datasets") if r is not None]
    found = None
    for r in roots:
        raw = r / folder / "raw"
        img, lbl = _find_idx(raw, img_stem), _find_idx(raw, lbl_stem)
        if img and lbl:
            found = (img, lbl)
            break
    if found is None and cfg.download:
        target = cache_dir() / "datasets"
        try:
            _torchvision_download(folder, target)
        except Exception as e:  # network errors come in many types; all mean "not available"
            warnings.warn(f"download of {name} failed: {_one_line(e)}", stacklevel=2)
        raw = target / folder / "raw"
        img, lbl = _find_idx(raw, img_stem), _find_idx(raw, lbl_stem)
        if img and lbl:
            found = (img, lbl)
    if found is None:
        expected = ", ".join(str(r / folder / "raw" / f"{img_stem}[.gz]") for r in roots)
        raise ImagegenError(
            f"{name} ({split}) not found: expected {expected} (and the labels beside it); point --data-root "
            f"(or IMAGEGEN_DATA) at a folder holding {folder}/raw/, or run once with a network to download")
    images = torch.from_numpy(read_idx(found[0]).copy()).unsqueeze(1)
    labels = torch.from_numpy(read_idx(found[1]).astype(np.int64))
    if images.shape[0] != labels.shape[0]:
        raise ImagegenError(f"{found[0]} holds {images.shape[0]} images but {found[1]} holds "
                            f"{labels.shape[0]} labels; the files do not belong together")
    class_names = (tuple(str(i) for i in range(10)) if folder == "MNIST" else
                   ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                    "Bag", "Ankle boot"))
    binary = name == "binarized-mnist"
    info = DataInfo(channels=1, size=28, num_classes=10, bits=1 if binary else 8, name=name,
                    class_names=class_names)
    return ImageDataset(images, labels, info, binarize=binary)


# --- CIFAR-10 ------------------------------------------------------------------------------------------

_CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class _SafeUnpickler(pickle.Unpickler):
    """CIFAR's python batches are pickles; allow only what a batch holds (numpy arrays, lists, dicts)."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = _SafeUnpickler(f, encoding="bytes").load()
        data = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
    except Exception as e:
        raise ImagegenError(f"{path} is not a readable CIFAR-10 batch ({e}); replace it with the original") \
            from None
    return data, labels


def load_cifar10(cfg: DataConfig, split: str) -> ImageDataset:
    _check_split(split, "cifar10")
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    roots = [r for r in (data_root(cfg), cache_dir() / "datasets") if r is not None]

    def locate():
        for r in roots:
            d = r / "cifar-10-batches-py"
            if all((d / n).is_file() for n in names):
                return d
        return None

    found = locate()
    if found is None and cfg.download:
        import torchvision  # slow to import: only when a download is needed

        try:
            torchvision.datasets.CIFAR10(root=str(cache_dir() / "datasets"), train=True, download=True)
        except Exception as e:
            warnings.warn(f"download of cifar10 failed: {_one_line(e)}", stacklevel=2)
        found = locate()
    if found is None:
        expected = ", ".join(str(r / "cifar-10-batches-py" / names[0]) for r in roots)
        raise ImagegenError(
            f"cifar10 ({split}) not found: expected {expected}; point --data-root (or IMAGEGEN_DATA) at the "
            f"folder holding cifar-10-batches-py/, run once with a network to download, or use an image "
            f"folder with --data folder:PATH")
    parts = [_read_cifar_batch(found / n) for n in names]
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    info = DataInfo(channels=3, size=32, num_classes=10, name="cifar10", class_names=_CIFAR_CLASSES)
    return ImageDataset(images, labels, info)


# --- image folders -------------------------------------------------------------------------------------


def _list_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _one_line(e: Exception) -> str:
    """A multi-line error (torchvision lists every mirror it tried) as one line: what failed, and the last cause."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    return lines[0] if len(lines) == 1 else f"{lines[0].rstrip(':')}: {lines[-1]}"


_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L")


def _decode(path: Path, size: int, channels: int | None) -> np.ndarray:
    """Open any PIL mode, flatten transparency onto black, resize the short side and centre-crop.
    ``channels=None``: as stored, (1, S, S) for a greyscale mode and (3, S, S) for anything else."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if channels is None:
            channels = 1 if im.mode in _GREY_MODES else 3
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grey: scale to 8 bits
            arr = np.asarray(im, dtype=np.float64)
            peak = 65535.0 if arr.max() > 255 else 255.0
            im = Image.fromarray(np.clip(arr * (255.0 / peak), 0, 255).astype(np.uint8), "L")
        if im.mode == "P":
            im = im.convert("RGBA")
        if im.mode in ("RGBA", "LA", "PA"):
            rgba = im.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
            im = Image.alpha_composite(bg, rgba)
        im = im.convert("L" if channels == 1 else "RGB")
        im = ImageOps.fit(im, (size, size), method=Image.Resampling.BICUBIC)
        arr = np.array(im, dtype=np.uint8)  # a writable copy
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def _pick_channels(decoded: list[np.ndarray]) -> tuple[int, str]:
    """Grey or colour for a folder read without --channels, from what the images hold: grey when every image
    is stored greyscale or, stored as RGB (as many tools save JPEGs), has R = G = B at every pixel. Returns
    (channels, why). Decoding each image as stored and comparing the planes costs one pass over the pixels;
    a grey image read as RGB and converted back with PIL's ITU-R 601-2 luma gives the same bytes, since the
    weights sum to 1."""
    n = len(decoded)
    stored_rgb = [a for a in decoded if a.shape[0] == 3]
    if not stored_rgb:
        return 1, f"grey: all {n} images are stored greyscale"
    colour = sum(1 for a in stored_rgb if not (np.array_equal(a[0], a[1]) and np.array_equal(a[0], a[2])))
    if colour == 0:
        return 1, (f"grey: {len(stored_rgb)} of the {n} images are stored as RGB but every one has R = G = B "
                   f"(pass --channels 3 to keep 3 channels)")
    return 3, f"colour: {colour} of the {n} images have pixels with R, G and B not all equal"


def load_folder(path: Path, split: str, size: int | None, channels: int | None) -> ImageDataset:
    if not path.is_dir():
        raise ImagegenError(f"image folder {path} does not exist; check the path")
    if (path / split).is_dir():  # a folder with train/ and test/ sub-folders: pick the split
        path = path / split
    files = _list_images(path)
    if not files:
        raise ImagegenError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found under {path}")
    rel_parts = [f.relative_to(path).parts for f in files]
    labelled = all(len(p) >= 2 for p in rel_parts)
    class_names = tuple(sorted({p[0] for p in rel_parts})) if labelled else ()
    if size is None:
        try:
            with Image.open(files[0]) as im:
                size = min(im.size)
        except Exception:
            size = 32
        if size > MAX_IMAGE_SIZE:
            raise ImagegenError(f"the images under {path} are {size} pixels on the short side, more than the "
                                f"loaders resize to ({MAX_IMAGE_SIZE}); pass --image-size (e.g. 256)")
    if size > MAX_IMAGE_SIZE:  # configs made by replace() skip from_dict's range check
        raise ImagegenError(f"data.image_size={size} is above the largest the loaders resize to "
                            f"({MAX_IMAGE_SIZE}); pick a smaller --image-size")
    if channels not in (None, 1, 3):
        raise ImagegenError(f"data.channels must be 1 or 3, got {channels}")
    # decoded arrays and their stacked copy; undecided channels: as stored, up to 3
    check_data(len(files), channels or 3, size, f"the {len(files)} images under {path}",
               extra_per_image=(channels or 3) * size * size)

    stat = hashlib.sha256()
    for f in files:
        s = f.stat()
        stat.update(f"{f}|{s.st_size}|{s.st_mtime_ns}\n".encode())
    key = hashlib.sha256(f"{path.resolve()}|{size}|{channels or 'auto'}|{stat.hexdigest()}|v2".encode()
                         ).hexdigest()[:24]
    cache_file = cache_dir() / "folders" / f"{key}.safetensors"
    if cache_file.is_file():
        try:
            with safe_open(str(cache_file), framework="pt") as f:
                meta = f.metadata() or {}
                t = {k: f.get_tensor(k) for k in f.keys()}
            labels = t.get("labels")
            why = meta.get("channels_from", "")
            if why:
                print(f"{path}: {why}", file=sys.stderr)
            info = DataInfo(channels=int(t["images"].shape[1]), size=size, num_classes=len(class_names),
                            name=f"folder:{path}", class_names=class_names, channels_from=why)
            return ImageDataset(t["images"], labels if labelled else None, info)
        except Exception:
            cache_file.unlink(missing_ok=True)  # a stale or torn cache is rebuilt, never trusted

    def work(f: Path):
        try:
            return _decode(f, size, channels)
        except Exception as e:  # PIL raises many types for broken files
            return e

    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        decoded = list(pool.map(work, files))
    keep = [i for i, d in enumerate(decoded) if not isinstance(d, Exception)]
    skipped = [files[i] for i, d in enumerate(decoded) if isinstance(d, Exception)]
    if skipped:
        shown = ", ".join(str(s.relative_to(path)) for s in skipped[:10])
        more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        warnings.warn(f"skipped {len(skipped)} unreadable image file(s) under {path}: {shown}{more}",
                      stacklevel=2)
    if not keep:
        raise ImagegenError(f"none of the {len(files)} image files under {path} could be read")
    arrays = [decoded[i] for i in keep]
    del decoded
    why = ""
    if channels is None:  # decide from the content of every image read, and say so
        channels, why = _pick_channels(arrays)
        print(f"{path}: {why}", file=sys.stderr)
        # grey: the first plane (= the others); colour: a greyscale-stored image repeated, as convert("RGB")
        arrays = [a[:1] if channels == 1 else (np.repeat(a, 3, axis=0) if a.shape[0] == 1 else a) for a in arrays]
    images = torch.from_numpy(np.stack(arrays))
    del arrays
    labels = None
    if labelled:
        index = {c: i for i, c in enumerate(class_names)}
        labels = torch.tensor([index[rel_parts[i][0]] for i in keep], dtype=torch.long)
    tensors = {"images": images}
    if labels is not None:
        tensors["labels"] = labels
    try:
        atomic_save_tensors(tensors, cache_file, metadata={"channels_from": why} if why else None)
    except ImagegenError as e:  # a full disk costs the cache, not the run
        warnings.warn(f"not caching the decoded images: {e}", stacklevel=2)
    info = DataInfo(channels=channels, size=size, num_classes=len(class_names), name=f"folder:{path}",
                    class_names=class_names, channels_from=why)
    return ImageDataset(images, labels, info)


# --- image arrays (.npz / .npy) ------------------------------------------------------------------------

ARRAY_EXTENSIONS = (".npz", ".npy")


def _images_nchw(a: np.ndarray, path: Path) -> np.ndarray:
    if a.dtype != np.uint8:
        raise ImagegenError(f"{path}: images must be uint8 (0-255), got {a.dtype}; quantise them first, e.g. "
                            f"((x + 1) * 127.5 + 0.5).floor().clip(0, 255).astype(np.uint8) for x in [-1, 1]")
    if a.ndim == 3:  # (N, H, W) grey
        return a[:, None]
    if a.ndim == 4 and a.shape[-1] in (1, 3):  # (N, H, W, C), as most sample files store them
        return a.transpose(0, 3, 1, 2)
    if a.ndim == 4 and a.shape[1] in (1, 3):  # (N, C, H, W)
        return a
    raise ImagegenError(f"{path}: images of shape {tuple(a.shape)} are not (N, H, W), (N, H, W, C) or "
                        f"(N, C, H, W) with C = 1 or 3")


def load_image_array(path: str | Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images stored as a NumPy array: uint8 (N, H, W), (N, H, W, C) or (N, C, H, W), C = 1 or 3. In an
    ``.npz`` the images are under ``x`` (else ``arr_0``, or the file's only array) and optional integer
    labels under ``y``, ``labels`` or ``arr_1`` (guided-diffusion's sample files: ``arr_0`` images NHWC,
    ``arr_1`` labels). Read with ``allow_pickle=False``: loading a file never runs code from it.
    Returns (uint8 (N, C, H, W), labels (N,) long or None)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ImagegenError(f"image array {path} does not exist; check the path")
    try:
        with open(path, "rb") as fh:  # closed on every path, a torn file included
            loaded = np.load(fh, allow_pickle=False)  # an array (.npy) or a lazy NpzFile (.npz)
            arrays = {"x": loaded} if isinstance(loaded, np.ndarray) else {k: loaded[k] for k in loaded.files}
    except Exception as e:  # a torn zip, a pickled object array, not NumPy at all
        raise ImagegenError(f"cannot read {path} as a NumPy .npz/.npy array of uint8 images ({e}); "
                            f"save it with numpy.savez(path, x=images)") from None
    key = next((k for k in ("x", "arr_0") if k in arrays), None)
    if key is None and len(arrays) == 1:
        key = next(iter(arrays))
    if key is None:
        raise ImagegenError(f"{path} holds arrays {', '.join(sorted(arrays))} but none is named 'x' or 'arr_0'; "
                            f"save the images under x (and labels under y)")
    images = torch.from_numpy(np.ascontiguousarray(_images_nchw(arrays[key], path)))
    if images.shape[0] == 0:
        raise ImagegenError(f"{path} holds no images (its array '{key}' has shape {tuple(arrays[key].shape)})")
    label_key = next((k for k in ("y", "labels", "arr_1") if k in arrays and k != key), None)
    labels = None
    if label_key is not None:
        y = arrays[label_key]
        if y.ndim != 1 or y.shape[0] != images.shape[0] or not np.issubdtype(y.dtype, np.integer):
            raise ImagegenError(f"{path}: labels '{label_key}' must be {images.shape[0]} integers, one per image, "
                                f"got {y.dtype} of shape {tuple(y.shape)}")
        labels = torch.from_numpy(y.astype(np.int64))
    return images, labels


def save_image_array(path: str | Path, images: torch.Tensor, labels: torch.Tensor | None = None) -> None:
    """Write uint8 (N, C, H, W) images as ``x`` ((N, H, W) grey, (N, H, W, 3) colour) and labels as ``y``:
    the layout ``load_image_array`` reads and that ``imagegen eval-folder`` scores."""
    x = images.cpu().numpy()
    x = x[:, 0] if x.shape[1] == 1 else x.transpose(0, 2, 3, 1)
    arrays = {"x": np.ascontiguousarray(x)}
    if labels is not None:
        arrays["y"] = labels.cpu().numpy().astype(np.int64)
    path = Path(path)
    npy = path.suffix.lower() == ".npy"
    if npy and labels is not None:
        raise ImagegenError(f"{path}: a .npy file holds one array; write labelled samples to a .npz")
    with open(path, "wb") as fh:  # a file object: numpy keeps the name as given (no added suffix)
        np.save(fh, arrays["x"]) if npy else np.savez_compressed(fh, **arrays)


# ---------------------------------------------------------------------------------------------- single images


def load_image(path: str | Path, info: DataInfo) -> torch.Tensor:
    """One image file -> (1, C, H, W) float in [-1, 1], shaped like the model's data."""
    p = Path(path)
    if not p.is_file():
        raise ImagegenError(f"image {p} does not exist")
    try:
        with Image.open(p) as im:
            w, h = im.size
        arr = _decode(p, info.size, info.channels)
    except Exception as e:
        raise ImagegenError(f"cannot read image {p}: {e}") from None
    if (w, h) != (info.size, info.size):  # the model's size is fixed: say what we did to the user's image
        crop = " and centre-cropped" if w != h else ""
        warnings.warn(f"{p} is {w}x{h}; resized{crop} to the model's {info.size}x{info.size}", stacklevel=2)
    return to_float(torch.from_numpy(arr).unsqueeze(0))


def load_mask(path: str | Path, info: DataInfo) -> torch.Tensor:
    """A mask image -> (1, 1, H, W) float in {0, 1}: white (>= 128) means 'keep this pixel'."""
    p = Path(path)
    if not p.is_file():
        raise ImagegenError(f"mask {p} does not exist")
    try:
        arr = _decode(p, info.size, 1)
    except Exception as e:
        raise ImagegenError(f"cannot read mask {p}: {e}") from None
    return (torch.from_numpy(arr).unsqueeze(0).float() >= 128).float()


KEEPS = ("top-half", "left-half", "bottom-half", "right-half")


def make_mask(keep: str, info: DataInfo) -> torch.Tensor:
    """A (1, 1, H, W) mask with 1 where pixels are kept. ``top-half`` is a raster-order prefix (the case
    autoregressive models complete exactly); the others need a model that can look at every pixel."""
    s = info.size
    mask = torch.zeros(1, 1, s, s)
    if keep == "top-half":
        mask[:, :, : s // 2] = 1
    elif keep == "left-half":
        mask[:, :, :, : s // 2] = 1
    elif keep == "bottom-half":
        mask[:, :, s // 2:] = 1
    elif keep == "right-half":
        mask[:, :, :, s // 2:] = 1
    else:
        raise ImagegenError(f"--keep must be one of {', '.join(KEEPS)}, got '{keep}'")
    return mask


__all__ = ["DATASETS", "Batch", "BatchSampler", "DataInfo", "ImageDataset", "load_dataset", "load_image",
           "load_mask", "make_mask", "to_float", "to_uint8"]
