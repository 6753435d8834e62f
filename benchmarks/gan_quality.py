"""GAN benchmarks: DCGAN vs the modern recipe at equal wall-clock, and training throughput.

    # training throughput (img/s) of both recipes on MNIST; cheap (a minute per recipe)
    python benchmarks/gan_quality.py throughput --data mnist --data-root ../shared/data --seconds 60

    # quality: train each recipe for the same budget, then FID (10k samples vs the test split,
    # Inception features), on MNIST and Fashion-MNIST; the issue's protocol is 20 minutes on 2 CPU
    # cores and 5 minutes on one GPU
    python benchmarks/gan_quality.py quality --datasets mnist,fashion-mnist --budget 20m \
        --data-root ../shared/data --inception-weights ../shared/weights/inception-2015-12-05-features.pt

    # the cheap score on CPU: Frechet distance in the MNIST classifier's features (cfd), 10k samples;
    # then Inception FID of the same runs at a smaller n
    python benchmarks/gan_quality.py quality --datasets mnist --recipes dcgan,modern-cnn --budget 20m \
        --metrics cfd --data-root ../shared/data
    python benchmarks/gan_quality.py quality --datasets mnist --recipes dcgan,modern-cnn --skip-train \
        --metrics fid --n 2000 --data-root ../shared/data \
        --inception-weights ../shared/weights/inception-2015-12-05-features.pt

    # CIFAR-10 from the JPEG copy (an image folder with train/ and test/), modern recipe, on a GPU
    python benchmarks/gan_quality.py quality --datasets folder:../shared/data/cifar10-jpeg \
        --recipes modern-cifar --budget 30m --inception-weights ../shared/weights/inception-2015-12-05-features.pt

Recipes (``--recipes``): ``dcgan`` = preset gan-mnist (DCGAN, non-saturating loss, Adam 2e-4 / 0.5);
``modern`` = ResNet G/D sized for 28x28 (width 64), hinge loss, spectral norm, TTUR (lr_g 2e-4,
lr_d 4e-4; the CIFAR-10 preset's lr_g 1e-4 learnt too slowly on MNIST), Adam betas (0, 0.99), EMA;
``modern-cnn`` = preset gan-mnist-modern, the same losses and stabilisers on DCGAN's networks (an
SN-DCGAN, about 6x cheaper per image than the ResNet on CPU); ``modern-cifar`` = preset gan-cifar10 as is.
All conditional (conditional BN + projection D). Every row prints the command's settings, the commit, the
device and the seed; a JSON copy goes next to each run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from _bench import run_main  # benchmarks/_bench.py, beside this script
from imagegen.provenance import commit_label, hardware_label

RECIPES: dict[str, tuple[str, list[str]]] = {
    "dcgan": ("gan-mnist", []),
    # lr_g 2e-4 on MNIST: with the preset's CIFAR-10 rate 1e-4, modern-cnn lost to DCGAN at 20 CPU minutes
    # (docs/gan.md); D stays 2x faster than G (TTUR)
    "modern": ("gan-cifar10", ["model.g_channels=64", "model.d_channels=64", "model.lr_g=2e-4",
                               "train.ema_decay=0.999", "data.hflip=false"]),
    "modern-cnn": ("gan-mnist-modern", []),  # the same settings on DCGAN's networks
    "modern-cifar": ("gan-cifar10", []),
}


def _print_table(rows: list[dict]) -> None:
    if not rows:
        return
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(str(r.get(k, ""))) for r in rows)) for k in keys}
    print("  ".join(f"{k:<{widths[k]}}" for k in keys))
    for r in rows:
        print("  ".join(f"{str(r.get(k, '')):<{widths[k]}}" for k in keys))


def _resolve(recipe: str, data: str, data_root: str | None, extra: list[str], seed: int):
    from imagegen import config

    preset, overrides = RECIPES[recipe]
    items = [f"data.name={data}", f"train.seed={seed}", *overrides, *extra]
    if data_root:
        items.append(f"data.root={data_root}")
    return config.resolve(None, preset, config.parse_overrides(items))


def throughput(args) -> list[dict]:
    """Time ``train_step`` (D step + G step, as the trainer calls it) after a warm-up."""
    return [_throughput_one(recipe, args) for recipe in args.recipes.split(",")]


def _throughput_one(recipe: str, args) -> dict:
    from accelerate import Accelerator

    from imagegen import registry
    from imagegen.data import BatchSampler, load_dataset

    cfg = _resolve(recipe, args.data, args.data_root, args.overrides, args.seed)
    fam = registry.get_family(cfg.family)
    accel = Accelerator(cpu=args.device == "cpu", mixed_precision=cfg.train.mixed_precision)
    torch.manual_seed(args.seed)
    ds = load_dataset(cfg.data, "train")
    model = fam.build(cfg.model, ds.info)
    opts = fam.configure_optimizers(model, cfg.model, cfg.train)
    model, *opt_list = accel.prepare(model, *opts.values())
    opts = dict(zip(opts, opt_list))
    ds = ds.to(accel.device)
    sampler = BatchSampler(len(ds), cfg.train.batch_size, args.seed)
    model.train()

    def step(i):
        b = ds.batch(sampler.next().to(accel.device))
        with accel.accumulate(model), accel.autocast():
            return fam.train_step(model, b, opts, i, accel)

    for i in range(args.warmup):
        step(i)
    if accel.device.type == "cuda":
        torch.cuda.synchronize()
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < args.seconds:
        logs = step(args.warmup + n)
        n += 1
    float(logs["loss"])  # wait for the device
    dt = time.perf_counter() - t0
    net = accel.unwrap_model(model)
    return {"recipe": recipe, "data": args.data, "arch": cfg.model.arch, "batch": cfg.train.batch_size,
            "steps": n, "seconds": round(dt, 1), "img_per_s": round(n * cfg.train.batch_size / dt, 1),
            "G_Mparams": round(sum(p.numel() for p in net.G.parameters()) / 1e6, 2),
            "D_Mparams": round(sum(p.numel() for p in net.D.parameters()) / 1e6, 2),
            "device": hardware_label(args.device), "seed": args.seed, "commit": args.commit}


def quality(args) -> list[dict]:
    """Train every recipe on every dataset for ``--budget``, then FID against the test split."""
    from imagegen import checkpoint
    from imagegen.api import train as train_run
    from imagegen.evaluation import EvalOptions, evaluate_run

    rows = []
    for data in args.datasets.split(","):
        for recipe in args.recipes.split(","):
            cfg = _resolve(recipe, data, args.data_root, args.overrides, args.seed)  # validates early
            tag = data.replace("folder:", "").rstrip("/").split("/")[-1]
            out = Path(args.out) / f"{recipe}-{tag}"
            preset, overrides = RECIPES[recipe]
            items = [f"data.name={data}", f"train.seed={args.seed}", f"train.device={args.device}",
                     *overrides, *args.overrides]
            if args.data_root:
                items.append(f"data.root={args.data_root}")
            t0 = time.perf_counter()
            if args.skip_train:  # re-score an earlier run (e.g. with other metrics or another n)
                run = out
            else:
                run = train_run(preset=preset, out=out, budget=args.budget, fresh=True, overrides=items,
                                progress=not args.quiet)
            train_s = time.perf_counter() - t0
            meta = checkpoint.load(run).meta
            log_file = Path(run) / "metrics.jsonl"
            logs = [json.loads(line) for line in log_file.read_text().splitlines()] if log_file.is_file() else []
            # median of the logged rates (skipping the first, which holds start-up); without logs (a very
            # short run) the overall rate, start-up included
            rates = sorted(r["img_per_s"] for r in logs[1:]) or [round(meta["images_seen"] / meta["elapsed_s"], 1)]
            metrics = args.metrics.split(",")
            opts = EvalOptions(metrics=metrics, n=args.n, ref="test", data_root=args.data_root,
                               inception_weights=args.inception_weights, device=args.device, seed=args.seed,
                               progress=not args.quiet)
            t1 = time.perf_counter()
            result = evaluate_run(run, opts, sample_options={"truncation": args.truncation} if args.truncation
                                  else None, out=Path(run) / f"eval-{'-'.join(metrics)}-{args.n}.json")
            scores = {k: round(v, 3) for k, v in result["summary"].items() if isinstance(v, float)}
            row = {"data": tag, "recipe": recipe, "arch": cfg.model.arch, "loss": cfg.model.loss,
                   "budget": args.budget, "train_s": round(train_s) if not args.skip_train else "-",
                   "steps": meta["step"], "kimg": round(meta["images_seen"] / 1000, 1),
                   "img_per_s": rates[len(rates) // 2], **scores, "eval_s": round(time.perf_counter() - t1),
                   "n_gen": args.n, "ref": "test",
                   "truncation": args.truncation or "off", "device": hardware_label(args.device),
                   "seed": args.seed, "commit": args.commit}
            (Path(run) / f"bench-{'-'.join(metrics)}-{args.n}.json").write_text(json.dumps(row, indent=2))
            rows.append(row)
            _print_table([row])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--recipes", default="dcgan,modern,modern-cnn", help=f"comma list of {', '.join(RECIPES)}")
    common.add_argument("--data-root", default=os.environ.get("IMAGEGEN_DATA"))
    common.add_argument("--device", default="cpu" if not torch.cuda.is_available() else "cuda",
                        choices=["cpu", "cuda"])
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--set", dest="overrides", action="append", default=[], help="extra key=value")
    t = sub.add_parser("throughput", parents=[common], help="training img/s of each recipe")
    t.add_argument("--data", default="mnist")
    t.add_argument("--seconds", type=float, default=60.0, help="timed seconds per recipe")
    t.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    q = sub.add_parser("quality", parents=[common], help="train for a budget, then FID vs the test split")
    q.add_argument("--datasets", default="mnist,fashion-mnist")
    q.add_argument("--budget", default="20m", help="wall clock per recipe and dataset, e.g. 20m or 5m")
    q.add_argument("--n", type=int, default=10000, help="generated images for FID")
    q.add_argument("--metrics", default="fid", help="evaluator metrics, e.g. fid or fid,cfd (classifier FD)")
    q.add_argument("--skip-train", action="store_true", help="score the runs already under --out")
    q.add_argument("--inception-weights", default=None, help="local TorchScript Inception file (offline)")
    q.add_argument("--truncation", type=float, default=0.0, help="sampling truncation (0: off)")
    q.add_argument("--out", default="runs/bench-gan")
    q.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    args.commit = commit_label()  # before training: the code that ran, not what HEAD became meanwhile
    if args.device == "cpu":
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    rows = throughput(args) if args.what == "throughput" else quality(args)
    print()
    _print_table(rows)
    print(f"\ntorch {torch.__version__}, python {platform.python_version()}")


if __name__ == "__main__":
    run_main(main)
