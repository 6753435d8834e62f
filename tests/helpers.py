"""Writers of tiny datasets in the real on-disk formats (IDX .gz, CIFAR pickle batches, image folders)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> None:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def make_mnist(root: Path, folder: str = "MNIST", n_train: int = 64, n_test: int = 32, gz: bool = True,
               seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for split, n, stem in (("train", n_train, "train"), ("test", n_test, "t10k")):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=(n,), dtype=np.uint8)
        write_idx(root / folder / "raw" / f"{stem}-images-idx3-ubyte", images, gz)
        write_idx(root / folder / "raw" / f"{stem}-labels-idx1-ubyte", labels, gz)
        out[split] = (images, labels)
    return out


def make_cifar(root: Path, n_per_batch: int = 8, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n_per_batch, 3 * 32 * 32), dtype=np.uint8)
        labels = rng.integers(0, 10, size=(n_per_batch,)).tolist()
        with open(d / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                         b"filenames": [b"x.png"] * n_per_batch}, f, protocol=2)
        out[name] = (data.reshape(-1, 3, 32, 32), labels)
    return out


def make_folder(root: Path, classes=("cat", "dog"), per_class: int = 3, size: int = 20, mode: str = "RGB",
                seed: int = 0) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    files = []
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, size=(size, size + 4, 3), dtype=np.uint8)
            im = Image.fromarray(arr, "RGB")
            if mode != "RGB":
                im = im.convert(mode)
            p = root / c / f"{i}.png"
            im.save(p)
            files.append(p)
    return files


def run_cli(argv, capsys) -> tuple[int, str, str]:
    """Run ``imagegen ARGV`` in-process; return (exit code, stdout, stderr)."""
    from imagegen.cli import main

    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def tiny_feature_net(delay_s: float = 0.0, name: str = "tiny-faults"):
    """A seeded random feature net (avg-pool to 4x4, random projection, ReLU) standing in for Inception, which
    is far too slow for a unit test; ``delay_s`` per batch leaves a window to kill a process in."""
    import time

    import torch

    from imagegen.metrics.fid import FeatureNet

    class TinyFeatures(FeatureNet):
        sha256, dim, resizer = "tiny-faults-sha", 16, "avg-pool 4x4"

        def __init__(self):
            self.name = name
            self.w = torch.randn(48, self.dim, generator=torch.Generator().manual_seed(0)) / 7

        def _forward(self, u8):
            time.sleep(delay_s)
            x = u8.float() / 127.5 - 1
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            return torch.relu(torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1) @ self.w)

    return TinyFeatures()


def subprocess_env(**extra: str) -> dict:
    """The environment for an ``imagegen`` child process: this checkout's sources first on the path and this
    process's torch thread count (bit-identical results across processes need the same reductions)."""
    import os

    import torch

    import imagegen

    env = dict(os.environ)
    src = str(Path(imagegen.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, str(Path(__file__).resolve().parent), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    env.update(extra)
    return env
