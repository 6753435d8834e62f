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
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from torch.optim.swa_utils import AveragedModel
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from . import checkpoint, registry
from .config import RunConfig, from_saved, replace
from .data import BatchSampler, DataInfo, ImageDataset, load_dataset
from .errors import ImagegenError
from .evaluation import LOWER_IS_BETTER, EvalOptions, evaluate_during_training, training_eval_options
from .families.base import default_optimizers
from .interrupt import StopRequest
from .latent import FirstStage, check_data_config, encode_dataset, load_first_stage
from .memory import check_training as check_training_memory
from .provenance import __version__

# datasets up to this size live on the accelerator, so a batch is one index lookup
_ON_DEVICE_BYTES = 2 * 1024**3


def _make_accelerator(cfg: RunConfig, fam) -> Accelerator:
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
    from torchvision.utils import save_image  # torchvision takes over a second to import: only when saving

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


@dataclass
class Run:
    """What one training run is made of, set up once before the loop (``train`` builds it)."""

    cfg: RunConfig
    out: Path
    fam: ModuleType
    accel: Accelerator
    model: torch.nn.Module  # as accelerate prepared it (maybe DDP-wrapped)
    opts: dict  # name -> optimiser, as accelerate prepared them
    ema: EMA | None
    sampler: BatchSampler
    dataset: ImageDataset  # what the family models: images, or a first stage's codes
    info: DataInfo  # of ``dataset``
    pixel_info: DataInfo  # what the run's samples are: images, also for a latent model
    first_stage: FirstStage | None  # data.latent: the frozen autoencoder whose codes this run models
    eval_opts: EvalOptions | None  # train.eval_every: what to score during training
    writer: SummaryWriter | None  # TensorBoard, on the main process only
    bar: tqdm
    per_step_images: int  # images per optimiser step, over every process and accumulation step

    @property
    def main(self) -> bool:
        return self.accel.is_main_process

    @property
    def device(self) -> torch.device:
        return self.accel.device

    @property
    def best_path(self) -> Path:
        return best_checkpoint_path(self.out)

    def eval_net(self) -> torch.nn.Module:
        """The weights previews and evaluations use: the EMA copy, else the raw model."""
        return self.ema.module if self.ema is not None else self.accel.unwrap_model(self.model)


@dataclass
class TrainState:
    """What the loop advances, in one place: the counters a checkpoint records (a resumed run starts from
    them), the clocks, and the marks of the last checkpoint, evaluation and best result."""

    step: int = 0
    images_seen: int = 0
    elapsed_prev_s: float = 0.0  # training seconds of the processes before this one (a resumed run)
    t_start: float = 0.0  # perf_counter() when this process's clock started; moved on by evaluations
    t_log: float = 0.0  # perf_counter() of the last log line (its img/s is measured from here)
    images_log: int = 0  # images_seen at the last log line
    last_saved: int = -1  # the step of the newest checkpoint
    last_eval: int = -1  # the step of the last evaluation
    best: float | None = None  # the best value so far of the train.keep_best result
    interrupted: bool = False  # stopped by a signal before the budget was spent (the same on every rank)
    last_logs: dict = field(default_factory=dict)  # what the last train_step returned
    bad: torch.Tensor | None = None  # () bool on the device: a loss became NaN/Inf since the last check

    def elapsed(self) -> float:
        """Training seconds so far, over every process of the run; evaluation time is not counted."""
        return self.elapsed_prev_s + time.perf_counter() - self.t_start


def best_checkpoint_path(out: Path) -> Path:
    """train.keep_best's checkpoint; not a ckpt-<step>, so never pruned."""
    return out / "checkpoints" / "best.safetensors"


def train(cfg: RunConfig, out: str | Path, *, fresh: bool = False, progress: bool = True) -> Path:
    """Train ``cfg`` into run directory ``out`` (resuming from its newest checkpoint unless ``fresh``).

    During the training loop a first Ctrl-C or SIGTERM ends the step in progress, writes a checkpoint and
    raises KeyboardInterrupt; running the same command again resumes from that step."""
    # Check the request.
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

    # Set up the devices and the seed.
    accel = _make_accelerator(cfg, fam)
    main = accel.is_main_process
    set_seed(t.seed)  # the same on every rank, so every rank builds the same initial weights

    # Load the data (a latent model: encode it with its first stage).
    first_stage = None
    if cfg.data.latent:
        check_data_config(cfg)
        first_stage = load_first_stage(cfg.data.latent, device=accel.device)
        # a run directory -> its checkpoint file now, so a resume after the autoencoder trained on is refused
        cfg = replace(cfg, data=replace(cfg.data, latent=str(first_stage.path.resolve())))
    dataset = load_dataset(cfg.data, "train")
    pixel_info = dataset.info
    if first_stage is not None:
        dataset = encode_dataset(first_stage, dataset, cfg.data, progress=main and progress)
    info = dataset.info
    eval_opts = training_eval_options(cfg, pixel_info)  # checked before any step: fails now, not in an hour
    # the model and one batch must fit: a one-line error now instead of an allocator traceback mid-run
    check_training_memory(cfg, fam, info, accel.device, n_images=len(dataset),
                          data_bytes=dataset.images.numel() if dataset.images.numel() <= _ON_DEVICE_BYTES else 0)

    # Build the model, its optimisers, the EMA copy and the batch order.
    model = fam.build(cfg.model, info)
    optimizers = (fam.configure_optimizers(model, cfg.model, t) if hasattr(fam, "configure_optimizers")
                  else default_optimizers(model, cfg.model, t))
    ema = EMA(model, t.ema_decay) if t.ema_decay > 0 else None
    sampler = BatchSampler(len(dataset), t.batch_size, t.seed, accel.process_index, accel.num_processes)

    # Resume from the newest checkpoint, or start over.
    state = TrainState()
    ckpt_path = None if fresh else checkpoint.latest(out)
    if fresh and main:
        clear_run(out)
    if ckpt_path is not None:
        resume(ckpt_path, cfg, out, model, ema, optimizers, sampler, first_stage, accel, state)
    else:
        # ranks share the initial weights (seeded above) but must draw different noise from here on
        torch.manual_seed(t.seed + 7919 * accel.process_index)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        checkpoint.atomic_write_bytes(cfg.to_json().encode(), out / "config.json")  # never torn by a kill

    # Place everything on the devices.
    names = list(optimizers)
    prepared = accel.prepare(model, *optimizers.values())
    model, opts = prepared[0], dict(zip(names, prepared[1:]))
    if ema is not None:
        ema.averaged.to(accel.device)
    if dataset.images.numel() <= _ON_DEVICE_BYTES:
        dataset = dataset.to(accel.device)
    per_step_images = sampler.batch_size * accel.num_processes * t.grad_accum_steps

    # Set up logging.
    writer = SummaryWriter(str(out / "tb")) if main else None
    bar = tqdm(total=_progress_total(cfg, per_step_images), initial=state.step, disable=not (main and progress),
               dynamic_ncols=True, mininterval=1.0, desc=f"{cfg.family} {info.name}")
    run = Run(cfg, out, fam, accel, model, opts, ema, sampler, dataset, info, pixel_info, first_stage, eval_opts,
              writer, bar, per_step_images)
    state.bad = torch.zeros((), dtype=torch.bool, device=run.device)
    state.t_start = state.t_log = time.perf_counter()
    state.images_log = state.images_seen
    state.best = best_so_far(run)

    # The training loop: one optimiser step per pass, until the budget is spent or a signal arrives.
    model.train()
    with StopRequest("stopping after this step and saving a checkpoint") as stop:  # finish the step, save, stop
        while not stop_now(run, state, stop):
            # Accumulate gradients over train.grad_accum_steps batches.
            for _ in range(t.grad_accum_steps):
                idx = sampler.next().to(run.device)
                batch = dataset.batch(idx, hflip=cfg.data.hflip, augment=cfg.data.augment)
                with accel.accumulate(model), accel.autocast():
                    logs = fam.train_step(model, batch, opts, state.step, accel, grad_clip=t.grad_clip)
                loss = logs.get("loss")
                if loss is not None:
                    state.bad |= ~torch.isfinite(torch.as_tensor(loss, device=run.device)).all()

            # Update the EMA and the counters.
            if ema is not None:
                ema.update(accel.unwrap_model(model))
            state.step += 1
            state.images_seen += per_step_images
            state.last_logs = logs
            bar.update(1)

            # Log, preview, evaluate and save, each on its own period.
            if state.step % t.log_every == 0:
                log_step(run, state, logs)
            if t.sample_every and state.step % t.sample_every == 0:
                write_preview(run, state)
            if eval_opts is not None and state.step % t.eval_every == 0:
                run_eval(run, state)
            if t.ckpt_every and state.step % t.ckpt_every == 0:
                save_checkpoint(run, state)

    # Fit what the family fits in closed form once gradient training ends, then save the last step.
    check_finite(run, state, "at the end of training")
    if not state.interrupted:
        after_training(run, state)
    bar.close()
    if state.last_saved != state.step:
        save_checkpoint(run, state)
    if state.interrupted:
        close(run)
        if main:
            print(f"stopped by {stop.signal} at step {state.step} ({state.images_seen / 1000:.1f} kimg, "
                  f"{state.elapsed():.0f} s); checkpoint {checkpoint.checkpoint_path(out, state.step)}; "
                  f"run the same command again to continue", file=sys.stderr, flush=True)
        raise KeyboardInterrupt

    # The final preview and evaluation: the final weights are always scored.
    if t.sample_every and not (out / "samples" / f"step-{state.step:08d}.png").exists():
        write_preview(run, state)
    if eval_opts is not None and state.last_eval != state.step:
        run_eval(run, state)
    if writer is not None:
        writer.close()
    accel.wait_for_everyone()
    if main and progress:
        scalars = {k: round(float(v.detach() if torch.is_tensor(v) else v), 5) for k, v in state.last_logs.items()
                   if _is_scalar(v)}
        print(f"trained {cfg.family} to step {state.step} ({state.images_seen / 1000:.1f} kimg, "
              f"{state.elapsed():.0f} s): {scalars}")
    accel.end_training()
    return out


def after_training(run: Run, state: TrainState) -> None:
    """The family's ``after_training(net, dataset)`` (optional in the contract: the VAE fits its sampling prior
    there), on the raw weights and on the EMA copy; the step is then saved again with what it fitted."""
    fn = getattr(run.fam, "after_training", None)
    if fn is None:
        return
    t0 = time.perf_counter()
    nets = [run.accel.unwrap_model(run.model)] + ([run.ema.module] if run.ema is not None else [])
    for net in nets:
        was_training = net.training
        net.eval()
        logs = fn(net, run.dataset)
        net.train(was_training)
    if logs:
        state.last_saved = -1  # what was fitted belongs in the last checkpoint
        if run.main and not run.bar.disable:
            run.bar.write(f"after training: fitted {logs} in {time.perf_counter() - t0:.1f} s")


# ---------------------------------------------------------------------------------------------- resume


def clear_run(out: Path) -> None:
    """``--fresh``: remove an earlier run's checkpoints and logs from ``out``."""
    best_path = best_checkpoint_path(out)
    if checkpoint.list_checkpoints(out) or best_path.exists():
        for _, p in checkpoint.list_checkpoints(out):
            p.unlink()
        for p in (best_path, out / "metrics.jsonl", out / "evals.jsonl"):
            p.unlink(missing_ok=True)


def resume(ckpt_path: Path, cfg: RunConfig, out: Path, model: torch.nn.Module, ema: EMA | None,
           optimizers: dict, sampler: BatchSampler, first_stage: FirstStage | None, accel: Accelerator,
           state: TrainState) -> None:
    """Restore the weights, EMA, optimisers, batch order, counters and random state of a saved step (before
    accelerate prepares the model), refusing a checkpoint of another setup."""
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
    state.step, state.images_seen = int(ck.meta["step"]), int(ck.meta["images_seen"])
    state.elapsed_prev_s = float(ck.meta.get("elapsed_s", 0.0))
    sampler.load_state_dict(ck.meta["sampler"])
    state.last_saved = state.step
    checkpoint.set_rng_state(ck.tensors)
    if accel.num_processes > 1:  # only rank 0's generator was saved: give each rank a fresh stream
        torch.manual_seed(cfg.train.seed + 7919 * accel.process_index + state.step)


def best_so_far(run: Run) -> float | None:
    """Resuming with train.keep_best: the run's best so far, so a new best must beat it, not the first
    evaluation after the resume."""
    if run.cfg.train.keep_best and run.best_path.is_file():
        saved = checkpoint.read_meta(run.best_path).get("best", {})
        if saved.get("metric") == run.cfg.train.keep_best:
            return float(saved["value"])
    return None


# ---------------------------------------------------------------------------------------------- stopping


def stop_now(run: Run, state: TrainState, stop: StopRequest) -> bool:
    """Whether the budget is spent or a signal asked to stop (``state.interrupted``: the signal)."""
    budget = _budget_done(run.cfg, state.step, state.images_seen, state.elapsed())
    flags = torch.tensor([float(budget), float(stop.signal is not None and not budget)], device=run.device)
    if run.accel.num_processes > 1:  # wall-clock budgets (and signals) may disagree: rank 0 decides
        torch.distributed.broadcast(flags, src=0)
    state.interrupted = bool(flags[1].item())
    return bool(flags[0].item()) or state.interrupted


def check_finite(run: Run, state: TrainState, where: str) -> None:
    """A one-line error naming the last good checkpoint once a loss was NaN or Inf on any rank."""
    accel = run.accel
    if bool(accel.reduce(state.bad.float(), "max").item() if accel.num_processes > 1 else state.bad.item()):
        last = checkpoint.latest(run.out)
        keep = f"the last good checkpoint is {last}" if last else "no checkpoint was written"
        raise ImagegenError(f"training diverged: the loss became NaN or Inf by step {state.step} ({where}); {keep}. "
                            f"Lower train.lr, keep train.grad_clip on, or use train.mixed_precision=no")


# ---------------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(run: Run, state: TrainState) -> None:
    """``ckpt-<step>`` of the current step (main process), pruned to train.keep_last."""
    check_finite(run, state, "before saving a checkpoint")
    state.last_saved = state.step
    if not run.main:
        return
    write_checkpoint(run, state, checkpoint.checkpoint_path(run.out, state.step))
    checkpoint.prune(run.out, run.cfg.train.keep_last)


def write_checkpoint(run: Run, state: TrainState, path: Path, **extra_meta) -> None:
    cfg, ema = run.cfg, run.ema
    meta = {"family": cfg.family, "config": cfg.to_dict(), "data_info": run.pixel_info.to_dict(), "step": state.step,
            "images_seen": state.images_seen, "elapsed_s": state.elapsed(), "sampler": run.sampler.state_dict(),
            "world_size": run.accel.num_processes, "ema_updates": ema.updates if ema else 0,
            "version": _version(), **extra_meta}
    if run.first_stage is not None:
        meta["latent"] = {"first_stage": run.first_stage.record(run.out), "data_info": run.info.to_dict()}
    optimizers = {k: getattr(v, "optimizer", v) for k, v in run.opts.items()}  # accelerate's wrappers unwrapped
    checkpoint.save(path, meta=meta, model=run.accel.unwrap_model(run.model), ema=ema.module if ema else None,
                    optimizers=optimizers, include_rng=True)


# ---------------------------------------------------------------------------------------------- logging


def log_step(run: Run, state: TrainState, logs: dict) -> None:
    """train.log_every: a line of metrics.jsonl, TensorBoard scalars and the progress bar's loss."""
    check_finite(run, state, "while training")
    now = time.perf_counter()
    rate = (state.images_seen - state.images_log) / max(now - state.t_log, 1e-9)
    state.t_log, state.images_log = now, state.images_seen
    scalars = {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in logs.items() if _is_scalar(v)}
    if not run.main:
        return
    record = {"step": state.step, "kimg": state.images_seen / 1000, "elapsed_s": round(state.elapsed(), 3),
              "img_per_s": round(rate, 2), **scalars}
    with open(run.out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    for k, v in scalars.items():
        run.writer.add_scalar(f"train/{k}", v, state.step)
    run.writer.add_scalar("train/img_per_s", rate, state.step)
    run.bar.set_postfix({"loss": f"{scalars.get('loss', float('nan')):.4g}", "img/s": f"{rate:.0f}"}, refresh=False)


def write_preview(run: Run, state: TrainState) -> None:
    """train.sample_every: a grid of train.sample_n samples (fixed seed) to ``samples/step-<step>.png``."""
    if not run.main:
        return
    cfg, fam, t = run.cfg, run.fam, run.cfg.train
    net = run.eval_net()
    was_training = net.training
    net.eval()
    g = torch.Generator(device=run.device).manual_seed(t.seed + 12345)
    with torch.no_grad():
        if hasattr(fam, "preview"):  # a family without a sampler of its own (the autoencoder)
            idx = torch.arange(min(t.sample_n, len(run.dataset)), device=run.device)
            x = fam.preview(net, run.dataset.batch(idx).x)
        else:
            x = fam.sample(net, t.sample_n, labels=preview_labels(cfg, run.info, t.sample_n, run.device),
                           generator=g, **getattr(fam, "PREVIEW_OPTIONS", {}))
            if run.first_stage is not None:
                x = run.first_stage.decode(x)
    net.train(was_training)
    save_grid(x, run.out / "samples" / f"step-{state.step:08d}.png")


def close(run: Run) -> None:
    """Close the TensorBoard writer and leave accelerate, after every rank got here."""
    if run.writer is not None:
        run.writer.close()
    run.accel.wait_for_everyone()
    run.accel.end_training()


# ---------------------------------------------------------------------------------------------- evaluation


def run_eval(run: Run, state: TrainState) -> None:
    """train.eval_every: score the EMA weights now (main process) into evals.jsonl and TensorBoard, keep the
    best checkpoint (train.keep_best); the time it takes is not charged to the budget."""
    state.last_eval = state.step
    if run.main:
        t0 = time.perf_counter()
        net = run.eval_net()
        was_training = net.training
        net.eval()
        res = evaluate_during_training(net, run.cfg, run.pixel_info, state.step, replace(run.eval_opts), run.device,
                                       run.out, first_stage=run.first_stage)
        net.train(was_training)
        spent = time.perf_counter() - t0
        state.t_start += spent  # the training clock (and the budget) skips the evaluation
        state.t_log += spent
        scores = {k: v for k, v in res["summary"].items() if isinstance(v, (int, float))}
        n = run.eval_opts.n
        with open(run.out / "evals.jsonl", "a") as f:
            f.write(json.dumps({"step": state.step, "kimg": state.images_seen / 1000,
                                "elapsed_s": round(state.elapsed(), 3), "n": n, **scores,
                                "eval_s": round(spent, 2)}) + "\n")
        for k, v in scores.items():
            run.writer.add_scalar(f"eval/{k}", v, state.step)
        if run.cfg.train.keep_best:
            keep_if_best(run, state, scores)
        run.bar.write(f"step {state.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in scores.items()
                                                          if not k.endswith("_std")) + f" ({n} samples)")
    run.accel.wait_for_everyone()


def keep_if_best(run: Run, state: TrainState, scores: dict) -> None:
    """Write ``best.safetensors`` when the train.keep_best result beats the best so far."""
    metric = run.cfg.train.keep_best
    value = scores.get(metric)
    if value is None or not math.isfinite(value):
        return
    lower = metric in LOWER_IS_BETTER
    if state.best is not None and not (value < state.best if lower else value > state.best):
        return
    state.best = float(value)
    write_checkpoint(run, state, run.best_path, best={"metric": metric, "value": float(value), "step": state.step,
                                                      "n": run.eval_opts.n, "lower_is_better": lower})


def _is_scalar(v) -> bool:
    return isinstance(v, (int, float)) or (torch.is_tensor(v) and v.numel() == 1)


def _version() -> str:
    return __version__


def load_run_config(run_dir: str | Path) -> RunConfig:
    p = Path(run_dir) / "config.json"
    if not p.is_file():
        raise ImagegenError(f"{run_dir} has no config.json; is it a run directory made by 'imagegen train'?")
    return from_saved(json.loads(p.read_text()))
