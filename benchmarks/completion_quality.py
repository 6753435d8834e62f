"""Completion (inpainting) quality of trained runs, any family, through the public API
(``imagegen.load(run).complete``): hide part of each of the first N test images, let the model fill it in,
and measure what came back.

    python benchmarks/completion_quality.py runs/gan-mnist runs/diff-mnist runs/pixelcnn-mnist \
        --keep top-half --n 200 --threads 2 --data-root ../shared/data \
        --options 'runs/diff-mnist:steps=50,resample=5'

Per run (one JSON line each, plus a table):

* ``class_acc``: how often the dataset classifier (the packaged MNIST / Fashion-MNIST network) recognises
  the true class of the completed image: does the completion continue the digit it was shown? Read it
  between ``masked_acc`` (the classifier on the masked image, hidden pixels black: no model) and
  ``real_acc`` (on the original images). No labels are given to the model: a class-conditional model must
  infer the class from the known pixels (each family's ``complete`` says how).
* ``mse_hidden``: mean squared error over the hidden pixels against the original, in [-1, 1] units. A
  sampler of plausible completions is not meant to minimise it (the mean of the possible completions
  would), so it is a secondary number; a blurry average scores well on it.
* ``known_changed``: the largest change of a known pixel, in 8-bit levels (the contract says 0).
* ``seconds`` and ``img_per_s``: the completion call alone (batch = N), after a 2-image warm-up.

Each run is scored on its own data format (a binarised-MNIST model on a fixed binarisation, seed
``--seed``, of the test split). ``--options RUN:key=value,...`` passes the family's completion options.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from _bench import run_main  # benchmarks/_bench.py, beside this script
from imagegen.provenance import commit_label


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--keep", default="top-half", help="top-half, left-half, bottom-half or right-half")
    ap.add_argument("--n", type=int, default=200, help="the first N test images")
    ap.add_argument("--data-root", default=None, help="dataset root, if not the one the run was trained with")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--options", action="append", default=[], help="RUN:key=value,... completion options")
    ap.add_argument("--out", default=None, help="also write the rows as a JSON list")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import imagegen
    from imagegen.data import load_dataset, make_mask, to_float, to_uint8
    from imagegen.metrics.classifier import load_classifier
    from sampling_speed import _parse_options  # the same RUN:key=value,... syntax (benchmarks/ is on the path)

    per_run = _parse_options(args.options)
    commit = commit_label()
    rows = []
    for run in args.runs:
        model = imagegen.load(run, device=args.device)
        data_cfg = model.config.data
        if args.data_root:
            data_cfg = dataclasses.replace(data_cfg, root=args.data_root)
        test = load_dataset(dataclasses.replace(data_cfg, limit=None), "test")
        test = test.fixed_binarization(args.seed)  # no-op for 8-bit data
        u8, y = test.images[: args.n], test.labels[: args.n]
        x = to_float(u8)
        mask = make_mask(args.keep, model.info)
        masked_u8 = to_uint8(x * mask + (mask - 1))  # hidden pixels black (-1)
        opts = per_run.get(run.rstrip("/"), {})
        model.complete(x[:2], mask, seed=args.seed + 1, **opts)  # warm-up
        t0 = time.perf_counter()
        filled = model.complete(x, mask, seed=args.seed, **opts).clamp(-1, 1)
        seconds = time.perf_counter() - t0
        filled_u8 = to_uint8(filled)
        clf = load_classifier(data_cfg.name, device=args.device)
        acc = {}
        for name, images in (("class_acc", filled_u8), ("masked_acc", masked_u8), ("real_acc", u8)):
            _, logits = clf.features_and_logits(images)
            acc[name] = round(float((logits.argmax(1) == y).float().mean()), 4)
        hidden = (1 - mask).expand_as(x).bool()
        mse = float(((to_float(filled_u8) - x)[hidden]).pow(2).mean())
        known = (filled_u8.int() - u8.int()).abs()[~hidden]
        row = {"run": run, "family": model.family, "step": model.step, "data": data_cfg.name,
               "class_cond": bool(getattr(model.config.model, "class_cond", False)),
               "keep": args.keep, "n": int(u8.shape[0]), "options": opts, **acc,
               "mse_hidden": round(mse, 4), "known_changed": int(known.max()) if known.numel() else 0,
               "seconds": round(seconds, 1), "img_per_s": round(u8.shape[0] / seconds, 2),
               "device": args.device, "threads": torch.get_num_threads(), "seed": args.seed, "commit": commit}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print("| run | family | class acc (masked / real) | MSE hidden | known changed | s (img/s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['family']} | {r['class_acc']:.3f} ({r['masked_acc']:.3f} / {r['real_acc']:.3f}) | "
              f"{r['mse_hidden']:.4f} | {r['known_changed']} | {r['seconds']} ({r['img_per_s']}) |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    run_main(main)
