"""Load test of ``imagegen serve`` on loopback: R requests from C concurrent clients (httpx.AsyncClient),
each a sample request followed by polling its job. Every request must end, within its time limit, in a
result or a clear busy answer (HTTP 429, one line); none may hang; the server's memory (RSS of its process)
must stay flat from one round of requests to the next.

    python benchmarks/serve_load.py runs/gan-mnist --requests 200 --clients 20 --n 4 --out serve_load.json

The server is started as a subprocess (``python -m imagegen.cli serve RUN ... --port P``) and stopped at the
end. Prints requests/s, p50/p99 latency of the answered requests, the busy answers and the RSS per round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _bench import run_main, save_row  # benchmarks/_bench.py, beside this script


def start_server(runs: list[str], port: int, max_queue: int, device: str = "cpu", threads: int | None = None,
                 timeout_s: float = 120.0) -> subprocess.Popen:
    """``imagegen serve`` in a subprocess; returns once /api/health answers."""
    import httpx

    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "imagegen.cli", "serve", *runs, "--port", str(port), "--device", device,
           "--max-queue", str(max_queue)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"imagegen serve exited with {proc.returncode}: {proc.stderr.read().strip()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError(f"imagegen serve did not answer on port {port} within {timeout_s:.0f} s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


async def _one(client, base: str, body: dict, limit_s: float) -> tuple[str, float]:
    """One request to its end: ('done' | 'busy' | 'error' | 'hung', seconds)."""
    import httpx

    t0 = time.perf_counter()
    try:
        r = await client.post(f"{base}/api/sample", json=body, timeout=limit_s)
        if r.status_code == 429:
            assert "\n" not in r.json()["error"]
            return "busy", time.perf_counter() - t0
        if r.status_code != 202:
            return "error", time.perf_counter() - t0
        job = r.json()
        while job["status"] in ("queued", "running"):
            left = limit_s - (time.perf_counter() - t0)
            if left <= 0:
                await client.delete(f"{base}/api/jobs/{job['id']}")
                return "hung", time.perf_counter() - t0
            r = await client.get(f"{base}/api/jobs/{job['id']}", params={"wait": min(2.0, left)},
                                 timeout=left + 5)
            job = r.json()
        return ("done" if job["status"] == "done" else "error"), time.perf_counter() - t0
    except (httpx.HTTPError, asyncio.TimeoutError):
        return "hung", time.perf_counter() - t0


async def _round(base: str, bodies: list[dict], clients: int, limit_s: float) -> list[tuple[str, float]]:
    import httpx

    queue: asyncio.Queue = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    out: list[tuple[str, float]] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client_loop(client):
        while not queue.empty():
            body = queue.get_nowait()
            out.append(await _one(client, base, body, limit_s))

    async with httpx.AsyncClient(limits=limits) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
    return out


def run_load(base: str, pid: int | None, runs: int, requests: int, clients: int, n: int, limit_s: float,
             rounds: int = 2, options: dict | None = None) -> dict:
    """``rounds`` rounds of ``requests`` requests (spread over the server's ``runs`` runs) from ``clients``
    clients; the figures of all rounds together and the server's RSS after each."""
    import httpx

    info = httpx.get(f"{base}/api/runs", timeout=30).json()
    bodies = []
    for i in range(requests):
        r = info[i % runs]
        labels = [i % r["num_classes"]] if r["class_conditional"] else None  # a conditional VAE needs one
        bodies.append({"run": r["id"], "n": n, "seed": i, "labels": labels,
                       "options": {k: v for k, v in (options or {}).items()
                                   if k in [o["name"] for o in r["ops"]["sample"]["options"]]}})
    results, rss, walls = [], [], []
    asyncio.run(_round(base, bodies[: min(4, requests)], 1, limit_s))  # warm-up: first calls allocate
    rss_start = rss_mb(pid) if pid else None
    for _ in range(rounds):
        t0 = time.perf_counter()
        results += asyncio.run(_round(base, bodies, clients, limit_s))
        walls.append(time.perf_counter() - t0)
        if pid:
            rss.append(round(rss_mb(pid), 1))
    done = sorted(s for k, s in results if k == "done")
    count = {k: sum(1 for kk, _ in results if kk == k) for k in ("done", "busy", "error", "hung")}
    if len(done) >= 2:
        q = statistics.quantiles(done, n=100, method="inclusive")
    else:
        q = [done[0] if done else float("nan")] * 99
    return {"requests": requests * rounds, "clients": clients, "images_per_request": n, "limit_s": limit_s,
            **count, "wall_s": round(sum(walls), 2), "answered_per_s": round(len(results) / sum(walls), 2),
            "results_per_s": round(count["done"] / sum(walls), 2), "p50_s": round(q[49], 3),
            "p99_s": round(q[98], 3), "max_s": round(max(s for _, s in results), 3),
            "rss_mb_after_warmup": None if rss_start is None else round(rss_start, 1), "rss_mb_per_round": rss}


def main() -> None:
    from imagegen.provenance import commit_label
    from imagegen.server.background import free_port

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run directories to serve (requests go round-robin over them)")
    ap.add_argument("--requests", type=int, default=200, help="requests per round")
    ap.add_argument("--clients", type=int, default=20, help="concurrent clients")
    ap.add_argument("--rounds", type=int, default=2, help="rounds (memory is compared between them)")
    ap.add_argument("--n", type=int, default=4, help="images per request")
    ap.add_argument("--limit", type=float, default=120.0, help="seconds a request may take, queue included")
    ap.add_argument("--max-queue", type=int, default=8, help="the server's --max-queue")
    ap.add_argument("--options", default="{}", help='family options as JSON, e.g. \'{"steps": 10}\' (each run gets '
                    "the ones its family takes)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of the server")
    ap.add_argument("--out", type=Path, default=None, help="write the row as JSON")
    args = ap.parse_args()
    port = free_port()
    proc = start_server(args.runs, port, args.max_queue, args.device, args.threads)
    try:
        row = run_load(f"http://127.0.0.1:{port}", proc.pid, len(args.runs), args.requests, args.clients, args.n,
                       args.limit, args.rounds, json.loads(args.options))
    finally:
        stop_server(proc)
    row = {"runs": " ".join(args.runs), "max_queue": args.max_queue, "device": args.device, **row,
           "commit": commit_label()}
    if args.out:
        save_row(row, args.out)
    else:
        for k, v in row.items():
            print(f"{k:<22} {v}")


if __name__ == "__main__":
    run_main(main)
