"""PixelCNN sampling speed: the naive sampler (one full forward pass per pixel) against the cached one
(every layer evaluated once per position, Fast-PixelCNN++ style), on randomly initialised weights (the
cost does not depend on the weights).

    python benchmarks/pixelcnn_speed.py --n 64 --size 28 --binary                 # family defaults
    python benchmarks/pixelcnn_speed.py --preset pixelcnn-bmnist --naive-rows 2   # full-size model
    python benchmarks/pixelcnn_speed.py --set hidden_channels=16 --set layers=3   # small model
    python benchmarks/pixelcnn_speed.py --preset pixelsnail-mnist --binary --classes 0 --naive-rows 2   # PixelSNAIL

Every naive step is one forward pass of the same shape, so ``--naive-rows R`` times the first R rows
and reports the whole-image time scaled by H/R, marked "scaled" in the table; without it the whole
image is sampled both ways and the two outputs are checked to be identical. Prints one table row per
sampler and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from _bench import run_main  # benchmarks/_bench.py, beside this script
from imagegen.provenance import commit_label, hardware_label


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64, help="samples per batch")
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--binary", action="store_true", help="1-bit data (Bernoulli), else 8-bit")
    ap.add_argument("--classes", type=int, default=10, help="labels (0: unconditional)")
    ap.add_argument("--preset", default=None, help="take the model config from this preset")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="model key=value")
    ap.add_argument("--naive-rows", type=int, default=None, help="time the naive sampler on this many rows")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from imagegen import config
    from imagegen.data import DataInfo
    from imagegen.families import pixelcnn as pc

    ov = config.parse_overrides([f"model.{o}" for o in args.overrides])
    cfg = config.resolve("pixelcnn", args.preset, ov).model
    if args.classes == 0:
        cfg = config.replace(cfg, class_cond=False)
    info = DataInfo(channels=args.channels, size=args.size, num_classes=args.classes,
                    bits=1 if args.binary else 8, name="bench")
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    model = pc.build(cfg, info).to(device).eval()
    labels = torch.arange(args.n, device=device) % args.classes if model.num_classes else None

    def run(sampler: str, rows: int | None):
        g = torch.Generator(device=device).manual_seed(args.seed)
        x = torch.zeros(args.n, info.channels, info.size, info.size, device=device)
        y = None if labels is None else labels.clone()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad():
            out = pc._raster_sample(model, x, None, y, g, 1.0, sampler, rows=rows)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0, out

    run("cached", 1)  # warm-up (allocator, kernels)
    t_cached, x_cached = run("cached", None)
    t_naive, x_naive = run("naive", args.naive_rows)
    scale = 1.0
    if args.naive_rows is not None and args.naive_rows < info.size:
        scale = info.size / args.naive_rows
        identical = bool(torch.equal(x_naive[:, :, :args.naive_rows], x_cached[:, :, :args.naive_rows]))
    else:
        identical = bool(torch.equal(x_naive, x_cached))
    naive_total = t_naive * scale

    commit = commit_label()
    dev = hardware_label(device)
    params = sum(p.numel() for p in model.parameters())
    print(f"PixelCNN sampling, {args.n} samples of {info.channels}x{info.size}x{info.size} "
          f"({model.likelihood}), arch={cfg.arch} hidden={cfg.hidden_channels} layers={cfg.layers} "
          f"{f'blocks={cfg.blocks} ' if cfg.arch == 'pixelsnail' else ''}"
          f"({params / 1e6:.2f}M params), {dev}")
    print(f"{'sampler':<8} {'seconds':>10} {'img/s':>8}  note")
    note = f"scaled from {args.naive_rows} of {info.size} rows ({t_naive:.2f} s measured)" if scale != 1 else "measured"
    print(f"{'naive':<8} {naive_total:>10.2f} {args.n / naive_total:>8.2f}  {note}")
    print(f"{'cached':<8} {t_cached:>10.2f} {args.n / t_cached:>8.2f}  measured")
    print(f"speed-up {naive_total / t_cached:.1f}x; identical samples on the compared rows: {identical}")
    print(json.dumps({"n": args.n, "shape": [info.channels, info.size, info.size], "likelihood": model.likelihood,
                      "model": {k: getattr(cfg, k) for k in ("arch", "hidden_channels", "layers", "kernel_size",
                                                               "first_kernel_size", "head_channels",
                                                               *(("blocks", "key_channels", "value_channels")
                                                                 if cfg.arch == "pixelsnail" else ()))},
                      "params": params, "naive_s": round(naive_total, 3), "naive_measured_s": round(t_naive, 3),
                      "naive_rows": args.naive_rows, "cached_s": round(t_cached, 3),
                      "speedup": round(naive_total / t_cached, 2), "identical": identical, "seed": args.seed,
                      "device": dev, "commit": commit, "torch": torch.__version__,
                      "python": platform.python_version()}))


if __name__ == "__main__":
    run_main(main)
