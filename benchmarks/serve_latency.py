"""Latency of one 16-image sample request through ``imagegen serve``'s HTTP API, per run (one per family):
POST /api/sample, then GET /api/jobs/{id}?wait= until it is done; the end-to-end seconds (request, queue,
sampling, PNG encoding, answer) and the model's own seconds, the median of --repeats after one warm-up.

    python benchmarks/serve_latency.py runs/gan-mnist runs/vae-mnist runs/pixelcnn-mnist runs/diffusion-mnist \
        --n 16 --repeats 3 --threads 2 --out serve_latency.json

Each family samples with its defaults unless --options RUN:key=value,... says otherwise (e.g. diffusion's
sampler and steps). The server runs in this process (imagegen.server.background), on loopback.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from _bench import run_main  # benchmarks/_bench.py, beside this script
from sampling_speed import _parse_options  # the same RUN:key=value,... syntax as sampling_speed.py


def _request(client, base: str, body: dict) -> tuple[float, float]:
    t0 = time.perf_counter()
    r = client.post(f"{base}/api/sample", json=body)
    if r.status_code != 202:
        from imagegen.errors import ImagegenError

        raise ImagegenError(f"the server refused the request: {r.json()['error']}")
    job = r.json()
    while job["status"] in ("queued", "running"):
        job = client.get(f"{base}/api/jobs/{job['id']}", params={"wait": 30}, timeout=60).json()
    if job["status"] != "done":
        from imagegen.errors import ImagegenError

        raise ImagegenError(f"the job ended {job['status']}: {job['error']}")
    return time.perf_counter() - t0, job["result"]["model_seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--n", type=int, default=16, help="images per request")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--options", action="append", default=[], help="RUN:key=value,... sampling options")
    ap.add_argument("--out", default=None, help="write the rows as JSON")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import httpx

    from imagegen.provenance import commit_label
    from imagegen.server import Limits, create_app, load_runs
    from imagegen.server.background import BackgroundServer

    per_run = _parse_options(args.options)
    runs = load_runs(args.runs, device=args.device)
    rows = []
    with BackgroundServer(create_app(runs, Limits(max_images=max(64, args.n)))) as srv, \
            httpx.Client(timeout=120) as client:
        for r, path in zip(runs, args.runs):
            m = r.model
            labels = [i % m.info.num_classes for i in range(args.n)] if m.class_conditional else None
            body = {"run": r.index, "n": args.n, "seed": 0, "options": per_run.get(path.rstrip("/"), {}),
                    "labels": labels}
            _request(client, srv.url, body)  # warm-up
            times = [_request(client, srv.url, body) for _ in range(args.repeats)]
            rows.append({"run": path, "family": m.family, "step": m.step, "n": args.n, "options": body["options"],
                         "end_to_end_s": round(statistics.median(t for t, _ in times), 3),
                         "model_s": round(statistics.median(s for _, s in times), 3),
                         "device": args.device, "threads": torch.get_num_threads()})
    commit = commit_label()
    for row in rows:
        row["commit"] = commit
        print(f"{row['family']:<10} {row['run']:<40} n={row['n']:<3} {row['end_to_end_s']:>8.3f} s end to end "
              f"({row['model_s']:.3f} s sampling)  {json.dumps(row['options'])}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    run_main(main)
