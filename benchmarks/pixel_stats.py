"""Low-level pixel statistics of generated images next to real ones: a cheap look at *what* differs when two
feature spaces (Inception, the dataset classifier) rank models in opposite order (docs/gan.md).

Every image is quantised to 8 bits like a stored one, then per set:
  laplacian2   mean squared 4-neighbour Laplacian (high-frequency energy: edges, texture, speckle)
  ink          share of pixels above -0.9 (anything but background)
  isolated     pixels above 0 with none of their 4 neighbours above 0, per image (speckle)
  faint        share of pixels in (-0.95, -0.5): the grey haze around strokes

    python benchmarks/pixel_stats.py --data mnist --data-root ../shared/data \
        --runs runs/bench-gan/dcgan-mnist,runs/bench-gan/modern-cnn-mnist --n 2000
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from _bench import run_main  # benchmarks/_bench.py, beside this script
from imagegen import api
from imagegen.config import DataConfig
from imagegen.data import load_dataset, to_float, to_uint8

LAPLACIAN = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3)
NEIGHBOURS = torch.tensor([[0.0, 1, 0], [1, 0, 1], [0, 1, 0]]).view(1, 1, 3, 3)


def pixel_stats(x: torch.Tensor) -> dict:
    """x: (N, 1, H, W) float in [-1, 1] -> the statistics above (grey images)."""
    x = to_float(to_uint8(x))
    on = (x > 0).float()
    lonely = (on > 0) & (F.conv2d(on, NEIGHBOURS, padding=1) == 0)
    return {"laplacian2": F.conv2d(x, LAPLACIAN).pow(2).mean().item(), "ink": (x > -0.9).float().mean().item(),
            "isolated": lonely.float().sum((1, 2, 3)).mean().item(),
            "faint": ((x > -0.95) & (x < -0.5)).float().mean().item()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--runs", required=True, help="comma list of run directories (grey models of --data)")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    real = load_dataset(DataConfig(name=args.data, root=args.data_root), "test").images[: args.n]
    rows = [("real test", pixel_stats(to_float(real)))]
    for run in args.runs.split(","):
        rows.append((run, pixel_stats(api.load(run, device="cpu").sample(args.n, seed=args.seed))))
    print(f"| {args.data}, {args.n} images | laplacian^2 | ink | isolated px / image | faint |")
    print("|---|---|---|---|---|")
    for name, s in rows:
        print(f"| {name} | {s['laplacian2']:.3f} | {s['ink']:.3f} | {s['isolated']:.2f} | {s['faint']:.4f} |")


if __name__ == "__main__":
    run_main(main)
