"""Which family restores best: super-resolution, denoising, inpainting and colourisation of the first N test
images, each task at two strengths, for any trained runs (``imagegen.load(run).restore``) and for baselines
that use no model.

    python benchmarks/restoration_quality.py runs/vae-mnist runs/gan-mnist runs/pixelcnn-mnist runs/diff-mnist \
        --n 200 --threads 2 --data-root /work/shared/data --grid-dir bench-restore

Tasks (``--tasks``, comma list; default below) and their baselines:

* ``sr2``, ``sr4``: the 1/K-size average-pooled image; baselines: ``bicubic`` upsampling (torch's
  ``interpolate``, a maintained implementation) and ``nearest`` (A+ y, the blocky image);
* ``denoise:0.2``, ``denoise:0.4``: Gaussian noise of that std in [-1, 1] units (0.1 and 0.2 on [0, 1]);
  baselines: ``input`` (the noisy image), ``gaussian`` (scipy.ndimage Gaussian filter, std 1 px) and
  ``median`` (3x3 median filter);
* ``inpaint:top-half`` (the lower half hidden), ``inpaint:box`` (a centre square of half the side hidden);
  baseline ``input``: the masked image, hidden pixels black;
* ``colourise``, ``sr2+colourise`` (colour data only: the CIFAR-10 JPEG folder); baseline ``input``: the grey
  image in all three channels. A task a model's data cannot take (colourise on grey digits) is skipped.

Per (model or baseline, task), one JSON line: ``psnr`` and ``ssim`` against the originals (torchmetrics;
images in [0, 1], data range 1, SSIM with an 11-pixel Gaussian window, both averaged over images),
``class_acc`` (MNIST / Fashion-MNIST: the packaged dataset classifier's accuracy on the restored images,
with ``real_acc`` on the originals beside it), ``s_per_img`` (the restore call alone, after a warm-up, batch
``--batch``), and ``consistent``: max |A(x) - y| for noiseless tasks (the contract says 0 up to float
rounding). ``--grid-dir`` writes one PNG per (run, task): originals, measurements (through A+), restorations.
A family that does not offer a task (PixelCNN: inpainting only; a latent model: inpainting only), or a model that
cannot take it as given (a class-conditional VAE needs labels; the benchmark gives none), gets a row with the
reason instead.
Measurements are drawn once per dataset with ``--seed``: every model and baseline sees the same ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from _bench import run_main  # benchmarks/_bench.py, beside this script

DEFAULT_TASKS = "sr2,sr4,denoise:0.2,denoise:0.4,inpaint:top-half,inpaint:box,colourise,sr2+colourise"


def _mask(kind: str, size: int) -> torch.Tensor:
    from imagegen.errors import ImagegenError

    m = torch.ones(1, 1, size, size)
    if kind == "top-half":
        m[..., size // 2:, :] = 0
    elif kind == "box":
        lo, hi = size // 4, size - size // 4
        m[..., lo:hi, lo:hi] = 0
    else:
        raise ImagegenError(f"inpaint:{kind}: use inpaint:top-half or inpaint:box")
    return m


def _operator(task: str, channels: int, size: int):
    """(operator, task string for restore, mask or None) for a benchmark task."""
    from imagegen import restoration

    if task.startswith("inpaint"):
        kind = task.partition(":")[2] or "top-half"
        m = _mask(kind, size)
        return restoration.parse_task("inpaint", channels, size, m), "inpaint", m
    return restoration.parse_task(task, channels, size), task, None


def _baselines(task: str, op, y: torch.Tensor, size: int) -> dict[str, torch.Tensor]:
    import numpy as np
    from scipy import ndimage

    out = {}
    if task.startswith("sr") and "colourise" not in task:
        out["bicubic"] = F.interpolate(y, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)
        out["nearest"] = op.pinv(y).clamp(-1, 1)
    elif task.startswith("denoise"):
        out["input"] = y.clamp(-1, 1)
        arr = y.numpy()
        out["gaussian"] = torch.from_numpy(ndimage.gaussian_filter(arr, sigma=(0, 0, 1, 1))).clamp(-1, 1)
        out["median"] = torch.from_numpy(np.ascontiguousarray(ndimage.median_filter(arr, size=(1, 1, 3, 3))))
    elif task.startswith("inpaint"):
        m = op.mask
        out["input"] = y * m + (m - 1)  # hidden pixels black (-1)
    else:  # colourise (and sr2+colourise): the grey image (nearest-upsampled) in every channel
        out["input"] = op.pinv(y).clamp(-1, 1)
    return out


def _scores(restored: torch.Tensor, x: torch.Tensor) -> dict:
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    a, b = (restored.clamp(-1, 1) + 1) / 2, (x + 1) / 2
    psnr = peak_signal_noise_ratio(a, b, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(a, b, data_range=1.0, reduction="none")
    return {"psnr": round(float(psnr.mean()), 3), "ssim": round(float(ssim.mean()), 4)}


def _class_acc(clf, images: torch.Tensor, labels: torch.Tensor) -> float | None:
    from imagegen.data import to_uint8

    if clf is None or labels is None:
        return None
    _, logits = clf.features_and_logits(to_uint8(images.clamp(-1, 1)))
    return round(float((logits.argmax(1) == labels).float().mean()), 4)


def _grid(path: Path, x, meas, restored, k: int = 8) -> None:
    from imagegen.trainer import save_grid

    k = min(k, x.shape[0])
    save_grid(torch.cat([x[:k], meas[:k].clamp(-1, 1), restored[:k].clamp(-1, 1)]), path, nrow=k)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", help="trained runs (any family); none: the baselines alone")
    ap.add_argument("--data", default=None, help="dataset for the baselines when no run is given (e.g. mnist)")
    ap.add_argument("--tasks", default=DEFAULT_TASKS, help=f"comma list (default {DEFAULT_TASKS})")
    ap.add_argument("--n", type=int, default=200, help="the first N test images")
    ap.add_argument("--batch", type=int, default=50, help="images per restore call")
    ap.add_argument("--data-root", default=None, help="dataset root, if not the one the runs were trained with")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0, help="seed of the measurement noise and of every restore")
    ap.add_argument("--options", action="append", default=[], help="RUN:key=value,... restore options "
                                                                    "(e.g. runs/diff:steps=50)")
    ap.add_argument("--grid-dir", default=None, help="write a PNG grid per (run, task) here")
    ap.add_argument("--out", default=None, help="also write every row as a JSON list")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import imagegen
    from imagegen import restoration
    from imagegen.config import DataConfig
    from imagegen.data import load_dataset, to_float
    from imagegen.errors import ImagegenError
    from imagegen.metrics.classifier import CLASSIFIER_DATASETS, load_classifier
    from imagegen.provenance import commit_label
    from sampling_speed import _parse_options  # the RUN:key=value,... syntax (benchmarks/ is on the path)

    if not args.runs and not args.data:
        raise ImagegenError("give runs to benchmark, or --data NAME for the baselines alone")
    per_run = _parse_options(args.options)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    commit = commit_label()
    grid_dir = Path(args.grid_dir) if args.grid_dir else None
    models = [imagegen.load(r, device=args.device) for r in args.runs]
    data_cfgs = [m.config.data for m in models] or [DataConfig(name=args.data)]
    rows, done_baselines = [], set()

    def emit(row):
        row.update({"n": n, "seed": args.seed, "device": args.device, "threads": torch.get_num_threads(),
                    "commit": commit})
        rows.append(row)
        print(json.dumps(row), flush=True)

    for i, data_cfg in enumerate(data_cfgs):
        model, run = (models[i], args.runs[i]) if models else (None, None)
        if args.data_root:
            data_cfg = dataclasses.replace(data_cfg, root=args.data_root)
        data_cfg = dataclasses.replace(data_cfg, limit=None, augment=[])
        test = load_dataset(data_cfg, "test").fixed_binarization(args.seed)
        x = to_float(test.images[: args.n])
        labels = None if test.labels is None else test.labels[: args.n]
        n, c, s = x.shape[0], x.shape[1], x.shape[-1]
        clf = (load_classifier(data_cfg.name, device=args.device)
               if data_cfg.name in CLASSIFIER_DATASETS else None)
        real_acc = _class_acc(clf, x, labels)
        for task in tasks:
            try:
                op, task_string, mask = _operator(task, c, s)
            except ImagegenError as e:  # e.g. colourise on grey data
                print(f"# {data_cfg.name}: skipping {task}: {e}", flush=True)
                continue
            y = op.measure(x, torch.Generator().manual_seed(args.seed))
            key = (data_cfg.name, task)
            if key not in done_baselines:  # the no-model rows, once per dataset
                done_baselines.add(key)
                for name, restored in _baselines(task, op, y, s).items():
                    emit({"run": f"baseline:{name}", "family": "-", "data": data_cfg.name, "task": task,
                          **_scores(restored, x), "class_acc": _class_acc(clf, restored, labels),
                          "real_acc": real_acc, "s_per_img": 0.0})
            if model is None:
                continue
            base = {"run": run, "family": model.family, "step": model.step, "data": data_cfg.name, "task": task}
            if not restoration.offered(model.restore_tasks, op):
                why = "a latent model inpaints only" if model.first_stage is not None else "not offered"
                emit({**base, "skipped": f"{why} ({model.family}: {', '.join(model.restore_tasks)})"})
                continue
            opts = per_run.get(run.rstrip("/"), {})
            try:  # warm-up; a model that cannot take this task without labels says so in its row
                model.restore(y[:2], task_string, mask=mask, seed=args.seed + 1, **opts)
            except ImagegenError as e:
                emit({**base, "skipped": str(e)})
                continue
            t0 = time.perf_counter()
            restored = torch.cat([model.restore(y[j:j + args.batch], task_string, mask=mask, seed=args.seed + j,
                                                **opts) for j in range(0, n, args.batch)])
            seconds = time.perf_counter() - t0
            consistent = float((op.forward(restored) - y).abs().max()) if op.noiseless else None
            emit({**base, **_scores(restored, x), "class_acc": _class_acc(clf, restored, labels),
                  "real_acc": real_acc, "s_per_img": round(seconds / n, 4), "consistent": consistent,
                  "options": opts})
            if grid_dir is not None:
                name = Path(run.rstrip("/")).name.replace(":", "-")  # zoo:NAME -> a portable file name
                _grid(grid_dir / f"{name}-{task.replace(':', '_').replace('+', '_')}.png", x, op.pinv(y), restored)
    print()
    print("| data | task | run | family | PSNR | SSIM | class acc (real) | s/img |")
    print("|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["data"], r["task"], r["run"])):
        if "skipped" in r:
            print(f"| {r['data']} | {r['task']} | {r['run']} | {r['family']} | - | - | {r['skipped']} | - |")
            continue
        acc = "-" if r["class_acc"] is None else f"{r['class_acc']:.3f} ({r['real_acc']:.3f})"
        print(f"| {r['data']} | {r['task']} | {r['run']} | {r['family']} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
              f"{acc} | {r['s_per_img']} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    run_main(main)
