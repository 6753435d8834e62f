"""VAE on dynamically binarized MNIST: train for a wall-clock budget, then the IWAE test NLL.

    python benchmarks/vae_mnist.py --budget 10m --data-root ../shared/data --k 1000 --n-test 10000

Prints a table (training throughput, ELBO, IWAE NLL in nats and bits/dim) and writes it as JSON
next to the run. The literature's reference VAE on this benchmark is about 86.8 nats (IWAE paper,
Burda et al. 2015, table 1, k=5000 evaluation); a run of a few CPU minutes is far from converged.
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
    ap.add_argument("--budget", default="10m", help="training wall clock, e.g. 10m")
    ap.add_argument("--data-root", default=os.environ.get("IMAGEGEN_DATA", "../shared/data"))
    ap.add_argument("--out", default="runs/bench-vae-bmnist")
    ap.add_argument("--preset", default="vae-bmnist")
    ap.add_argument("--k", type=int, default=1000, help="IWAE importance samples")
    ap.add_argument("--n-test", type=int, default=10000, help="test images scored (first N of the split)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()

    import imagegen
    from imagegen.likelihood import evaluate_nll

    commit = commit_label()  # before training: the code that ran, not what HEAD became meanwhile
    t0 = time.perf_counter()
    run = imagegen.train(preset=args.preset, out=args.out, budget=args.budget, fresh=True,
                         overrides=[f"data.root={args.data_root}", f"train.seed={args.seed}", *args.overrides])
    train_s = time.perf_counter() - t0
    logs = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    rates = [r["img_per_s"] for r in logs[1:]] or [logs[-1]["img_per_s"]]
    result = evaluate_nll(run, split="test", data_root=args.data_root, n=args.n_test, batch_size=50,
                          seed=args.seed, k=args.k)
    device = hardware_label("auto")  # where imagegen.train ran it
    row = {
        "preset": args.preset, "budget": args.budget, "train_seconds": round(train_s, 1),
        "steps": logs[-1]["step"], "kimg": logs[-1]["kimg"],
        "train_img_per_s_median": sorted(rates)[len(rates) // 2],
        "train_elbo_bpd_last": logs[-1].get("elbo_bpd"),
        "iwae_k": args.k, "n_test": result["n"], "test_nll_nats": round(result["nats"], 3),
        "test_nll_sem": round(result["nats_sem"], 3), "test_bits_per_dim": round(result["bits_per_dim"], 4),
        "eval_seconds": result["seconds"], "seed": args.seed, "commit": commit, "device": device,
        "torch": torch.__version__, "python": platform.python_version(),
    }
    save_row(row, Path(run) / "bench.json")


if __name__ == "__main__":
    run_main(main)
