"""PixelCNN exact likelihood: train for a wall-clock budget, then the exact test NLL.

    # binarized MNIST, family defaults (the CPU model), the issue's 30-minute run
    python benchmarks/pixelcnn_nll.py --data binarized-mnist --budget 30m --data-root ../shared/data
    # full-size recipes (GPU)
    python benchmarks/pixelcnn_nll.py --preset pixelcnn-bmnist --budget 60m
    python benchmarks/pixelcnn_nll.py --preset gated-pixelcnn-mnist --budget 60m
    python benchmarks/pixelcnn_nll.py --preset pixelcnn-cifar10 --budget 120m \\
        --data folder:../shared/data/cifar10-jpeg          # the JPEG copy of CIFAR-10

Binary data is scored on a fixed binarisation of the test split (seed ``--seed``). Class-conditional
models are scored by the exact marginal -log mean_y p(x | y) (``nll(..., marginal=True)``), comparable
with unconditional models. Prints a table and writes it as JSON next to the run. References: PixelCNN
81.30 nats on binarised MNIST (van den Oord et al. 2016a, table 4), PixelCNN++ 2.92 bits/dim on CIFAR-10
(Salimans et al. 2017); a run of a few CPU minutes is far from converged.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from _bench import run_main, save_row  # benchmarks/_bench.py, beside this script
from imagegen.provenance import commit_label, hardware_label


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", default="30m", help="training wall clock, e.g. 30m")
    ap.add_argument("--preset", default=None, help="e.g. pixelcnn-bmnist (default: the family defaults)")
    ap.add_argument("--data", default=None, help="dataset (default: the preset's, else binarized-mnist)")
    ap.add_argument("--data-root", default=os.environ.get("IMAGEGEN_DATA", "../shared/data"))
    ap.add_argument("--out", default=None, help="run directory (default runs/bench-pixelcnn-<data>)")
    ap.add_argument("--n-test", type=int, default=10000, help="test images scored (first N of the split)")
    ap.add_argument("--batch-size", type=int, default=100, help="evaluation batch size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra key=value overrides")
    args = ap.parse_args()

    import imagegen
    from imagegen.likelihood import evaluate_nll

    data = args.data or (None if args.preset else "binarized-mnist")
    tag = (data or args.preset).replace("folder:", "").replace("/", "_").strip("._")
    out = args.out or f"runs/bench-pixelcnn-{tag}"
    commit = commit_label()  # before training: the code that ran, not what HEAD became meanwhile
    t0 = time.perf_counter()
    run = imagegen.train("pixelcnn", preset=args.preset, data=data, out=out, budget=args.budget, fresh=True,
                         overrides=[f"data.root={args.data_root}", f"train.seed={args.seed}", "train.kimg=null",
                                    "train.log_every=10",
                                    *args.overrides])
    train_s = time.perf_counter() - t0
    metrics = Path(run) / "metrics.jsonl"
    logs = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
    logs = logs or [{"step": None, "kimg": None, "img_per_s": None}]  # fewer steps than train.log_every
    rates = [r["img_per_s"] for r in logs[1:]] or [logs[-1]["img_per_s"]]
    cfg = json.loads((Path(run) / "config.json").read_text())
    opts = {"marginal": True} if cfg["model"].get("class_cond") else {}
    result = evaluate_nll(run, split="test", data_root=args.data_root, n=args.n_test,
                          batch_size=args.batch_size, seed=args.seed, **opts)
    device = hardware_label("auto")  # where imagegen.train ran it
    row = {
        "preset": args.preset, "data": cfg["data"]["name"], "model": cfg["model"], "budget": args.budget,
        "train_seconds": round(train_s, 1), "steps": result["step"],
        "kimg": round((result["images_seen"] or 0) / 1000, 3),
        "train_img_per_s_median": sorted(rates)[len(rates) // 2] if rates[0] is not None else None,
        "train_bpd_last_logged": logs[-1].get("bpd"),
        "nll_kind": "exact marginal over labels" if opts else "exact", "n_test": result["n"],
        "test_nll_nats": round(result["nats"], 3), "test_nll_sem": round(result["nats_sem"], 3),
        "test_bits_per_dim": round(result["bits_per_dim"], 4), "eval_seconds": result["seconds"],
        "seed": args.seed, "commit": commit, "device": device, "torch": torch.__version__,
        "python": platform.python_version(),
    }
    save_row(row, Path(run) / "bench.json")


if __name__ == "__main__":
    run_main(main)
