"""Diffusion speed: training-step and sampling throughput of our UNet, optionally side by side with the
diffusers UNet2DModel peer in the same process (same layout, batch, precision and FLOP count).

    # CPU (what a laptop or the shared 2-core box can run): the ddpm-mnist preset, short
    python benchmarks/diffusion_speed.py --threads 2

    # GPU: the DDPM CIFAR-10 UNet (35.7M params) in fp32 / bf16 / bf16+channels_last / +torch.compile,
    # training at batch 128 and DDIM-50 sampling at batch 1000, ours and diffusers' (needs diffusers)
    python benchmarks/diffusion_speed.py --device cuda --preset ddpm-cifar10 --peer

Training rows time full optimiser steps (forward incl. noising, backward, AdamW; fused on CUDA);
sampling rows time the family's ``sample`` (DDIM, deterministic) for ours and a DDIMScheduler loop for
the peer. FLOPs come from ``torch.utils.flop_counter`` on one forward pass at batch 1; TFLOP/s counts
3x forward FLOPs per training image and steps x forward FLOPs per sample. The peer code mirrors
/work/shared/peers/diffusers_unet_speed.py (copied, not imported). Prints a table and JSON lines.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from _bench import run_main  # benchmarks/_bench.py, beside this script
from imagegen import config
from imagegen.data import DataInfo
from imagegen.families import diffusion as D
from imagegen.provenance import commit_label, hardware_label


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _images_per_s(step, warm: int, steps: int, bs: int, device) -> float:
    """Run ``step`` ``warm`` times untimed, then ``steps`` times timed; images per second."""
    for _ in range(warm):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return bs * steps / (time.perf_counter() - t0)


def _print_table(rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    widths = {k: max(len(k), *(len(str(r.get(k, ""))) for r in rows)) for k in keys}
    print("  ".join(f"{k:<{widths[k]}}" for k in keys))
    for r in rows:
        print("  ".join(f"{str(r.get(k, '')):<{widths[k]}}" for k in keys))


def forward_flops(net_call, *args) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        net_call(*args)
    return float(fc.get_total_flops())


# ----------------------------------------------------------------------------------------------- ours


def build_ours(model_cfg, info: DataInfo, device, channels_last=False, compile_=False) -> D.Diffusion:
    cfg = config.replace(model_cfg, channels_last=channels_last, compile=compile_)
    torch.manual_seed(0)
    return D.build(cfg, info).to(device)


def bench_train_ours(model, info, device, bs, bf16, steps, warm) -> float:
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, fused=device.type == "cuda")
    x0 = torch.rand(bs, info.channels, info.size, info.size, device=device) * 2 - 1
    y = torch.randint(0, info.num_classes, (bs,), device=device) if model.num_classes else None

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(x0, y)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return _images_per_s(step, warm, steps, bs, device)


def bench_sample_ours(model, device, n, steps, bf16) -> float:
    model.eval()
    model.cfg.sample_bf16 = bf16  # read at call time: the autocast switch for sampling on CUDA
    g = torch.Generator(device=device).manual_seed(0)
    D.sample(model, min(n, 8), generator=g, sampler="ddim", steps=2)  # warm-up (and compile)
    _sync(device)
    t0 = time.perf_counter()
    D.sample(model, n, generator=g, sampler="ddim", steps=steps)
    _sync(device)
    return n / (time.perf_counter() - t0)


# ----------------------------------------------------------------------------------------------- peer


def build_peer(model_cfg, info: DataInfo, device):
    """diffusers' UNet2DModel in the same layout as our UNet (the DDPM layout of the peer script)."""
    from diffusers import UNet2DModel

    ch, mult = model_cfg.base_channels, list(model_cfg.channel_mult)
    res, down, up = info.size, [], []
    for _ in mult:
        down.append("AttnDownBlock2D" if res in model_cfg.attn_resolutions else "DownBlock2D")
        res //= 2
    up = ["AttnUpBlock2D" if b == "AttnDownBlock2D" else "UpBlock2D" for b in reversed(down)]
    return UNet2DModel(sample_size=info.size, in_channels=info.channels, out_channels=info.channels,
                       layers_per_block=model_cfg.num_res_blocks, block_out_channels=tuple(ch * m for m in mult),
                       down_block_types=tuple(down), up_block_types=tuple(up), dropout=model_cfg.dropout,
                       norm_num_groups=min(32, ch)).to(device)


def bench_train_peer(model, info, device, bs, bf16, steps, warm, channels_last, compile_) -> float:
    from diffusers import DDPMScheduler

    model.train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, fused=device.type == "cuda")
    sched = DDPMScheduler(num_train_timesteps=1000)
    fwd = torch.compile(model) if compile_ else model
    x0 = torch.rand(bs, info.channels, info.size, info.size, device=device) * 2 - 1

    def step():
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (bs,), device=device)
        xt = sched.add_noise(x0, noise, t)
        if channels_last:
            xt = xt.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = fwd(xt, t).sample
        loss = torch.nn.functional.mse_loss(out.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return _images_per_s(step, warm, steps, bs, device)


def bench_sample_peer(model, info, device, n, steps, bf16) -> float:
    from diffusers import DDIMScheduler

    model.eval()
    sch = DDIMScheduler(num_train_timesteps=1000)

    def run(n_, steps_):
        sch.set_timesteps(steps_)
        x = torch.randn(n_, info.channels, info.size, info.size, device=device)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            for t in sch.timesteps:
                x = sch.step(model(x, t).sample.float(), t, x).prev_sample
        return x

    run(min(n, 8), 2)
    _sync(device)
    t0 = time.perf_counter()
    run(n, steps)
    _sync(device)
    return n / (time.perf_counter() - t0)


# ----------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default=None, help="default: ddpm-mnist on CPU, ddpm-cifar10 on CUDA")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--train-batch", type=int, default=None, help="default 64 (CPU) / 128 (CUDA)")
    ap.add_argument("--train-steps", type=int, default=None, help="timed steps; default 5 (CPU) / 30 (CUDA)")
    ap.add_argument("--warm", type=int, default=None, help="untimed steps first; default 2 / 10")
    ap.add_argument("--sample-n", type=int, default=None, help="default 64 (CPU) / 1000 (CUDA)")
    ap.add_argument("--sample-steps", type=int, default=None, help="DDIM steps; default 10 (CPU) / 50 (CUDA)")
    ap.add_argument("--peer", action="store_true", help="also run diffusers' UNet2DModel (pip install diffusers)")
    ap.add_argument("--class-cond", action="store_true", help="ours with label embedding (the peer has none)")
    ap.add_argument("--cases", default=None,
                    help="comma list of fp32,bf16,bf16-cl,bf16-cl-compile (default: fp32 on CPU, all on CUDA)")
    args = ap.parse_args()

    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device is visible")
    if args.threads:
        torch.set_num_threads(args.threads)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    device = torch.device(args.device)
    preset = args.preset or ("ddpm-cifar10" if cuda else "ddpm-mnist")
    cfg = config.resolve(preset=preset, overrides={"model": {"class_cond": args.class_cond}})
    size = 32 if "cifar" in cfg.data.name else 28
    channels = 3 if "cifar" in cfg.data.name else 1
    info = DataInfo(channels=channels, size=size, num_classes=10)
    bs = args.train_batch or (128 if cuda else 64)
    steps = args.train_steps or (30 if cuda else 5)
    warm = args.warm if args.warm is not None else (10 if cuda else 2)
    n_sample = args.sample_n or (1000 if cuda else 64)
    s_steps = args.sample_steps or (50 if cuda else 10)
    cases = (args.cases or ("fp32,bf16,bf16-cl,bf16-cl-compile" if cuda else "fp32")).split(",")

    hw = hardware_label(device)
    ours0 = build_ours(cfg.model, info, device)
    params = sum(p.numel() for p in ours0.parameters())
    x1 = torch.zeros(1, channels, size, size, device=device)
    flops = forward_flops(ours0.unet, x1, torch.tensor([500.0], device=device))
    meta = {"preset": preset, "params_M": round(params / 1e6, 3), "fwd_GFLOP_per_img": round(flops / 1e9, 3),
            "device": hw, "torch": torch.__version__, "commit": commit_label(), "train_batch": bs,
            "sample_n": n_sample, "ddim_steps": s_steps}
    print(json.dumps({"case": "info", "impl": "ours", **meta}), flush=True)
    peer_flops = None
    if args.peer:
        peer0 = build_peer(cfg.model, info, device)
        peer_flops = forward_flops(lambda x, t: peer0(x, t), x1, torch.tensor([500], device=device))
        print(json.dumps({"case": "info", "impl": "diffusers", "params_M": round(
            sum(p.numel() for p in peer0.parameters()) / 1e6, 3), "fwd_GFLOP_per_img": round(peer_flops / 1e9, 3)}),
            flush=True)
        del peer0
    del ours0

    rows = []
    for case in cases:
        bf16, cl, comp = "bf16" in case, "cl" in case.split("-"), "compile" in case
        impls = ["ours"] + (["diffusers"] if args.peer else [])
        for impl in impls:
            row = {"impl": impl, "case": case}
            try:
                f = flops if impl == "ours" else peer_flops
                if impl == "ours":
                    m = build_ours(cfg.model, info, device, channels_last=cl, compile_=comp)
                    ips = bench_train_ours(m, info, device, bs, bf16, steps, warm)
                    sps = bench_sample_ours(m, device, n_sample, s_steps, bf16)
                else:
                    m = build_peer(cfg.model, info, device)
                    ips = bench_train_peer(m, info, device, bs, bf16, steps, warm, cl, comp)
                    sps = bench_sample_peer(m, info, device, n_sample, s_steps, bf16)
                row.update({"train_img_s": round(ips, 2), "train_TFLOP_s": round(3 * f * ips / 1e12, 3),
                            f"ddim{s_steps}_img_s": round(sps, 2),
                            "sample_TFLOP_s": round(s_steps * f * sps / 1e12, 3)})
                del m
            except Exception as e:  # one failing case (e.g. no compiler for torch.compile) keeps the rest
                row["error"] = repr(e)[:200]
            print(json.dumps({**row, **{k: meta[k] for k in ("preset", "device", "commit")}}), flush=True)
            rows.append(row)
            if cuda:
                torch.cuda.empty_cache()
    print()
    print(f"# {preset}: {meta['params_M']}M params, {meta['fwd_GFLOP_per_img']} GFLOP/forward/img, {hw}, "
          f"torch {torch.__version__}, commit {meta['commit']}, train batch {bs}, sample n {n_sample}")
    _print_table(rows)


if __name__ == "__main__":
    run_main(main)
