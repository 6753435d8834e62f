"""Inception FID feature extraction speed, end to end (clean resize + network), per runtime.

Times ``InceptionFeatures.features`` on seeded random uint8 images under each runtime that can run here
(torch: the frozen channels_last graph on CPU, the plain graph on GPU; onnxruntime: CPU only) and reports
images per second and the largest feature difference from torch. FID-N costs about 2N images of this
(N generated + N reference, or N with the reference already cached).

    OMP_NUM_THREADS=2 IMAGEGEN_INCEPTION=/work/shared/weights/inception-2015-12-05-features.pt \
        python benchmarks/inception_speed.py --n 256 --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from _bench import run_main  # benchmarks/_bench.py, beside this script
from imagegen.errors import ImagegenError
from imagegen.metrics.fid import InceptionFeatures
from imagegen.provenance import hardware_label


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="images timed per runtime (after a warm-up batch)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--size", type=int, default=28, help="side of the input images before the 299 resize")
    ap.add_argument("--channels", type=int, default=1, choices=(1, 3))
    ap.add_argument("--runtimes", default="torch,onnxruntime")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N] (onnxruntime is CPU only)")
    ap.add_argument("--inception-weights", default=None, help="else $IMAGEGEN_INCEPTION, the cache or a download")
    ap.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = ap.parse_args()

    u8 = torch.randint(0, 256, (args.n, args.channels, args.size, args.size), dtype=torch.uint8,
                       generator=torch.Generator().manual_seed(0))
    hardware = hardware_label(args.device)
    rows, reference = [], None
    for name in args.runtimes.split(","):
        try:
            net = InceptionFeatures(args.inception_weights, device=args.device, runtime=name)
        except ImagegenError as e:
            if "ONNX Runtime" not in str(e):  # a missing network is the user's to fix, not a runtime to skip
                raise
            print(f"# {name}: skipped, {e}")
            continue
        if not net.runtime.startswith(name):  # onnxruntime on a GPU: torch runs it
            print(f"# {name}: not used on {args.device}, skipped")
            continue
        net.features(u8[:args.batch_size], args.batch_size, progress=False)  # warm-up: allocation, oneDNN kernels
        t0 = time.perf_counter()
        feats = net.features(u8, args.batch_size, progress=False)
        seconds = time.perf_counter() - t0
        reference = feats if reference is None else reference
        row = {"runtime": net.runtime, "device": args.device, "hardware": hardware, "images": args.n,
               "batch_size": args.batch_size, "input": f"{args.channels}x{args.size}x{args.size} uint8",
               "seconds": round(seconds, 2), "img_per_s": round(args.n / seconds, 2),
               "max_abs_diff_vs_first": float((feats - reference).abs().max())}
        rows.append(row)
        print(f"{row['runtime']:<32} {row['img_per_s']:7.2f} img/s  ({args.n} images in {seconds:.1f} s, "
              f"batch {args.batch_size}; max |diff| vs {rows[0]['runtime']}: {row['max_abs_diff_vs_first']:.2e})",
              flush=True)
    print(f"# {hardware}, torch {torch.__version__}, weights sha256 {net.sha256[:16]}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    run_main(main)
