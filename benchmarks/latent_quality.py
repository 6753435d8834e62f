"""Latent models against pixel models at the same wall-clock budget (docs/latent.md).

    # train every recipe for its budget, each alone on the machine, then score them all
    python benchmarks/latent_quality.py --data mnist --data-root ../shared/data --budget 5m --ae-budget 2m \
        --n 2000 --inception-weights ../shared/weights/inception-2015-12-05-features.pt --out runs/latent-5m

    # score again (other N or metrics) without training
    python benchmarks/latent_quality.py --data mnist --data-root ../shared/data --skip-train --out runs/latent-5m

A latent recipe's budget includes its first stage: the shared autoencoder trains for ``--ae-budget``, encoding the
training split with it takes E seconds (timed once, charged to every latent row), and the second stage trains
for ``--budget`` minus both (5m = 2m + E + the rest), so every row is ``--budget`` of training in all. The
pixel recipes train for the whole ``--budget``. Training runs one after another (never two at once); scoring
comes after all training, so it cannot slow a timed run. Each row: classifier FD (``cfd``), classifier score
(``cscore``), class accuracy for conditional recipes (``cacc``) and Inception FID at ``--n`` samples against as
many test images, plus the real train-vs-test floor at the same N, sampling time for 64 images, and a 64-image
grid. The first stage's own row scores its reconstructions of the first N test images (and their PSNR), which
bound every latent model.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from _bench import pick, run_main, save_row  # benchmarks/_bench.py, beside this script
from imagegen.model import write_sample_defaults
from imagegen.provenance import commit_label, hardware_label

# name -> (family, preset, extra --set overrides, latent?, sampling options for scoring and timing)
RECIPES: dict[str, tuple[str, str | None, list[str], bool, dict]] = {
    "latent-diffusion": ("diffusion", "ldm-mnist", [], True, {"sampler": "dpmpp-2m", "steps": 10}),
    "latent-flow": ("diffusion", "ldm-mnist", ["model.formulation=flow"], True, {"sampler": "dpmpp-2m", "steps": 10}),
    # the other formulations on the same network and codes, for the quality-against-network-calls sweep
    "latent-eps": ("diffusion", "ldm-mnist", ["model.formulation=eps"], True, {"sampler": "dpmpp-2m", "steps": 10}),
    "latent-edm": ("diffusion", "ldm-mnist", ["model.formulation=edm"], True, {"sampler": "dpmpp-2m", "steps": 10}),
    "latent-pixelcnn": ("pixelcnn", "latent-pixelcnn-mnist", [], True, {}),
    # PixelSNAIL (Chen et al. 2018) as the prior over the same codes: 2 blocks of 3 gated layers + attention
    "latent-pixelsnail": ("pixelcnn", "latent-pixelcnn-mnist", ["model.arch=pixelsnail", "model.blocks=2",
                                                                "model.layers=3", "model.key_channels=16",
                                                                "model.value_channels=32"], True, {}),
    "flow": ("diffusion", "flow-mnist", [], False, {"sampler": "dpmpp-2m", "steps": 10}),
    "ddpm": ("diffusion", "ddpm-mnist", [], False, {"sampler": "dpmpp-2m", "steps": 10}),
    "pixelcnn": ("pixelcnn", None, [], False, {}),  # the family defaults, as a CPU user would start
}


def minutes(text: str) -> float:
    from imagegen.config import parse_budget

    return parse_budget(text)


def _sample_options(args, name: str, table: dict | None = None) -> dict:
    opts = dict((table or RECIPES)[name][4])
    if "steps" in opts and args.steps:
        opts["steps"] = args.steps
    return opts


def _encode_seconds(args, ae_dir: Path) -> float:
    """Encode the training split once with the first stage, as a latent run's trainer does (the cache then
    serves every latent recipe); the time is charged to every latent recipe's budget."""
    from imagegen.data import cache_dir

    for old in (cache_dir() / "latents").glob("*.safetensors"):
        old.unlink()  # time a real encoding, not a cache hit
    t0 = time.perf_counter()
    _encode_train_split(args, ae_dir)
    return time.perf_counter() - t0


def _encode_train_split(args, ae_dir: Path) -> None:
    """The training split's codes under the first stage in ``ae_dir``, into the cache every latent run reads."""
    from imagegen.config import DataConfig
    from imagegen.data import load_dataset
    from imagegen.latent import encode_dataset, load_first_stage

    data_cfg = DataConfig(name=args.data, root=str(args.data_root) if args.data_root else None)
    encode_dataset(load_first_stage(ae_dir), load_dataset(data_cfg, "train"), data_cfg)


def train_first_stage(args, ae_dir: Path, ae_minutes: float, preset: str = "autoencoder-mnist",
                      overrides: tuple[str, ...] = ()) -> float:
    """Train the shared first stage for ``ae_minutes`` and encode the training split with it (timed, then cached for
    every latent recipe); returns the minutes both took, which every latent recipe's budget is charged."""
    import imagegen

    t0 = time.perf_counter()
    imagegen.train("autoencoder", preset=preset, out=ae_dir, data_root=args.data_root, budget=ae_minutes,
                   overrides=[f"data.name={args.data}", f"train.seed={args.seed}", "train.sample_every=0",
                              *overrides], fresh=True)
    ae_wall = time.perf_counter() - t0
    encode_s = _encode_seconds(args, ae_dir)
    (ae_dir / "timing.json").write_text(json.dumps({"train_wall_s": round(ae_wall, 1),
                                                    "encode_train_split_s": round(encode_s, 1)}))
    print(f"first stage: {ae_wall:.0f} s wall clock, encoding the training split {encode_s:.1f} s")
    return ae_minutes + encode_s / 60


def first_stage_for(args, ae_dir: Path, ae_minutes: float) -> float:
    """The shared first stage's minutes, charged to every latent recipe: trained now, or (``--reuse-first-stage``)
    the one in ``ae_dir`` at the minutes it took then, its encoding included."""
    if not args.reuse_first_stage:
        return train_first_stage(args, ae_dir, ae_minutes)
    timing = ae_dir / "timing.json"
    if not timing.is_file():
        raise SystemExit(f"--reuse-first-stage: no {timing}; run once without it to train the first stage")
    encode_s = json.loads(timing.read_text())["encode_train_split_s"]
    _encode_train_split(args, ae_dir)  # the cache, as timed then (a cache hit if it is still there)
    print(f"first stage: reusing {ae_dir} ({ae_minutes:g} min + encoding {encode_s} s charged to each latent row)")
    return ae_minutes + encode_s / 60


def train_recipe(args, name: str, ae_dir: Path, ae_minutes: float, table: dict | None = None) -> None:
    """Train one recipe of ``table`` (default RECIPES), then draw its 64-image grid and time it while the machine is
    still otherwise idle."""
    import imagegen
    from imagegen.trainer import save_grid

    family, preset, extra, latent, _ = (table or RECIPES)[name]
    budget = minutes(args.budget) - (ae_minutes if latent else 0.0)
    overrides = [f"data.name={args.data}", f"train.seed={args.seed}", "train.sample_every=0", *extra, *args.set]
    t0 = time.perf_counter()
    imagegen.train(family, preset=preset, out=args.out / name, data_root=args.data_root, budget=budget,
                   overrides=overrides, latent=ae_dir if latent else None, fresh=True)
    wall = time.perf_counter() - t0
    model = imagegen.load(args.out / name, device="cpu")
    labels = torch.arange(64) % model.info.num_classes if model.class_conditional else None
    opts = _sample_options(args, name, table)
    t0 = time.perf_counter()
    grid = model.sample(64, labels=labels, seed=0, **opts)
    sample_s = time.perf_counter() - t0
    save_grid(grid, args.out / "grids" / f"{name}.png", nrow=8)
    (args.out / name / "timing.json").write_text(json.dumps({"train_wall_s": round(wall, 1),
                                                              "sample64_s": round(sample_s, 2)}))
    # the run draws the way it is scored (imagegen sample / eval / serve read it as the run's defaults)
    write_sample_defaults(args.out / name, opts, f"the sampling options of the {name} recipe ({Path(__file__).name})")
    print(f"{name}: trained {budget:g} min ({wall:.0f} s wall clock with data loading); 64 samples in "
          f"{sample_s:.1f} s")


def score_recipe(args, name: str, table: dict | None = None) -> dict:
    import imagegen

    _, _, _, latent, _ = (table or RECIPES)[name]
    sample_opts = _sample_options(args, name, table)
    run = args.out / name
    model = imagegen.load(run, device="cpu")
    timing = json.loads((run / "timing.json").read_text()) if (run / "timing.json").is_file() else {}
    metrics = args.metrics + (",cacc" if model.class_conditional else "")
    res = imagegen.evaluate_run(run, metrics=metrics, n=args.n, ref="test", data_root=args.data_root,
                                inception_weights=args.inception_weights, seed=args.seed,
                                sample_options=sample_opts, out=run / f"eval-{args.n}.json")
    meta = model.meta
    return {"recipe": name, "family": model.family, "latent": bool(latent), "step": meta.get("step"),
            "kimg": round(meta.get("images_seen", 0) / 1000, 1), "train_s": round(meta.get("elapsed_s", 0)),
            "sampling": json.dumps(sample_opts), **timing,
            **{k: v for k, v in res["summary"].items() if isinstance(v, (int, float))}}


def _nfe_sweep(args, name: str) -> list[dict]:
    """Classifier FD at N samples against the network calls of each sampler (cheap on codes: the UNet runs on
    8x8 latents), for one diffusion recipe."""
    import imagegen
    from imagegen.samplers import network_calls

    rows = []
    for sampler in ("euler", "heun", "dpmpp-2m"):
        for nfe in args.nfe:
            steps = (nfe + 1) // 2 if sampler == "heun" else nfe
            res = imagegen.evaluate_run(args.out / name, metrics="cfd", n=args.n, ref="test", data_root=args.data_root,
                                        seed=args.seed, sample_options={"sampler": sampler, "steps": steps})
            rows.append({"recipe": name, "sampler": sampler, "steps": steps, "nfe": network_calls(sampler, steps),
                         "fid_clf": res["summary"]["fid_clf"]})
            print(json.dumps(rows[-1]))
    return rows


def score_folder(args, arr: Path) -> dict:
    """Score the images of ``arr`` (an .npz) as a model's samples: ``--metrics`` against as many test images;
    the numeric summary."""
    import imagegen

    n = int(np.load(arr)["x"].shape[0])
    res = imagegen.evaluate_folder(arr, args.data, metrics=args.metrics, n=n, ref="test",
                                   data_root=args.data_root, inception_weights=args.inception_weights)
    return {k: v for k, v in res["summary"].items() if isinstance(v, (int, float))}


def score_first_stage(args, ae_dir: Path) -> dict:
    import imagegen
    from imagegen.config import DataConfig
    from imagegen.data import load_dataset, save_image_array, to_uint8
    from imagegen.families.autoencoder import psnr
    from imagegen.trainer import save_grid

    model = imagegen.load(ae_dir, device="cpu")
    test = load_dataset(DataConfig(name=args.data, root=str(args.data_root) if args.data_root else None), "test")
    idx = torch.arange(min(args.n, len(test)))
    x = test.batch(idx).x
    rec = torch.cat([model.reconstruct(x[i:i + 500]) for i in range(0, len(x), 500)])
    arr = args.out / "first-stage-reconstructions.npz"
    save_image_array(arr, to_uint8(rec), test.labels[idx] if test.labels is not None else None)
    save_grid(torch.stack([x[:32], rec[:32]], 1).flatten(0, 1), args.out / "grids" / "first-stage.png", nrow=8)
    res = score_folder(args, arr)
    meta = model.meta
    timing = json.loads((ae_dir / "timing.json").read_text()) if (ae_dir / "timing.json").is_file() else {}
    return {"recipe": "first-stage reconstructions", "family": "autoencoder", "step": meta.get("step"),
            "kimg": round(meta.get("images_seen", 0) / 1000, 1), "train_s": round(meta.get("elapsed_s", 0)), **timing,
            "psnr_db": round(float(psnr(x, rec).mean()), 2), **res}


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """The options of a run of recipes (this script's and benchmarks/speedrun.py's): budgets, scoring, overrides."""
    p.add_argument("--budget", default="5m", help="training time of every row, the first stage included")
    p.add_argument("--ae-budget", default="2m", help="the shared first stage's part of --budget")
    p.add_argument("--n", type=int, default=2000, help="samples scored against as many test images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="sampling steps of every diffusion/flow recipe")
    p.add_argument("--inception-weights", default=None)
    p.add_argument("--metrics", default="cfd,cscore,fid", help="what imagegen eval takes (cacc is added for "
                                                                  "class-conditional recipes)")
    p.add_argument("--set", action="append", default=[], help="an override for every recipe, e.g. train.lr=1e-3")
    p.add_argument("--skip-train", action="store_true", help="score the runs already in --out")
    p.add_argument("--skip-score", action="store_true", help="train (and time the grids) only")
    p.add_argument("--reuse-first-stage", action="store_true",
                   help="train only the recipes, on the first stage already in --out, charging each latent recipe "
                        "the minutes its timing.json records (--ae-budget plus the encoding)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="mnist")
    p.add_argument("--data-root", type=Path, default=None)
    add_common_arguments(p)
    p.add_argument("--recipes", default=",".join(RECIPES), help=f"comma list of: {', '.join(RECIPES)}")
    p.add_argument("--nfe", type=lambda v: [int(x) for x in v.split(",") if x], default=[],
                   help="also score classifier FD of the latent diffusion recipes at these network calls, e.g. 4,10,20")
    p.add_argument("--out", type=Path, default=Path("runs/latent-quality"))
    args = p.parse_args()
    names = pick(args.recipes, RECIPES, "recipe")

    ae_dir = args.out / "first-stage"
    ae_minutes = minutes(args.ae_budget)
    if not args.skip_train:
        first_stage_minutes = 0.0
        if any(RECIPES[r][3] for r in names):
            first_stage_minutes = first_stage_for(args, ae_dir, ae_minutes)
        for name in names:
            train_recipe(args, name, ae_dir, first_stage_minutes)
    if args.skip_score:
        return
    rows = []
    if any(RECIPES[r][3] for r in names):
        rows.append(score_first_stage(args, ae_dir))
    rows += [score_recipe(args, name) for name in names]
    sweep = [r for name in names if args.nfe and RECIPES[name][0] == "diffusion" and RECIPES[name][3]
             for r in _nfe_sweep(args, name)]
    if sweep:
        (args.out / "nfe-sweep.json").write_text(json.dumps(sweep, indent=2))
    header = {"command": "benchmarks/latent_quality.py", "data": args.data, "budget": args.budget,
              "ae_budget": args.ae_budget, "n": args.n, "seed": args.seed, "commit": commit_label(),
              "hardware": hardware_label("cpu")}
    (args.out / "results.json").write_text(json.dumps({"header": header, "rows": rows}, indent=2))
    for row in rows:
        print()
        save_row(row, args.out / f"row-{row['recipe'].replace(' ', '-')}.json")
    print(json.dumps(header))


if __name__ == "__main__":
    run_main(main)
