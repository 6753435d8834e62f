"""Five CPU minutes (issue 20, docs/speedrun.md): the best recipe of every family beside the recipes a CPU user
would otherwise copy, each trained for the same wall clock alone on the machine, then scored with one protocol.

    # everything: the four families' *-5m recipes (one shared first stage), the family baselines, the peers
    OMP_NUM_THREADS=2 python benchmarks/speedrun.py --data mnist --data-root ../shared/data --budget 5m \\
        --inception-weights ../shared/weights/inception-2015-12-05-features.pt --out runs/speedrun-mnist-5m

    # score again (other N or metrics) without training
    python benchmarks/speedrun.py --data mnist --data-root ../shared/data --skip-train --out runs/speedrun-mnist-5m

Every row trains for ``--budget`` of wall clock in all. A latent recipe's budget includes its first stage: the
shared autoencoder (``autoencoder-mnist`` preset) trains for ``--ae-budget``, encoding the training split takes E
seconds (timed once, charged to every latent row), and the second stage trains for the rest
(benchmarks/latent_quality.py, whose machinery this script uses). A peer (benchmarks/speedrun_peers.py) counts
everything it does, loading the data included. Training runs one after another, never two at once; scoring comes
after all training, so it cannot slow a timed run. Each row: ``--n`` samples (balanced labels for a
class-conditional recipe) against as many random test images: classifier FD (``cfd``, the shipped classifier's
features), classifier score (``cscore``), class accuracy (``cacc``) for conditional rows, Inception FID when the
weights are given; plus the time to draw 64 samples and a 64-image grid. The ``real`` row scores ``--n`` random
training images the same way: the floor every number is read against.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import latent_quality as lq  # benchmarks/latent_quality.py, beside this script
import speedrun_peers as peers  # benchmarks/speedrun_peers.py
from _bench import pick, run_main, save_row
from imagegen.provenance import commit_label, hardware_label

GUIDED_FLOW = {"sampler": "dpmpp-2m", "steps": 10, "guidance": 2.0}
# name -> (family, preset, extra --set overrides, latent?, sampling options); the same shape as latent_quality's
RECIPES: dict[str, tuple[str, str | None, list[str], bool, dict]] = {
    # our four families, each at its best measured 5-minute recipe (the presets' headers give the numbers)
    "diffusion-5m": ("diffusion", "ldm-mnist-5m", [], True, GUIDED_FLOW),
    "pixelcnn-5m": ("pixelcnn", "latent-pixelcnn-mnist-5m", [], True, {"guidance": 2.0, "temperature": 0.4}),
    "vae-5m": ("vae", "latent-vae-mnist-5m", [], True, {"temperature": 0.8}),
    "gan-5m": ("gan", "gan-mnist-5m", [], False, {}),
    # what a user starts from: the family defaults / the old presets, at the same minutes
    "pixelcnn-defaults": ("pixelcnn", None, [], False, {}),
    "ddpm-mnist": ("diffusion", "ddpm-mnist", [], False, {"sampler": "dpmpp-2m", "steps": 10}),
    "vae-mnist": ("vae", "vae-mnist", [], False, {}),
    "gan-mnist-modern": ("gan", "gan-mnist-modern", [], False, {}),
}
DEFAULT = "diffusion-5m,pixelcnn-5m,vae-5m,gan-5m"
# the sampling levers of the ablation: the same trained run scored again with each of these instead
ABLATE_SAMPLING: dict[str, list[dict]] = {
    "diffusion-5m": [{**GUIDED_FLOW, "guidance": 1.0}, {**GUIDED_FLOW, "guidance": 3.0}],
    "pixelcnn-5m": [{"guidance": 1.0}, {"guidance": 2.0}, {"guidance": 3.0}, {"guidance": 1.0, "temperature": 0.4},
                    {"guidance": 2.0, "temperature": 0.7}],
    "vae-5m": [{"temperature": 1.0}, {"temperature": 1.0, "prior": "standard"},
               {"temperature": 0.8, "prior": "standard"}],
    "gan-5m": [{"truncation": 1.5}],
}


def _ablation_rows(args, names: list[str]) -> list[dict]:
    """Each recipe's sampling levers on its one trained run (classifier metrics only: cheap, and what the
    ablation table compares)."""
    import imagegen

    rows = []
    for name in names:
        for opts in ABLATE_SAMPLING.get(name, []):
            res = imagegen.evaluate_run(args.out / name, metrics="cfd,cscore,cacc", n=args.n, ref="test",
                                        data_root=args.data_root, seed=args.seed, sample_options=opts)
            rows.append({"recipe": f"{name} {json.dumps(opts)}", "family": RECIPES[name][0],
                         "sampling": json.dumps(opts),
                         **{k: v for k, v in res["summary"].items() if isinstance(v, (int, float))}})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def _real_row(args) -> dict:
    """``--n`` random training images scored as a model's samples: the train-vs-test floor at the same N."""
    from imagegen.config import DataConfig
    from imagegen.data import load_dataset, save_image_array, to_uint8

    train = load_dataset(DataConfig(name=args.data, root=str(args.data_root) if args.data_root else None), "train")
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed + 1))[:args.n]
    arr = args.out / f"real-train-{args.n}.npz"
    save_image_array(arr, to_uint8(train.batch(idx).x), train.labels[idx])
    res = lq.score_folder(args, arr)
    return {"recipe": "real", "family": "-", "sampling": f"{args.n} random training images", **res}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="mnist", help="mnist or fashion-mnist (the datasets with a shipped classifier)")
    p.add_argument("--data-root", type=Path, default=None)
    lq.add_common_arguments(p)
    p.add_argument("--recipes", default=DEFAULT, help=f"comma list of: {', '.join(RECIPES)} (empty: none)")
    p.add_argument("--peers", default=",".join(peers.PEERS), help=f"comma list of: {', '.join(peers.PEERS)}")
    p.add_argument("--ddpm-steps", type=int, default=20,
                   help="the hf-ddpm peer's DDIM steps (its course samples 1000 DDPM steps: hours for 2,000 on a CPU)")
    p.add_argument("--no-ablation", action="store_true", help="skip scoring the sampling levers (ABLATE_SAMPLING)")
    p.add_argument("--out", type=Path, default=Path("runs/speedrun"))
    args = p.parse_args()
    names = pick(args.recipes, RECIPES, "recipe")
    peer_names = pick(args.peers, peers.PEERS, "peer")
    if args.inception_weights is None:  # Inception FID needs the local weights (no download here)
        args.metrics = ",".join(m for m in args.metrics.split(",") if m != "fid")
    args.out.mkdir(parents=True, exist_ok=True)
    ae_dir = args.out / "first-stage"
    budget_s = lq.minutes(args.budget) * 60
    peer_opts = {"data": args.data, "data_root": args.data_root, "budget_s": budget_s, "n": args.n,
                 "seed": args.seed, "sampling": {"sampler": "ddim", "steps": args.ddpm_steps}}

    # ---- train: one after another, nothing else running
    if not args.skip_train:
        first_stage_minutes = 0.0
        if any(RECIPES[r][3] for r in names):
            first_stage_minutes = lq.first_stage_for(args, ae_dir, lq.minutes(args.ae_budget))
        for name in names:
            lq.train_recipe(args, name, ae_dir, first_stage_minutes, RECIPES)
        for name in peer_names:
            peers.run_peer(name, args.out, skip_score=True, **peer_opts)
    if args.skip_score:
        return

    # ---- score, after all training
    rows = [_real_row(args)]
    if any(RECIPES[r][3] for r in names):
        rows.append(lq.score_first_stage(args, ae_dir))
    rows += [lq.score_recipe(args, name, RECIPES) for name in names]
    if not args.no_ablation:
        rows += _ablation_rows(args, names)
    for name in peer_names:
        row = json.loads((args.out / f"row-{name}.json").read_text())  # what run_peer wrote after training
        rows.append(peers.score_peer(row, args.out, data=args.data, data_root=args.data_root,
                                     n=args.n, seed=args.seed, inception_weights=args.inception_weights,
                                     metrics=args.metrics))
    header = {"command": "benchmarks/speedrun.py", "data": args.data, "budget": args.budget,
              "ae_budget": args.ae_budget, "n": args.n, "seed": args.seed, "commit": commit_label(),
              "hardware": hardware_label("cpu"), "threads": torch.get_num_threads()}
    (args.out / "results.json").write_text(json.dumps({"header": header, "rows": rows}, indent=2))
    for row in rows:
        print()
        save_row(row, args.out / f"row-{row['recipe'].replace(' ', '-')}.json")
    print(json.dumps(header))
    print(markdown_table(rows))


def markdown_table(rows: list[dict]) -> str:
    """The rows as the table docs/speedrun.md shows."""
    cols = [("recipe", "recipe"), ("step", "steps"), ("kimg", "kimg"), ("fid_clf", "classifier FD"),
            ("classifier_score", "classifier score"), ("class_accuracy", "class accuracy"),
            ("fid", "Inception FID"), ("sample64_s", "64 samples (s)")]
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + " --- |" * len(cols)]
    for r in rows:
        cells = []
        for key, _ in cols:
            v = r.get(key, "-")
            cells.append(f"{v:.3g}" if key == "class_accuracy" and isinstance(v, float) else
                         f"{v:.2f}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    run_main(main)
