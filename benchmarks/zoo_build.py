"""Build the model zoo (imagegen/zoo, docs/zoo.md) from a ``benchmarks/speedrun.py`` output folder.

    # train and score the four families' recipes (one shared first stage), alone on the machine
    OMP_NUM_THREADS=2 python benchmarks/speedrun.py --data mnist --data-root ../shared/data --budget 10m \\
        --ae-budget 3m --peers "" --no-ablation --out runs/speedrun-mnist-10m
    # then copy them into the package: one zoo entry per family, plus the first stage the latent ones use
    python benchmarks/zoo_build.py --from runs/speedrun-mnist-10m

Each entry keeps only what samples: the EMA weights (float32, exactly the weights the speedrun scored) of the
newest checkpoint, without the optimiser, the RNG or the raw weights (a quarter of the training checkpoint); its
config (``data.root`` cleared: a user's machine has its own, ``data.latent`` naming the zoo's first stage), the
training log, the evaluation the speedrun wrote, the 64-image grid it drew right after training, and the recipe's
sampling options as the run's ``sampling.json`` (so ``imagegen sample zoo:NAME`` draws the way it was measured).
The index records the sha256 of every checkpoint, checked whenever ``zoo:NAME`` is resolved, the training command,
commit and hardware from the speedrun's results.json, and the numbers of its rows.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import speedrun  # benchmarks/speedrun.py, beside this script: its RECIPES say family, latent and sampling
from _bench import pick, run_main
from imagegen import checkpoint, config, registry, zoo
from imagegen.cache import file_sha256
from imagegen.data import DataInfo
from imagegen.errors import ImagegenError
from imagegen.model import write_sample_defaults
from imagegen.provenance import commit_label

# speedrun row keys -> the metric names of imagegen eval
METRIC_KEYS = {"fid_clf": "cfd", "classifier_score": "cscore", "class_accuracy": "cacc", "fid": "fid",
               "psnr_db": "psnr_db"}


def _dataset_tag(data: str) -> str:
    return data  # mnist, fashion-mnist: the zoo names read diffusion-mnist, diffusion-fashion-mnist


def _rows(results: dict) -> dict[str, dict]:
    """The main row of each recipe (the one with its training step; ablation rows have none)."""
    return {r["recipe"]: r for r in results["rows"] if r.get("step") is not None or r["recipe"] == "real"}


def _replace_strings(obj, table: dict[str, str]):
    if isinstance(obj, str):
        return table.get(obj, obj)
    if isinstance(obj, list):
        return [_replace_strings(v, table) for v in obj]
    if isinstance(obj, dict):
        return {k: _replace_strings(v, table) for k, v in obj.items()}
    return obj


def export_run(src: Path, name: str, zoo_dir: Path, first_stage: tuple[str, Path] | None,
               extra_meta: dict) -> tuple[Path, int]:
    """Write ``src``'s newest checkpoint as the zoo entry ``name``: (checkpoint file, parameter count).
    ``extra_meta`` (the preset, the training hardware) goes into its metadata, where info and report read it."""
    ck = checkpoint.load(src)
    meta = {k: v for k, v in ck.meta.items() if k not in ("optim", "sampler", "format")}
    meta.update(extra_meta)
    cfg = dict(meta["config"])
    cfg["data"] = dict(cfg["data"], root=None)
    if first_stage is not None:
        fs_name, fs_file = first_stage
        cfg["data"]["latent"] = zoo.PREFIX + fs_name
        rec = dict(meta["latent"]["first_stage"], path=zoo.PREFIX + fs_name, sha256=file_sha256(fs_file),
                   relative_path=str(Path("..") / fs_name / "checkpoints" / fs_file.name))
        meta["latent"] = dict(meta["latent"], first_stage=rec)
    meta["config"] = cfg
    meta["zoo"] = {"name": name, "source": str(ck.path), "weights": "EMA" if ck.has_ema() else "raw",
                   "built_at_commit": commit_label()}
    fam = registry.get_family(meta["family"])
    latent = meta.get("latent")
    module = fam.build(config.from_saved(cfg).model,
                       DataInfo.from_dict(latent["data_info"] if latent else meta["data_info"]))
    ck.load_module(module, "ema" if ck.has_ema() else "model")
    out = zoo_dir / name
    if out.exists():
        shutil.rmtree(out)
    file = checkpoint.save(checkpoint.checkpoint_path(out, int(meta["step"])), meta=meta, model=module,
                           include_rng=False)
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    for log in ("metrics.jsonl", "evals.jsonl", "timing.json"):
        if (src / log).is_file():
            shutil.copy2(src / log, out / log)
    # the speedrun's evaluation, pointing at the zoo entry instead of the training folder
    paths = {str(src): zoo.PREFIX + name, str(src.resolve()): zoo.PREFIX + name,
             str(ck.path): str(file.relative_to(out)), str(ck.path.resolve()): str(file.relative_to(out))}
    for ev in sorted(src.glob("eval-*.json")):
        (out / ev.name).write_text(json.dumps(_replace_strings(json.loads(ev.read_text()), paths), indent=2) + "\n")
    return file, sum(p.numel() for p in module.parameters())


def markdown_table(models: dict[str, dict]) -> str:
    """The zoo as docs/zoo.md shows it."""
    lines = ["| model | family, recipe | trained | params | MB | classifier FD-2k | classifier score | class accuracy "
             "| Inception FID-2k |", "|" + " --- |" * 9]
    for name, e in models.items():
        m, t = e["metrics"], e["trained"]
        fs = f", on the codes of `zoo:{e['first_stage']}`" if e.get("first_stage") else ""
        cell = {k: (f"{100 * m[k]:.1f} %" if k == "cacc" else f"{m[k]:.2f}") if isinstance(m.get(k), float) else "-"
                for k in ("cfd", "cscore", "cacc", "fid")}
        if not e.get("draws_samples", True):
            fs = f" (first stage; reconstructions, PSNR {m.get('psnr_db', '-')} dB)"
        lines.append(f"| `zoo:{name}` | {e['family']}, `{e.get('recipe', '-')}`{fs} | {t['budget']} in all, step "
                     f"{t.get('step')}, commit {t['commit']} | {e['params']:,} | {e['bytes'] / 1e6:.2f} "
                     f"| {cell['cfd']} "
                     f"| {cell['cscore']} | {cell['cacc']} | {cell['fid']} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="src", type=Path, required=True, help="a benchmarks/speedrun.py --out folder")
    p.add_argument("--recipes", default=speedrun.DEFAULT, help=f"comma list of: {', '.join(speedrun.RECIPES)}")
    p.add_argument("--zoo-dir", type=Path, default=zoo.ZOO_DIR)
    args = p.parse_args()
    names = pick(args.recipes, speedrun.RECIPES, "recipe")
    res_file = args.src / "results.json"
    if not res_file.is_file():
        raise ImagegenError(f"{res_file} does not exist; run benchmarks/speedrun.py --out {args.src} first")
    results = json.loads(res_file.read_text())
    header, rows = results["header"], _rows(results)
    data = _dataset_tag(header["data"])
    command = (f"OMP_NUM_THREADS={header.get('threads', 2)} python benchmarks/speedrun.py --data {header['data']} "
               f"--data-root DATA --budget {header['budget']} --ae-budget {header['ae_budget']} --n {header['n']} "
               f"--seed {header['seed']} --out {args.src.name}; python benchmarks/zoo_build.py --from {args.src.name}")
    protocol = (f"{header['n']} samples (balanced labels where conditional) vs {header['n']} random test images, "
                f"seed {header['seed']}; cfd/cscore/cacc: the shipped classifier; fid: Inception, 2015-12-05 weights")
    trained = {"budget": header["budget"], "command": command, "commit": header["commit"],
               "hardware": header["hardware"], "scored_at": res_file.name}
    index_file = args.zoo_dir / zoo.INDEX
    index = json.loads(index_file.read_text()) if index_file.is_file() else {"format": zoo.FORMAT, "models": {}}

    def add(name: str, family: str, file: Path, params: int, row: dict, extra: dict) -> None:
        metrics = {v: row[k] for k, v in METRIC_KEYS.items() if isinstance(row.get(k), (int, float))}
        metrics["protocol"] = protocol
        index["models"][name] = {
            "family": family, "data": header["data"], "params": params, "bytes": file.stat().st_size,
            "sha256": file_sha256(file), "checkpoint": str(file.relative_to(args.zoo_dir)),
            "trained": {**trained, "step": row.get("step"), "kimg": row.get("kimg"), "train_s": row.get("train_s")},
            "metrics": metrics, **extra}
        print(f"zoo:{name}: {params:,} parameters, {file.stat().st_size / 1e6:.2f} MB, {metrics}")

    first_stage = None
    if any(speedrun.RECIPES[n][3] for n in names):
        fs_name = f"autoencoder-{data}"
        fs_file, params = export_run(args.src / "first-stage", fs_name, args.zoo_dir, None,
                                     {"preset": "autoencoder-mnist", "hardware": header["hardware"]})
        add(fs_name, "autoencoder", fs_file, params, rows.get("first-stage reconstructions", {}),
            {"recipe": "autoencoder-mnist", "draws_samples": False, "sampling": {},
             "role": "the first stage of the zoo's latent models (its codes are what they model)"})
        first_stage = (fs_name, fs_file)
    for recipe in names:
        family, preset, _, latent, sampling = speedrun.RECIPES[recipe]
        name = f"{family}-{data}"
        src = args.src / recipe
        if recipe not in rows:
            raise ImagegenError(f"{res_file} has no scored row for {recipe}; score it with benchmarks/speedrun.py "
                                f"--skip-train --out {args.src}")
        file, params = export_run(src, name, args.zoo_dir, first_stage if latent else None,
                                  {"preset": preset or recipe, "hardware": header["hardware"]})
        run = checkpoint.run_dir_of(file)
        write_sample_defaults(run, sampling, f"the sampling of the {recipe} row of {res_file.name}")
        grid = args.src / "grids" / f"{recipe}.png"
        if grid.is_file():  # the 64-image grid drawn right after training, where imagegen serve shows grids
            (run / "samples").mkdir(exist_ok=True)
            shutil.copy2(grid, run / "samples" / f"step-{int(rows[recipe]['step']):08d}.png")
        add(name, family, file, params, rows[recipe],
            {"recipe": preset or recipe, "draws_samples": True, "sampling": sampling,
             "first_stage": first_stage[0] if latent and first_stage else None})
    index["models"] = dict(sorted(index["models"].items()))
    index_file.write_text(json.dumps(index, indent=2) + "\n")
    total = sum(e["bytes"] for e in index["models"].values())
    print(f"wrote {index_file}: {len(index['models'])} models, {total / 1e6:.1f} MB")
    print(markdown_table(index["models"]))


if __name__ == "__main__":
    run_main(main)
