"""Sampling speed of trained runs, any family: seconds to draw N images (after one warm-up draw), and
images/s, through the public API (``imagegen.load(run).sample``), so every family is timed the same way.

    python benchmarks/sampling_speed.py runs/gan-mnist runs/diff-mnist --n 64 --threads 2 \
        --options 'runs/diff-mnist:sampler=dpmpp-2m,steps=20'

``--options RUN:key=value,...`` passes family sampling options for one run (numbers are parsed); a run
without them uses its family's defaults. Prints one row per run with the family, checkpoint step, options,
device, torch threads and commit.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from _bench import run_main  # benchmarks/_bench.py, beside this script
from imagegen.provenance import commit_label


def _parse_options(items: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for item in items:
        run, sep, kv = item.rpartition(":")  # the last colon: a run may be zoo:NAME
        if not sep:
            run, kv = item, ""
        opts = {}
        for pair in filter(None, kv.split(",")):
            k, _, v = pair.partition("=")
            try:
                opts[k] = int(v)
            except ValueError:
                try:
                    opts[k] = float(v)
                except ValueError:
                    opts[k] = v
        out[run.rstrip("/")] = opts
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--options", action="append", default=[], help="RUN:key=value,... sampling options")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import imagegen

    per_run = _parse_options(args.options)
    commit = commit_label()
    for run in args.runs:
        model = imagegen.load(run, device=args.device)
        opts = per_run.get(run.rstrip("/"), {})
        model.sample(min(args.n, 8), seed=args.seed + 1, batch_size=args.n, **opts)  # warm-up
        if torch.cuda.is_available() and args.device != "cpu":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        x = model.sample(args.n, seed=args.seed, batch_size=args.n, **opts)
        if torch.cuda.is_available() and args.device != "cpu":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        print(json.dumps({"run": run, "family": model.family, "step": model.step, "options": opts, "n": int(x.shape[0]),
                          "seconds": round(seconds, 3), "img_per_s": round(x.shape[0] / seconds, 2),
                          "device": args.device, "threads": torch.get_num_threads(), "commit": commit}), flush=True)


if __name__ == "__main__":
    run_main(main)
