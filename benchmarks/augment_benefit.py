"""Does training augmentation (``data.augment``) help a family on little data? Train the same recipe twice
on the first ``--limit`` training images, without and with ``--augment``, for the same wall-clock minutes
and seed, with the classifier Frechet distance (``cfd``: the packaged MNIST / Fashion-MNIST classifier's
features) measured during training; then print both curves side by side at the same minutes and the final
``imagegen eval``-style score of each.

    python benchmarks/augment_benefit.py --family vae --data mnist --limit 2000 --minutes 20 \
        --augment rotate:10,translate:2,scale:0.9-1.1 --data-root /work/shared/data --out-dir bench-augment

Run it on an idle machine: the two runs must see the same compute for "the same minutes" to mean anything
(``--threads`` fixes torch's CPU threads). Each run directory keeps its ``evals.jsonl`` (step, elapsed_s,
fid_clf) and ``config.json`` (which records ``data.augment``). One JSON line per run, then a table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from _bench import run_main  # benchmarks/_bench.py, beside this script


def _evals(run: Path) -> list[dict]:
    path = run / "evals.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _at(evals: list[dict], seconds: float) -> float | None:
    """The last fid_clf measured at or before ``seconds`` of training."""
    seen = [e["fid_clf"] for e in evals if e["elapsed_s"] <= seconds + 1e-6 and "fid_clf" in e]
    return seen[-1] if seen else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="vae")
    ap.add_argument("--preset", default=None, help="a named recipe instead of the family's defaults")
    ap.add_argument("--data", default="mnist", help="mnist or fashion-mnist (the classifier FD needs one)")
    ap.add_argument("--limit", type=int, default=2000, help="training images (data.limit)")
    ap.add_argument("--minutes", type=float, default=20.0, help="wall-clock budget of each run")
    ap.add_argument("--augment", default="rotate:10,translate:2,scale:0.9-1.1", help="data.augment of the 2nd run")
    ap.add_argument("--eval-every", type=int, default=500, help="steps between classifier-FD evaluations")
    ap.add_argument("--eval-n", type=int, default=1000, help="samples per evaluation during training")
    ap.add_argument("--n-final", type=int, default=5000, help="samples of the final evaluation (0: skip)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="more config overrides")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", default="bench-augment")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import imagegen
    from imagegen.evaluation import evaluate_run
    from imagegen.provenance import commit_label

    commit = commit_label()
    common = [f"data.limit={args.limit}", f"train.eval_every={args.eval_every}", "train.eval_metrics=cfd",
              f"train.eval_n={args.eval_n}", f"train.seed={args.seed}", *args.overrides]
    rows = []
    for name, augment in (("plain", ""), ("augmented", args.augment)):
        out = Path(args.out_dir) / f"{args.family}-{args.data}-{name}"
        run = imagegen.train(args.family, preset=args.preset, data=args.data, data_root=args.data_root,
                             out=out, budget=args.minutes, overrides=common + [f"data.augment={augment}"],
                             fresh=True, progress=False)
        final = None
        if args.n_final:
            result = evaluate_run(run, metrics="cfd", n=args.n_final, data_root=args.data_root, seed=args.seed,
                                  progress=False)
            final = result["summary"].get("fid_clf")
        evals = _evals(run)
        row = {"run": str(run), "family": args.family, "data": args.data, "limit": args.limit,
               "augment": augment, "minutes": args.minutes, "evals": len(evals), "final_fid_clf": final,
               "n_final": args.n_final, "threads": torch.get_num_threads(), "seed": args.seed, "commit": commit}
        rows.append((row, evals))
        print(json.dumps(row), flush=True)
    print()
    print("| minutes | classifier FD, plain | classifier FD, augmented |")
    print("|---|---|---|")
    times = [e["elapsed_s"] for e in rows[0][1]]  # the plain run's evaluation times; the other at the same minutes
    for t in times:
        a, b = (_at(evals, t) for _, evals in rows)
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        print(f"| {t / 60:.2f} | {fmt(a)} | {fmt(b)} |")
    print(f"| final ({args.n_final} samples) | {rows[0][0]['final_fid_clf']} | {rows[1][0]['final_fid_clf']} |")


if __name__ == "__main__":
    run_main(main)
