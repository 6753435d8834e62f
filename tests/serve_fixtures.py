"""Tiny trained runs of every family on the embedded digits set, for the serve tests (API and browser)."""

from __future__ import annotations

from pathlib import Path

from imagegen import registry
from imagegen.api import train

TINY_TRAIN = {"batch_size": 16, "log_every": 1, "sample_every": 2, "ckpt_every": 2, "sample_n": 16}


def train_tiny_runs(root: Path, families=("vae", "gan", "pixelcnn", "diffusion"), steps: int = 2) -> list[Path]:
    """One run per family, a couple of optimiser steps each (seconds on a CPU); the VAE is class-conditional
    so the label paths are exercised."""
    out = []
    for fam in families:
        model = dict(getattr(registry.get_family(fam), "TEST_CONFIG", {}))
        if fam == "vae":
            model["class_cond"] = True
        out.append(train(fam, out=root / f"{fam}-digits", data="digits", steps=steps, progress=False,
                         overrides={"model": model, "train": dict(TINY_TRAIN), "data": {"limit": 64}}))
    return out


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadedServer:
    """uvicorn serving ``app`` on a free loopback port in a background thread (the browser tests' server)."""

    def __init__(self, app):
        import threading

        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        import time

        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)
        return False
