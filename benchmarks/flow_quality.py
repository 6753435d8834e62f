"""Flow matching beside eps, v and EDM at the same training minutes: train the ddpm-mnist network once per
formulation for one wall-clock budget, then score samples per sampler and number of network calls (NFE)
with the project's evaluator (classifier Frechet distance `cfd` by default: cheap on a CPU; add `fid` for
Inception FID).

    # the issue's comparison: MNIST, 5 minutes each on an otherwise idle machine, 2,000 samples per cell
    OMP_NUM_THREADS=2 python benchmarks/flow_quality.py --budget 5m --threads 2 --n 2000 --nfe 4,10,20,50 \
        --metrics cfd,fid --data-root /work/shared/data --out runs/flow-vs-diffusion-5m \
        --inception-weights /work/shared/weights/inception-2015-12-05-features.pt

    # a smoke run (proves the pipeline, measures nothing)
    python benchmarks/flow_quality.py --budget 20s --n 100 --nfe 4 --samplers euler,heun \
        --data-root /work/shared/data --out /tmp/flow-smoke

    # score existing runs only
    python benchmarks/flow_quality.py --skip-train --out runs/flow-vs-diffusion-5m --nfe 10,20

Runs go to OUT/<formulation> (resumed if they exist: delete them for a fresh comparison). Formulations:
eps and v are the ddpm-mnist preset (cosine schedule) with model.formulation set, edm the edm-mnist preset,
flow the flow-mnist preset: one network, four ways of training it. Each model is sampled on its own default
grid (trailing DDPM steps for eps/v, Karras for EDM, uniform in t for flow). Samplers: `euler` (= DDIM with
eta 0, for every formulation), `heun` (EDM's in sigma for eps/v/EDM, the flow ODE's in t for flow; NFE ->
steps = (NFE + 1) // 2) and `dpmpp-2m`. Every row prints the run's steps, images seen, commit, device and
seed; a JSON copy of each evaluation goes to OUT/<formulation>/quality-<sampler>-<nfe>-n<N>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from _bench import run_main  # benchmarks/_bench.py, beside this script
from diffusion_quality import _print_table, steps_for
from imagegen.provenance import commit_label, hardware_label

# formulation -> (preset, extra overrides): the same network (ddpm-mnist's) in every case
RECIPES = {"eps": ("ddpm-mnist", []), "v": ("ddpm-mnist", ["model.formulation=v"]),
           "edm": ("edm-mnist", []), "flow": ("flow-mnist", [])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--formulations", default="eps,v,edm,flow", help=f"any of {','.join(RECIPES)}")
    ap.add_argument("--budget", default="5m", help="training wall clock per formulation, e.g. 5m, 30m, 90s")
    ap.add_argument("--out", required=True, help="folder for the runs, one per formulation (resumed if there)")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--set", action="append", default=[], help="config override for every run, e.g. "
                    "model.class_cond=true")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--samplers", default="euler,heun,dpmpp-2m")
    ap.add_argument("--nfe", default="4,10,20,50", help="network calls per sample")
    ap.add_argument("--n", type=int, default=2000, help="samples per cell")
    ap.add_argument("--metrics", default="cfd")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--inception-weights", default=None)
    args = ap.parse_args()

    formulations = [f for f in args.formulations.split(",") if f]
    unknown = [f for f in formulations if f not in RECIPES]
    if unknown:
        from imagegen.errors import ImagegenError

        raise ImagegenError(f"unknown formulation {', '.join(unknown)}; available: {', '.join(RECIPES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    import imagegen
    from imagegen.evaluation import EvalOptions, evaluate_run

    root = Path(args.out)
    commit = commit_label()  # before training: the code that ran, not what HEAD became meanwhile
    hw = hardware_label(args.device)
    rows = []
    for form in formulations:
        preset, extra = RECIPES[form]
        out = root / form
        overrides = [*extra, *args.set, f"train.device={args.device}", f"train.seed={args.seed}"]
        if args.data_root:
            overrides.append(f"data.root={args.data_root}")
        t0 = time.time()
        if not args.skip_train:
            imagegen.train(preset=preset, out=out, budget=args.budget, overrides=overrides)
        train_s = time.time() - t0
        model = imagegen.load(out, device="cpu")
        header = {"formulation": form, "preset": preset, "budget": args.budget, "step": model.step,
                  "train_s_this_call": round(train_s), "device": hw, "commit": commit, "seed": args.seed}
        print(json.dumps({"case": "run", **header}), flush=True)
        for sampler in [s for s in args.samplers.split(",") if s]:
            for nfe in [int(v) for v in args.nfe.split(",") if v]:
                steps = steps_for(sampler, nfe)
                opts = EvalOptions(metrics=args.metrics.split(","), n=args.n, batch_size=args.batch_size,
                                   seed=args.seed, data_root=args.data_root, device=args.device,
                                   inception_weights=args.inception_weights, progress=False)
                t1 = time.time()
                res = evaluate_run(out, opts, {"sampler": sampler, "steps": steps},
                                   out=out / f"quality-{sampler}-{nfe}-n{args.n}.json")
                row = {"formulation": form, "step": model.step, "sampler": sampler, "nfe": nfe, "steps": steps,
                       "n": args.n,
                       **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in res["summary"].items()},
                       "seconds": round(time.time() - t1)}
                print(json.dumps({**row, **header}), flush=True)
                rows.append(row)
    print()
    print(f"# {','.join(formulations)}, budget {args.budget} each, {hw}, commit {commit}, seed {args.seed}")
    _print_table(rows)


if __name__ == "__main__":
    run_main(main)
