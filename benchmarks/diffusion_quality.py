"""Diffusion quality: train a preset for a wall-clock budget, then score samples per sampler and number
of network calls (NFE) with the project's evaluator (FID vs the test split, Inception features).

    # the issue's protocol: MNIST, 30 minutes on 2 CPU cores (or --device cuda and --budget 5m),
    # 10k samples per cell, NFE 10 / 20 / 50 / 1000 for each sampler
    python benchmarks/diffusion_quality.py --preset ddpm-mnist --budget 30m --data-root ../shared/data \
        --out runs/diff-mnist-q --inception-weights ../shared/weights/inception-2015-12-05-features.pt

    # a short, cheap CPU check (the classifier Frechet distance 'cfd' is far cheaper than Inception on CPU)
    python benchmarks/diffusion_quality.py --budget 3m --n 500 --nfe 10,20 --metrics cfd \
        --data-root ../shared/data --out runs/diff-mnist-short

    # score an existing run only
    python benchmarks/diffusion_quality.py --skip-train --out runs/diff-mnist-q --nfe 10,20,50

NFE -> steps: heun makes 2*steps-1 network calls (steps = (NFE+1)//2); the others one per step. Every
row prints the run's step count and images seen, the sampler settings, the commit, the device and the
seed; a JSON copy of each evaluation goes to OUT/quality-<sampler>-<nfe>-n<N>[-g<guidance>].json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from _bench import run_main  # benchmarks/_bench.py, beside this script
from imagegen.provenance import commit_label, hardware_label


def _print_table(rows: list[dict]) -> None:
    if not rows:
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    widths = {k: max(len(k), *(len(str(r.get(k, ""))) for r in rows)) for k in keys}
    print("  ".join(f"{k:<{widths[k]}}" for k in keys))
    for r in rows:
        print("  ".join(f"{str(r.get(k, '')):<{widths[k]}}" for k in keys))


def steps_for(sampler: str, nfe: int) -> int:
    return (nfe + 1) // 2 if sampler == "heun" else nfe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="ddpm-mnist")
    ap.add_argument("--budget", default="30m", help="training wall clock, e.g. 30m, 5m, 90s")
    ap.add_argument("--out", required=True, help="run directory (resumed if it exists)")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--set", action="append", default=[], help="config override, e.g. model.class_cond=true")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--samplers", default="ddim,ddpm,dpmpp-2m,heun")
    ap.add_argument("--nfe", default="10,20,50,1000", help="network calls per sample")
    ap.add_argument("--n", type=int, default=10000, help="samples per cell")
    ap.add_argument("--metrics", default="fid")
    ap.add_argument("--guidance", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--inception-weights", default=None)
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    import imagegen
    from imagegen.evaluation import EvalOptions, evaluate_run

    out = Path(args.out)
    overrides = [*args.set, f"train.device={args.device}", f"train.seed={args.seed}"]
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    commit = commit_label()  # before training: the code that ran, not what HEAD became meanwhile
    t0 = time.time()
    if not args.skip_train:
        imagegen.train(preset=args.preset, out=out, budget=args.budget, overrides=overrides)
    train_s = time.time() - t0
    model = imagegen.load(out, device="cpu")
    hw = hardware_label(args.device)
    header = {"preset": args.preset, "budget": args.budget, "step": model.step,
              "train_s_this_call": round(train_s), "device": hw, "commit": commit, "seed": args.seed}
    print(json.dumps({"case": "run", **header}), flush=True)

    rows = []
    for sampler in [s for s in args.samplers.split(",") if s]:
        for nfe in [int(v) for v in args.nfe.split(",") if v]:
            steps = steps_for(sampler, nfe)
            opts = EvalOptions(metrics=args.metrics.split(","), n=args.n, batch_size=args.batch_size,
                               seed=args.seed, data_root=args.data_root, device=args.device,
                               inception_weights=args.inception_weights, progress=False)
            sample_options = {"sampler": sampler, "steps": steps}
            if args.guidance != 1.0:
                sample_options["guidance"] = args.guidance
            t1 = time.time()
            tag = "" if args.guidance == 1.0 else f"-g{args.guidance:g}"
            res = evaluate_run(out, opts, sample_options, out=out / f"quality-{sampler}-{nfe}-n{args.n}{tag}.json")
            row = {"sampler": sampler, "nfe": nfe, "steps": steps, "n": args.n,
                   **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in res["summary"].items()},
                   "seconds": round(time.time() - t1)}
            print(json.dumps({**row, **header}), flush=True)
            rows.append(row)
    print()
    print(f"# {args.preset}, {model.step} steps, budget {args.budget}, {hw}, commit {header['commit']}, "
          f"seed {args.seed}, guidance {args.guidance}")
    _print_table(rows)


if __name__ == "__main__":
    run_main(main)
