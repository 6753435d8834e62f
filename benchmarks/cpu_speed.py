"""CPU speed levers for every family (issue 20, docs/speedrun.md): one training step of a preset's network, through
the family's own ``train_step`` and accelerate's autocast exactly as the trainer runs it, in float32, bf16 autocast,
channels_last and (for the diffusion UNet) torch.compile; images per second and achieved GFLOP/s.

    OMP_NUM_THREADS=2 python benchmarks/cpu_speed.py --threads 2 \\
        --presets ldm-mnist-5m,latent-pixelcnn-mnist-5m,latent-vae-mnist-5m,gan-mnist-5m,ddpm-mnist,vae-mnist

FLOPs are counted by ``torch.utils.flop_counter`` over one whole training step (forward and backward, every
network a GAN step runs), so GFLOP/s = counted FLOPs x steps per second. A latent preset (``ldm-*``, ``latent-*``)
runs on its codes: the autoencoder-mnist first stage's 4x7x7. Run it alone on the machine. Prints a table and
JSON lines.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from torch.utils.flop_counter import FlopCounterMode

from _bench import run_main  # benchmarks/_bench.py, beside this script
from imagegen import config, registry
from imagegen.data import Batch, DataInfo
from imagegen.families.base import default_optimizers
from imagegen.provenance import commit_label, hardware_label

CASES = ("fp32", "bf16", "fp32-cl", "bf16-cl", "bf16-compile")
CODES = DataInfo(channels=4, size=7, num_classes=10, bits=8, name="codes")  # autoencoder-mnist's latent
PIXELS = DataInfo(channels=1, size=28, num_classes=10, bits=8, name="mnist")


def _setup(preset: str, case: str):
    cfg = config.resolve(preset=preset)
    fam = registry.get_family(cfg.family)
    if "compile" in case:
        if not hasattr(cfg.model, "compile"):
            return None
        cfg.model.compile = True
    info = CODES if preset.startswith(("ldm-", "latent-")) else PIXELS
    torch.manual_seed(0)
    model = fam.build(cfg.model, info)
    AcceleratorState._reset_state()  # a new mixed precision per case, as the trainer does
    accel = Accelerator(cpu=True, mixed_precision="bf16" if "bf16" in case else "no")
    opts = (fam.configure_optimizers(model, cfg.model, cfg.train) if hasattr(fam, "configure_optimizers")
            else default_optimizers(model, cfg.model, cfg.train))
    if "cl" in case.split("-"):
        model = model.to(memory_format=torch.channels_last)
    model.train()
    bs = cfg.train.batch_size
    x = torch.rand(bs, info.channels, info.size, info.size) * 2 - 1
    if "cl" in case.split("-"):
        x = x.contiguous(memory_format=torch.channels_last)
    batch = Batch(x=x, y=torch.randint(0, 10, (bs,)))

    def step(i: int) -> None:
        with accel.autocast():
            fam.train_step(model, batch, opts, i, accel, grad_clip=cfg.train.grad_clip)

    return step, bs, sum(p.numel() for p in model.parameters())


def measure(preset: str, case: str, seconds: float, warm: int) -> dict | None:
    made = _setup(preset, case)
    if made is None:
        return None
    step, bs, params = made
    for i in range(warm):
        step(i)
    with FlopCounterMode(display=False) as counter:
        step(warm)
    flops = counter.get_total_flops()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step(warm + 1 + n)
        n += 1
    dt = (time.perf_counter() - t0) / n
    return {"preset": preset, "case": case, "batch": bs, "params_M": round(params / 1e6, 2), "steps": n,
            "img_s": round(bs / dt, 1), "GFLOP_per_step": round(flops / 1e9, 2), "GFLOP_s": round(flops / dt / 1e9, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="ldm-mnist-5m,latent-pixelcnn-mnist-5m,latent-vae-mnist-5m,gan-mnist-5m")
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma list of: {', '.join(CASES)}")
    ap.add_argument("--seconds", type=float, default=8.0, help="timed seconds per case (after the warm-up)")
    ap.add_argument("--warm", type=int, default=3, help="untimed steps first (torch.compile compiles in these)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    header = {"hardware": hardware_label("cpu"), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "commit": commit_label()}
    print(json.dumps(header), flush=True)
    rows = []
    for preset in [p for p in args.presets.split(",") if p]:
        for case in [c for c in args.cases.split(",") if c]:
            try:
                row = measure(preset, case, args.seconds, args.warm)
            except Exception as e:  # one case failing (no compiler for torch.compile, ...) keeps the others
                row = {"preset": preset, "case": case, "error": repr(e)[:160]}
            if row is not None:
                print(json.dumps(row), flush=True)
                rows.append(row)
    print("\n| preset | case | batch | img/s | GFLOP/step | GFLOP/s |\n| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['preset']} | {r['case']} | {r.get('batch', '-')} | {r.get('img_s', r.get('error'))} | "
              f"{r.get('GFLOP_per_step', '-')} | {r.get('GFLOP_s', '-')} |")


if __name__ == "__main__":
    run_main(main)
