"""The short version of benchmarks/serve_load.py: 2 rounds of 40 requests from 8 concurrent clients against
``imagegen serve`` (a subprocess) with tiny models and a short queue, so some answers are busy. Every request
ends in a result or a one-line busy answer in time, none hangs or fails, and the server's memory is flat
from the first round to the second."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("psutil")

from serve_fixtures import tiny_runs  # noqa: E402

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _bench_module(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_serve_load", BENCH / "serve_load.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_burst_of_requests_all_end_in_time_and_memory_stays_flat(tmp_path_factory, monkeypatch):
    load = _bench_module(monkeypatch)
    from imagegen.server.background import free_port

    runs = [p for p in tiny_runs(tmp_path_factory) if p.name.split("-")[0] in ("vae", "gan", "diffusion")]
    port = free_port()
    proc = load.start_server([str(p) for p in runs], port, max_queue=2, threads=1)
    try:
        row = load.run_load(f"http://127.0.0.1:{port}", proc.pid, len(runs), requests=40, clients=8, n=4,
                            limit_s=60.0, rounds=2, options={"steps": 3})
        assert proc.poll() is None  # still up
    finally:
        load.stop_server(proc)
    assert row["hung"] == 0 and row["error"] == 0, row
    assert row["done"] + row["busy"] == 80 and row["done"] >= 20, row
    assert row["max_s"] < 60.0
    first, second = row["rss_mb_per_round"]
    assert second - first < 40, row  # MB: the second round adds no memory worth the name
