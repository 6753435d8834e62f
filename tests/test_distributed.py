"""Two CPU processes (gloo) through torchrun: the distributed path trains, and only rank 0 writes."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from imagegen import checkpoint


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_run(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed beside this Python")
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [torchrun, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "imagegen.cli", "train", "vae", "--data", "digits", "--steps", "4", "--out", str(out),
           "--set", "model.latent_dim=4", "--set", "model.base_channels=8", "--set", "model.channel_mult=1,1",
           "--set", "train.batch_size=8", "--set", "train.log_every=1", "--set", "train.sample_every=2",
           "--set", "train.ckpt_every=2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run directory:") == 1  # printed by rank 0 only
    meta = checkpoint.load(out).meta
    assert meta["world_size"] == 2
    assert meta["images_seen"] == 4 * 8 * 2  # both processes' images count
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # one writer: no duplicated lines
    assert [s for s, _ in checkpoint.list_checkpoints(out)] == [2, 4]
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step-00000002.png", "step-00000004.png"]
    assert len(list((out / "tb").iterdir())) == 1
