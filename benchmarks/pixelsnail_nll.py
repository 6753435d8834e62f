"""PixelSNAIL beside Gated PixelCNN at the same wall-clock minutes: exact test NLL after each budget.

    # the issue's numbers: binarized MNIST, all 10,000 test images, at 10 and 30 minutes of training each
    OMP_NUM_THREADS=2 python benchmarks/pixelsnail_nll.py --budgets 10m,30m --data-root ../shared/data
    # a smoke run (seconds; proves the pipeline, measures nothing)
    python benchmarks/pixelsnail_nll.py --budgets 20s,40s --n-test 200 --out runs/bench-snail-smoke

Both models train with the same preset (``--preset``, default ``pixelsnail-mnist``: data, batch size, lr, EMA),
the Gated PixelCNN with its model overridden by ``--gated`` (default: 40 channels, 7 layers, head 128, which
has about the parameter count of the PixelSNAIL preset: 253,377 against 245,537 on 28x28 binary data). Each
model trains once: to the first budget, is scored, then the same run resumes to the next budget (the trainer's
wall clock counts across resumes) and is scored again, so the 30-minute figure is the 10-minute model trained
20 minutes more. Preview grids are off (``train.sample_every=0``) so that no sampling is charged to the
training clock. Scoring: the exact NLL of the EMA weights on the first ``--n-test`` test images under one
fixed binarisation (seed ``--seed``); a class-conditional model is scored by its exact marginal. Prints a table
(and the PixelSNAIL - gated gap at each budget) and writes it as JSON to ``<out>/bench.json``.

Reference (after full training on a GPU; pytorch-generative's table): PixelSNAIL 78.61 nats, Gated PixelCNN
81.50. A run of minutes on a CPU is far from either.
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

GATED = "arch=gated,hidden_channels=40,layers=7,head_channels=128"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", default="10m,30m", help="cumulative training wall clock at which to score")
    ap.add_argument("--preset", default="pixelsnail-mnist", help="preset both models train with")
    ap.add_argument("--gated", default=GATED, help="model.KEY=VALUE overrides (comma-separated) of the gated model")
    ap.add_argument("--models", default="pixelsnail,gated", help="which of the two to run")
    ap.add_argument("--data-root", default=os.environ.get("IMAGEGEN_DATA", "../shared/data"))
    ap.add_argument("--out", default="runs/bench-pixelsnail", help="folder of the two run directories")
    ap.add_argument("--n-test", type=int, default=10000, help="test images scored (first N of the split)")
    ap.add_argument("--batch-size", type=int, default=100, help="evaluation batch size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="key=value for both models")
    args = ap.parse_args()

    import imagegen
    from imagegen.config import parse_budget
    from imagegen.errors import ImagegenError
    from imagegen.likelihood import evaluate_nll

    budgets = [b.strip() for b in args.budgets.split(",") if b.strip()]
    minutes = [parse_budget(b) for b in budgets]
    if minutes != sorted(minutes) or len(set(minutes)) != len(minutes):
        raise ImagegenError(f"--budgets must increase (each resumes the previous run), got {args.budgets}")
    models = {"pixelsnail": [], "gated": [f"model.{kv}" for kv in args.gated.split(",") if kv]}
    chosen = [m for m in args.models.split(",") if m]
    unknown = [m for m in chosen if m not in models]
    if unknown:
        raise ImagegenError(f"--models takes pixelsnail and/or gated, got {', '.join(unknown)}")
    commit = commit_label()  # before training: the code that ran, not what HEAD became meanwhile
    out_root = Path(args.out)
    rows = []
    for name in chosen:
        run_dir = out_root / name
        for k, (budget, mins) in enumerate(zip(budgets, minutes)):
            t0 = time.perf_counter()
            run = imagegen.train("pixelcnn", preset=args.preset, out=run_dir, budget=budget, fresh=k == 0,
                                 overrides=[f"data.root={args.data_root}", f"train.seed={args.seed}",
                                            "train.kimg=null", "train.steps=null", "train.sample_every=0",
                                            *models[name], *args.overrides])
            wall = time.perf_counter() - t0
            cfg = json.loads((Path(run) / "config.json").read_text())
            opts = {"marginal": True} if cfg["model"].get("class_cond") else {}
            result = evaluate_nll(run, split="test", data_root=args.data_root, n=args.n_test,
                                  batch_size=args.batch_size, seed=args.seed, **opts)
            loaded = imagegen.load(run, device="cpu")
            params = sum(p.numel() for p in loaded.module.parameters())
            rows.append({"model": name, "arch": cfg["model"]["arch"], "params": params, "budget": budget,
                         "budget_minutes": mins, "steps": result["step"],
                         "kimg": round((result["images_seen"] or 0) / 1000, 3), "wall_seconds_this_leg": round(wall, 1),
                         "n_test": result["n"], "test_nll_nats": round(result["nats"], 3),
                         "test_nll_sem": round(result["nats_sem"], 3),
                         "test_bits_per_dim": round(result["bits_per_dim"], 4), "eval_seconds": result["seconds"],
                         "run": str(run)})
    print(f"\n{'model':<11} {'params':>8} {'budget':>7} {'steps':>6} {'kimg':>7} {'test NLL (nats)':>18} "
          f"{'bits/dim':>9}")
    for r in rows:
        nll = f"{r['test_nll_nats']:.2f} +- {r['test_nll_sem']:.2f}"
        print(f"{r['model']:<11} {r['params']:>8} {r['budget']:>7} {r['steps']:>6} {r['kimg']:>7.1f} {nll:>18} "
              f"{r['test_bits_per_dim']:>9.4f}")
    gaps = {}
    for budget in budgets:
        by = {r["model"]: r for r in rows if r["budget"] == budget}
        if {"pixelsnail", "gated"} <= set(by):
            gaps[budget] = round(by["pixelsnail"]["test_nll_nats"] - by["gated"]["test_nll_nats"], 3)
            print(f"PixelSNAIL - gated at {budget}: {gaps[budget]:+.2f} nats (negative: PixelSNAIL better)")
    cfg = json.loads((out_root / chosen[0] / "config.json").read_text())
    summary = {"preset": args.preset, "data": cfg["data"]["name"], "gated_overrides": args.gated,
               "budgets": budgets, "gap_pixelsnail_minus_gated_nats": gaps, "rows": rows, "seed": args.seed,
               "nll_kind": "exact marginal over labels" if cfg["model"].get("class_cond") else "exact",
               "commit": commit, "device": hardware_label("auto"), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "python": platform.python_version()}
    out_root.mkdir(parents=True, exist_ok=True)
    save_row(summary, out_root / "bench.json")


if __name__ == "__main__":
    run_main(main)
