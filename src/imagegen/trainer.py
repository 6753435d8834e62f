"""The one family-agnostic training loop.

It moves data, calls the family's ``train_step``, keeps the EMA, writes checkpoints, logs, and stops
on a budget (optimiser steps, thousands of images, or wall-clock minutes). Devices, mixed precision,
gradient accumulation and multi-process runs (``accelerate launch`` / ``torchrun``) come from
``accelerate``; only the main process writes files.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel

from . import checkpoint, registry
from .config import RunConfig, from_saved, replace
from .data import BatchSampler, load_dataset
from .errors import ImagegenError
from .evaluation import LOWER_IS_BETTER, evaluate_during_training, training_eval_options
from .families.base import default_optimizers
from .interrupt import StopRequest
from .latent import check_data_config, encode_dataset, load_first_stage
from .memory import check_training as check_training_memory

# datasets up to this size live on the accelerator, so a batch is one index lookup
_ON_DEVICE_BYTES = 2 * 1024**3


def _make_accelerator(cfg: RunConfig, fam):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    t = cfg.train
    if t.mixed_precision not in ("no", "bf16", "fp16"):
        raise ImagegenError(f"train.mixed_precision must be no, bf16 or fp16, got '{t.mixed_precision}'")
    if t.device not in ("auto", "cpu", "cuda"):
        raise ImagegenError(f"train.device must be auto, cpu or cuda, got '{t.device}'")
    if t.device == "cuda" and not torch.cuda.is_available():
        raise ImagegenError("train.device=cuda but no CUDA device is visible; use train.device=auto or cpu")
    cpu = t.device == "cpu" or not torch.cuda.is_available()
    mp = t.mixed_precision
    if cpu and mp == "fp16":
        raise ImagegenError("fp16 mixed precision needs a GPU; use train.mixed_precision=bf16 or no on CPU")
    from accelerate.state import AcceleratorState

    # a second train() in one process may ask for another mixed precision, which accelerate refuses once its
    # state exists; reset it as accelerate's own tests do (the process group, PartialState, is kept)
    AcceleratorState._reset_state()
    ddp = DistributedDataParallelKwargs(find_unused_parameters=bool(getattr(fam, "FIND_UNUSED_PARAMETERS", False)))
    return Accelerator(cpu=cpu, mixed_precision=mp, gradient_accumulation_steps=t.grad_accum_steps,
                       kwargs_handlers=[ddp])


class EMA:
    """An exponential moving average of the weights (and buffers) via torch's ``AveragedModel``.

    The decay warms up as min(decay, (1 + n) / (10 + n)) so short runs are not dominated by the random
    initialisation (the schedule used by many diffusion and GAN codebases)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self._decay_now = 0.0

        def ema_update(ema_params, params, num_averaged):
            if not ema_params[0].is_floating_point():  # integer buffers (BatchNorm's num_batches_tracked)
                torch._foreach_copy_(ema_params, params)
                return
            torch._foreach_lerp_(ema_params, params, 1.0 - self._decay_now)

        self.averaged = AveragedModel(model, multi_avg_fn=ema_update, use_buffers=True)
        self.averaged.requires_grad_(False)
        self.updates = 0

    @property
    def module(self) -> torch.nn.Module:
        return self.averaged.module

    def update(self, model: torch.nn.Module) -> None:
        self._decay_now = min(self.decay, (1 + self.updates) / (10 + self.updates))
        self.averaged.update_parameters(model)
        self.updates += 1


def _same_setup(saved: dict, cfg: RunConfig) -> str | None:
    """Name the first model/data setting that differs between a saved run and the requested one."""
    now = cfg.to_dict()
    if saved.get("family") != now["family"]:
        return f"family ({saved.get('family')} vs {now['family']})"
    for section in ("model", "data"):
        defaults = {f.name: f.default for f in dataclasses.fields(getattr(cfg, section))}
        for k, v in now[section].items():
            if section == "data" and k in ("download", "root"):
                continue  # where the files come from does not change the run
            if k not in saved.get(section, {}) and v == defaults.get(k):
                continue  # a setting added to the code after the run was saved, at its default
            if saved.get(section, {}).get(k) != v:
                return f"{section}.{k} ({saved.get(section, {}).get(k)!r} vs {v!r})"
    return None


def _budget_done(cfg: RunConfig, step: int, images: int, elapsed_s: float) -> bool:
    t = cfg.train
    return ((t.steps is not None and step >= t.steps) or (t.kimg is not None and images >= t.kimg * 1000)
            or (t.budget_minutes is not None and elapsed_s >= t.budget_minutes * 60))


def _progress_total(cfg: RunConfig, per_step_images: int) -> int | None:
    t = cfg.train
    totals = []
    if t.steps is not None:
        totals.append(t.steps)
    if t.kimg is not None:
        totals.append(math.ceil(t.kimg * 1000 / per_step_images))
    return min(totals) if totals else None


def save_grid(x: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """(N, C, H, W) in [-1, 1] -> one PNG grid, quantised as real images are."""
    from torchvision.utils import save_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nrow = nrow or max(1, int(math.ceil(math.sqrt(x.shape[0]))))
    save_image((x.detach().float().cpu().clamp(-1, 1) + 1) / 2, str(path), nrow=nrow, padding=1)
    return path


def preview_labels(cfg: RunConfig, info, n: int, device) -> torch.Tensor | None:
    """Cycle through the classes in preview grids of class-conditional models (``model.class_cond``)."""
    if cfg.class_conditional(info.num_classes):
        return torch.arange(n, device=device) % info.num_classes
    return None


def train(cfg: RunConfig, out: str | Path, *, fresh: bool = False, progress: bool = True) -> Path:
    """Train ``cfg`` into run directory ``out`` (resuming from its newest checkpoint unless ``fresh``).

    During the training loop a first Ctrl-C or SIGTERM ends the step in progress, writes a checkpoint and
    raises KeyboardInterrupt; running the same command again resumes from that step."""
    fam = registry.get_family(cfg.family)
    t = cfg.train
    if t.steps is None and t.kimg is None and t.budget_minutes is None:
        raise ImagegenError("no training budget: give --steps N, --kimg K or --budget 5m "
                            "(or train.steps / train.kimg / train.budget_minutes)")
    if t.grad_accum_steps < 1 or t.batch_size < 1:
        raise ImagegenError("train.batch_size and train.grad_accum_steps must be at least 1")
    out = Path(out)
    if t.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False

    accel = _make_accelerator(cfg, fam)
    main = accel.is_main_process
    accel.imagegen_grad_clip = t.grad_clip  # read by families.base.optimizer_step

    from accelerate.utils import set_seed

    set_seed(t.seed)  # the same on every rank, so every rank builds the same initial weights
    first_stage = None  # data.latent: the frozen autoencoder whose codes this run models (imagegen.latent)
    if cfg.data.latent:
        check_data_config(cfg)
        first_stage = load_first_stage(cfg.data.latent, device=accel.device)
        # a run directory -> its checkpoint file now, so a resume after the autoencoder trained on is refused
        cfg = replace(cfg, data=replace(cfg.data, latent=str(first_stage.path.resolve())))
    dataset = load_dataset(cfg.data, "train")
    pixel_info = dataset.info  # what the run's samples are: images, also for a latent model
    if first_stage is not None:
        dataset = encode_dataset(first_stage, dataset, cfg.data, progress=main and progress)
    info = dataset.info  # what the family models: the images, or the first stage's codes
    eval_opts = training_eval_options(cfg, pixel_info)  # checked before any step: fails now, not in an hour
    # the model and one batch must fit: a one-line error now instead of an allocator traceback mid-run
    check_training_memory(cfg, fam, info, accel.device, n_images=len(dataset),
                          data_bytes=dataset.images.numel() if dataset.images.numel() <= _ON_DEVICE_BYTES else 0)
    model = fam.build(cfg.model, info)
    optimizers = (fam.configure_optimizers(model, cfg.model, t) if hasattr(fam, "configure_optimizers")
                  else default_optimizers(model, cfg.model, t))
    ema = EMA(model, t.ema_decay) if t.ema_decay > 0 else None
    sampler = BatchSampler(len(dataset), t.batch_size, t.seed, accel.process_index, accel.num_processes)

    step, images_seen, elapsed_prev = 0, 0, 0.0
    last_saved = -1
    ckpt_path = None if fresh else checkpoint.latest(out)
    best_path = out / "checkpoints" / "best.safetensors"  # train.keep_best; not a ckpt-<step>: never pruned
    if fresh and main and (checkpoint.list_checkpoints(out) or best_path.exists()):
        for _, p in checkpoint.list_checkpoints(out):
            p.unlink()
        for p in (best_path, out / "metrics.jsonl", out / "evals.jsonl"):
            p.unlink(missing_ok=True)
    if ckpt_path is not None:
        ck = checkpoint.load(ckpt_path)
        diff = _same_setup(ck.meta["config"], cfg)
        saved_sha = ck.meta.get("latent", {}).get("first_stage", {}).get("sha256")
        if not diff and first_stage is not None and saved_sha != first_stage.sha256:
            diff = f"first stage (its file {first_stage.path} changed since the run was started)"
        if diff:
            raise ImagegenError(f"{out} holds a run with a different {diff}; resume it with the same settings, "
                                f"pick another --out, or pass --fresh to start over")
        ck.load_module(model)
        if ema is not None and ck.has_ema():
            ck.load_module(ema.module, "ema")
            ema.updates = int(ck.meta.get("ema_updates", 0))
            ema.averaged.n_averaged.fill_(max(1, ema.updates))
        ck.load_optimizers(optimizers)
        step, images_seen = int(ck.meta["step"]), int(ck.meta["images_seen"])
        elapsed_prev = float(ck.meta.get("elapsed_s", 0.0))
        sampler.load_state_dict(ck.meta["sampler"])
        last_saved = step
        checkpoint.set_rng_state(ck.tensors)
        if accel.num_processes > 1:  # only rank 0's generator was saved: give each rank a fresh stream
            torch.manual_seed(t.seed + 7919 * accel.process_index + step)
    else:
        # ranks share the initial weights (seeded above) but must draw different noise from here on
        torch.manual_seed(t.seed + 7919 * accel.process_index)

    if main:
        out.mkdir(parents=True, exist_ok=True)
        checkpoint.atomic_write_bytes(cfg.to_json().encode(), out / "config.json")  # never torn by a kill

    names = list(optimizers)
    prepared = accel.prepare(model, *optimizers.values())
    model, opts = prepared[0], dict(zip(names, prepared[1:]))
    device = accel.device
    if ema is not None:
        ema.averaged.to(device)
    if dataset.images.numel() <= _ON_DEVICE_BYTES:
        dataset = dataset.to(device)
    per_step_images = sampler.batch_size * accel.num_processes * t.grad_accum_steps

    writer = None
    if main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))
    from tqdm.auto import tqdm

    bar = tqdm(total=_progress_total(cfg, per_step_images), initial=step, disable=not (main and progress),
               dynamic_ncols=True, mininterval=1.0, desc=f"{cfg.family} {info.name}")
    preview_gen_seed = t.seed + 12345
    bad = torch.zeros((), dtype=torch.bool, device=device)
    last_logs: dict = {}
    t_start = time.perf_counter()
    t_log, images_log = t_start, images_seen

    def elapsed() -> float:
        return elapsed_prev + time.perf_counter() - t_start

    interrupted = False  # stopped by a signal before the budget was spent (the same on every rank)

    def stop_now() -> bool:
        nonlocal interrupted
        budget = _budget_done(cfg, step, images_seen, elapsed())
        flags = torch.tensor([float(budget), float(stop.signal is not None and not budget)], device=device)
        if accel.num_processes > 1:  # wall-clock budgets (and signals) may disagree: rank 0 decides
            torch.distributed.broadcast(flags, src=0)
        interrupted = bool(flags[1].item())
        return bool(flags[0].item()) or interrupted

    def check_finite(where: str) -> None:
        if bool(accel.reduce(bad.float(), "max").item() if accel.num_processes > 1 else bad.item()):
            last = checkpoint.latest(out)
            keep = f"the last good checkpoint is {last}" if last else "no checkpoint was written"
            raise ImagegenError(f"training diverged: the loss became NaN or Inf by step {step} ({where}); {keep}. "
                                f"Lower train.lr, keep train.grad_clip on, or use train.mixed_precision=no")

    def save_checkpoint() -> None:
        nonlocal last_saved
        check_finite("before saving a checkpoint")
        last_saved = step
        if not main:
            return
        write_checkpoint(checkpoint.checkpoint_path(out, step))
        checkpoint.prune(out, t.keep_last)

    def write_checkpoint(path: Path, **extra_meta) -> None:
        meta = {"family": cfg.family, "config": cfg.to_dict(), "data_info": pixel_info.to_dict(), "step": step,
                "images_seen": images_seen, "elapsed_s": elapsed(), "sampler": sampler.state_dict(),
                "world_size": accel.num_processes, "ema_updates": ema.updates if ema else 0,
                "version": _version(), **extra_meta}
        if first_stage is not None:
            meta["latent"] = {"first_stage": first_stage.record(out), "data_info": info.to_dict()}
        checkpoint.save(path, meta=meta, model=accel.unwrap_model(model), ema=ema.module if ema else None,
                        optimizers=opts_inner(), include_rng=True)

    def opts_inner():
        return {k: getattr(v, "optimizer", v) for k, v in opts.items()}

    def write_preview() -> None:
        if not main:
            return
        net = ema.module if ema is not None else accel.unwrap_model(model)
        was_training = net.training
        net.eval()
        g = torch.Generator(device=device).manual_seed(preview_gen_seed)
        with torch.no_grad():
            if hasattr(fam, "preview"):  # a family without a sampler of its own (the autoencoder)
                x = fam.preview(net, dataset.batch(torch.arange(min(t.sample_n, len(dataset)), device=device)).x)
            else:
                x = fam.sample(net, t.sample_n, labels=preview_labels(cfg, info, t.sample_n, device), generator=g,
                               **getattr(fam, "PREVIEW_OPTIONS", {}))
                if first_stage is not None:
                    x = first_stage.decode(x)
        net.train(was_training)
        save_grid(x, out / "samples" / f"step-{step:08d}.png")

    last_eval = -1
    best = None  # the best value so far of the train.keep_best result
    if t.keep_best and best_path.is_file():  # resuming: beat the run's best so far, not the first new one
        saved = checkpoint.read_meta(best_path).get("best", {})
        if saved.get("metric") == t.keep_best:
            best = float(saved["value"])

    def keep_if_best(scores: dict) -> None:
        nonlocal best
        value = scores.get(t.keep_best)
        if value is None or not math.isfinite(value):
            return
        lower = t.keep_best in LOWER_IS_BETTER
        if best is not None and not (value < best if lower else value > best):
            return
        best = float(value)
        write_checkpoint(best_path, best={"metric": t.keep_best, "value": float(value), "step": step,
                                          "n": eval_opts.n, "lower_is_better": lower})

    def run_eval() -> None:
        """train.eval_every: score the EMA weights now; the time it takes is not charged to the budget."""
        nonlocal t_start, t_log, last_eval
        last_eval = step
        if main:
            t0 = time.perf_counter()
            net = ema.module if ema is not None else accel.unwrap_model(model)
            was_training = net.training
            net.eval()
            res = evaluate_during_training(net, cfg, pixel_info, step, replace(eval_opts), device, out,
                                           first_stage=first_stage)
            net.train(was_training)
            spent = time.perf_counter() - t0
            t_start += spent  # the training clock (and the budget) skips the evaluation
            t_log += spent
            scores = {k: v for k, v in res["summary"].items() if isinstance(v, (int, float))}
            with open(out / "evals.jsonl", "a") as f:
                f.write(json.dumps({"step": step, "kimg": images_seen / 1000, "elapsed_s": round(elapsed(), 3),
                                    "n": eval_opts.n, **scores, "eval_s": round(spent, 2)}) + "\n")
            for k, v in scores.items():
                writer.add_scalar(f"eval/{k}", v, step)
            if t.keep_best:
                keep_if_best(scores)
            bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in scores.items()
                                                    if not k.endswith("_std")) + f" ({eval_opts.n} samples)")
        accel.wait_for_everyone()

    model.train()
    with StopRequest("stopping after this step and saving a checkpoint") as stop:  # finish the step, save, stop
        while not stop_now():
            for _ in range(t.grad_accum_steps):
                idx = sampler.next().to(device)
                batch = dataset.batch(idx, hflip=cfg.data.hflip, augment=cfg.data.augment)
                with accel.accumulate(model), accel.autocast():
                    logs = fam.train_step(model, batch, opts, step, accel)
                loss = logs.get("loss")
                if loss is not None:
                    bad |= ~torch.isfinite(torch.as_tensor(loss, device=device)).all()
            if ema is not None:
                ema.update(accel.unwrap_model(model))
            step += 1
            images_seen += per_step_images
            last_logs = logs
            bar.update(1)

            if step % t.log_every == 0:
                check_finite("while training")
                now = time.perf_counter()
                rate = (images_seen - images_log) / max(now - t_log, 1e-9)
                t_log, images_log = now, images_seen
                scalars = {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in logs.items()
                           if _is_scalar(v)}
                if main:
                    record = {"step": step, "kimg": images_seen / 1000, "elapsed_s": round(elapsed(), 3),
                              "img_per_s": round(rate, 2), **scalars}
                    with open(out / "metrics.jsonl", "a") as f:
                        f.write(json.dumps(record) + "\n")
                    for k, v in scalars.items():
                        writer.add_scalar(f"train/{k}", v, step)
                    writer.add_scalar("train/img_per_s", rate, step)
                    bar.set_postfix({"loss": f"{scalars.get('loss', float('nan')):.4g}", "img/s": f"{rate:.0f}"},
                                    refresh=False)
            if t.sample_every and step % t.sample_every == 0:
                write_preview()
            if eval_opts is not None and step % t.eval_every == 0:
                run_eval()
            if t.ckpt_every and step % t.ckpt_every == 0:
                save_checkpoint()

    bar.close()
    check_finite("at the end of training")
    if last_saved != step:
        save_checkpoint()
    if interrupted:
        if writer is not None:
            writer.close()
        accel.wait_for_everyone()
        accel.end_training()
        if main:
            print(f"stopped by {stop.signal} at step {step} ({images_seen / 1000:.1f} kimg, {elapsed():.0f} s); "
                  f"checkpoint {checkpoint.checkpoint_path(out, step)}; run the same command again to continue",
                  file=sys.stderr, flush=True)
        raise KeyboardInterrupt
    if t.sample_every and not (out / "samples" / f"step-{step:08d}.png").exists():
        write_preview()
    if eval_opts is not None and last_eval != step:
        run_eval()  # the final weights are always scored
    if writer is not None:
        writer.close()
    accel.wait_for_everyone()
    if main and progress:
        scalars = {k: round(float(v.detach() if torch.is_tensor(v) else v), 5) for k, v in last_logs.items()
                   if _is_scalar(v)}
        print(f"trained {cfg.family} to step {step} ({images_seen / 1000:.1f} kimg, {elapsed():.0f} s): {scalars}")
    accel.end_training()
    return out


def _is_scalar(v) -> bool:
    return isinstance(v, (int, float)) or (torch.is_tensor(v) and v.numel() == 1)


def _version() -> str:
    from .provenance import __version__

    return __version__


def load_run_config(run_dir: str | Path) -> RunConfig:
    p = Path(run_dir) / "config.json"
    if not p.is_file():
        raise ImagegenError(f"{run_dir} has no config.json; is it a run directory made by 'imagegen train'?")
    return from_saved(json.loads(p.read_text()))
