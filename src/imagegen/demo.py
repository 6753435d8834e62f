"""``make demo``: train a VAE on the embedded digits set, write a sample grid, print its path.

Runs on any fresh machine with no files and no network (scikit-learn ships the data). The budget
is wall-clock (``IMAGEGEN_DEMO_BUDGET``, default 90s) so the demo takes the same time everywhere.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch


def main() -> int:
    from . import load, train
    from .config import DataConfig
    from .data import load_dataset
    from .errors import ImagegenError
    from .trainer import save_grid

    budget = os.environ.get("IMAGEGEN_DEMO_BUDGET", "90s")
    out = Path(os.environ.get("IMAGEGEN_DEMO_OUT", "runs/demo-vae-digits"))
    try:
        print(f"training a VAE on the embedded digits set (16x16) for {budget} of wall clock -> {out}")
        train("vae", data="digits", budget=budget, out=out, fresh=True,
              overrides=["train.log_every=50", "train.sample_every=0", "train.ckpt_every=100000"])
        model = load(out)
        grid = save_grid(model.sample(64, seed=0), out / "grid.png")
        test = load_dataset(DataConfig(name="digits"), "test")
        x = test.batch(torch.arange(len(test))).x
        nats = model.nll(x, k=100).mean().item()
        bpd = nats / (model.info.num_dims * 0.6931471805599453)
        print(f"test NLL (IWAE, k=100, {len(test)} held-out digits): {nats:.1f} nats/image, {bpd:.3f} bits/dim")
        print(f"sample grid: {grid.resolve()}")
    except ImagegenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
