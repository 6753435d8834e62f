"""Runs: score one (:func:`evaluate_run`) or several side by side (:func:`compare_runs`), write and print
results, and read back the result files a run directory keeps (:func:`saved_results`, the one reader that
``imagegen info``, the report and the web app share)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import torch

from .. import zoo
from ..checkpoint import atomic_write_bytes
from ..errors import ImagegenError
from ..model import check_options, load
from ..provenance import git_commit
from .generation import balanced_labels, generate_uint8, generation_partial, sample_options_protocol, takes
from .metrics_table import CLASSIFIER_METRICS, COMPARE_COLUMNS, GENERATIVE, LABEL_METRICS, METRICS
from .options import FEATURES, EvalOptions, check_counts, eval_options, parse_list, parse_metrics
from .scoring import evaluate_images, has_nll, score_nll

# the sampling options a run's protocol also names at its top level, for tables and 'imagegen info'
PROTOCOL_SAMPLE_OPTIONS = ("sampler", "steps", "guidance", "temperature", "truncation", "eta")


def evaluate_run(path: str | Path, opts: EvalOptions | None = None, sample_options: dict | None = None,
                 out: str | Path | None = None, **options) -> dict:
    """Load a run (its newest checkpoint) or checkpoint file, generate, and evaluate. ``options`` are
    EvalOptions fields, e.g. ``evaluate_run("runs/x", metrics="fid,kid", n=2000, device="cpu")``."""
    git_commit()  # fixed now, before the long part (see git_commit)

    opts = eval_options(opts, options)
    sample_options = dict(sample_options or {})
    check_counts(opts, 1)
    parse_metrics(opts)
    return evaluate_model(load(path, device=opts.device), path, opts, sample_options, out)


def evaluate_model(model, path, opts: EvalOptions, sample_options: dict, out=None) -> dict:
    """``evaluate_run`` on a model already loaded, with ``opts.metrics``/``opts.features`` already parsed."""
    metrics = opts.metrics
    dataset = model.config.data.name
    if dataset.startswith("folder:") and any(m in metrics for m in CLASSIFIER_METRICS):
        raise ImagegenError(f"classifier metrics ({', '.join(CLASSIFIER_METRICS)}) need mnist, fashion-mnist or "
                            "binarized-mnist; this run was trained on a folder")
    if hasattr(model, "fam") and sample_options:
        check_options(model.fam.sample, sample_options, f"{model.family}.sample")
    base_cfg = model.config.data
    if opts.data_root is None:
        opts.data_root = base_cfg.root
    ckpt = getattr(model, "path", None)
    run_proto = {"run": str(path), "checkpoint": str(ckpt) if ckpt else "EMA weights in memory, during training",
                 "checkpoint_step": model.step, "family": model.family,
                 "sample_options": sample_options_protocol(model, sample_options)}
    for k in PROTOCOL_SAMPLE_OPTIONS:
        if k in run_proto["sample_options"]:
            run_proto[k] = run_proto["sample_options"][k]

    result = {"summary": {}, "metrics": {}, "protocol": {}}
    partial = None  # where the generated images are kept until the numbers exist
    if any(m in GENERATIVE for m in metrics):
        cond = model.class_conditional
        labels = balanced_labels(opts.n, model.info.num_classes) if cond else None
        if not cond and any(m in metrics for m in LABEL_METRICS):
            raise ImagegenError(f"{' and '.join(LABEL_METRICS)} need a class-conditional model (train with "
                                "--set model.class_cond=true); drop them from --metrics")
        t0 = time.time()
        partial = generation_partial(model, opts, run_proto["sample_options"], cond)
        gen = generate_uint8(model, opts.n, labels, opts.seed, opts.batch_size, sample_options, opts.progress,
                             resume=partial)
        gen_seconds = time.time() - t0
        run_proto.update(seed=opts.seed, seed_scheme="image i uses imagegen.rng.image_seed(seed, i), at any "
                                                     "batch size", labels="balanced (i mod K)" if cond
                         else None, generation_seconds=round(gen_seconds, 3))
        if partial is not None and partial.resumed_rows:  # generation_seconds then timed only the rest
            run_proto["generation_resumed_rows"] = partial.resumed_rows
        result = evaluate_images(gen, labels, dataset, opts, run_proto, base_cfg)
    if "nll" in metrics:
        score_nll(model, opts, run_proto, result)
    if out is not None:
        write_result(result, out)
    if partial is not None:
        partial.discard()  # kept until here: a stop during feature extraction does not redo the sampling
    return result


def applicable(model, metrics: list[str]) -> tuple[list[str], dict[str, str]]:
    """The requested metrics a run can be scored on, and why each of the others is left out."""
    cond = model.class_conditional
    skipped = {}
    for m in metrics:
        if m in LABEL_METRICS and not cond:
            skipped[m] = "not class-conditional"
        elif m == "nll" and not has_nll(model.family):
            skipped[m] = f"the {model.family} family has no likelihood"
    return [m for m in metrics if m not in skipped], skipped


def compare_runs(paths: list, opts: EvalOptions | None = None, sample_options: dict | None = None,
                 out: str | Path | None = None, **options) -> dict:
    """Score several runs of one dataset with one protocol (same metrics, N, reference split and feature
    networks; the reference features are computed once and cached) and put them side by side with what
    each cost: training time and images, parameters, sampling speed.

    A metric a run cannot have (``nll`` for a GAN, ``cacc``/``cas`` for an unconditional model, ``nll`` for
    an EDM diffusion model) is left out of its row with the reason, not an error. ``sample_options`` go to
    the families whose ``sample`` takes them with that value (``steps`` to diffusion; ``sampler=dpmpp-2m`` to
    diffusion but not to PixelCNN, whose samplers are naive/cached) and are recorded per row."""
    git_commit()  # fixed now, before the long part (see git_commit)

    opts = eval_options(opts, options)
    paths = zoo.expand([paths] if isinstance(paths, (str, Path)) else list(paths))  # zoo:* -> each zoo model
    if not paths:
        raise ImagegenError("give at least one run directory to compare")
    check_counts(opts, 1)
    metrics = parse_list(opts.metrics, METRICS, "metric")
    if not metrics:
        raise ImagegenError(f"no metrics requested; pass --metrics with some of: {', '.join(METRICS)}")
    features = parse_list(opts.features, FEATURES, "feature network") or ["inception"]
    models = [load(p, device=opts.device) for p in paths]
    data = [(m.config.data.name, m.info.channels, m.info.size) for m in models]
    for p, d in zip(paths[1:], data[1:]):
        if d != data[0]:
            raise ImagegenError(f"{paths[0]} was trained on {data[0][0]} ({data[0][1]}x{data[0][2]}x{data[0][2]}) "
                                f"but {p} on {d[0]} ({d[1]}x{d[2]}x{d[2]}); compare runs of one dataset and size")
    sample_options = dict(sample_options or {})
    unused = [k for k, v in sample_options.items() if not any(takes(m.fam, k, v) for m in models)]
    if unused:
        k = unused[0]
        raise ImagegenError(f"--{k} {sample_options[k]} is taken by none of these runs' families "
                            f"({', '.join(sorted({m.family for m in models}))}); drop it or change it")
    rows, results = [], []
    for path, model in zip(paths, models):
        run_metrics, skipped = applicable(model, metrics)
        run_options = {k: v for k, v in sample_options.items() if takes(model.fam, k, v)}
        row = {"run": str(path), "family": model.family, "step": model.step,
               "kimg": round(model.meta.get("images_seen", 0) / 1000, 1),
               "train_s": round(float(model.meta.get("elapsed_s", 0.0)), 1),
               "params_m": round(sum(p.numel() for p in model.module.parameters()) / 1e6, 3),
               "sample_options": sample_options_protocol(model, run_options), "skipped": dict(skipped)}
        result = {"summary": {}, "metrics": {}, "protocol": {}}
        generative = [m for m in run_metrics if m in GENERATIVE]
        if generative:
            result = evaluate_model(model, path, replace(opts, metrics=generative, features=list(features)),
                                    run_options)
        if "nll" in run_metrics:
            try:
                nll = evaluate_model(model, path, replace(opts, metrics=["nll"], features=list(features)), {})
            except ImagegenError as e:  # e.g. an EDM diffusion model has no bound: say why, keep the rest
                row["skipped"]["nll"] = str(e)
            else:
                result["summary"].update(nll["summary"])
                result["metrics"].update(nll["metrics"])
                result["protocol"] = result["protocol"] or nll["protocol"]
        seconds = result["protocol"].get("generation_seconds")
        if seconds:  # sampling plus quantising to uint8, at --batch-size
            row["sample_img_per_s"] = round(opts.n / seconds, 1)
        row.update({k: result["summary"][k] for k in COMPARE_COLUMNS if k in result["summary"]})
        rows.append(row)
        results.append(result)
    times = [r["train_s"] for r in rows if r["train_s"] > 0]
    warning = None
    if len(times) > 1 and max(times) > 1.2 * min(times):
        warning = (f"training times differ ({min(times):.0f} s to {max(times):.0f} s); for an equal-compute "
                   "comparison train every run with the same --budget on the same machine")
    comparison = {"rows": rows, "warning": warning, "metrics": metrics, "n": opts.n, "ref": opts.ref,
                  "features": features, "dataset": data[0][0], "results": results}
    if out is not None:
        write_result(comparison, out)
    return comparison


def format_comparison(comparison: dict) -> str:
    """The comparison as a Markdown table (one row per run; '-' where a run has no such number)."""
    cols = [c for c in COMPARE_COLUMNS if any(c in r for r in comparison["rows"])]
    head = ["run", "family", "step", "kimg", "train s", "params (M)", "sample img/s", *cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in comparison["rows"]:
        cells = [r["run"], r["family"], str(r["step"]), f"{r['kimg']:g}", f"{r['train_s']:.0f}", f"{r['params_m']:g}",
                 f"{r['sample_img_per_s']:g}" if "sample_img_per_s" in r else "-"]
        cells += [f"{r[c]:.4g}" if c in r else "-" for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"{r['run']}: {m} left out ({why})" for r in comparison["rows"] for m, why in r["skipped"].items()]
    if comparison.get("warning"):
        notes.append(f"warning: {comparison['warning']}")
    return "\n".join(lines + notes)


def write_result(result: dict, out: str | Path) -> Path:
    out = Path(out)
    atomic_write_bytes((json.dumps(result, indent=2, default=_json_default) + "\n").encode(), out)
    return out


def _json_default(o):
    if isinstance(o, (torch.Tensor,)):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def format_summary(result: dict) -> str:
    """A small aligned table of the summary numbers for the terminal."""
    rows = [(k, v) for k, v in result["summary"].items()]
    if not rows:
        return "(no metrics)"
    width = max(len(k) for k, _ in rows)
    lines = []
    for k, v in rows:
        text = f"{v:.6g}" if isinstance(v, float) else str(v)
        lines.append(f"{k:<{width}}  {text}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- saved results


def saved_results(run_dir: str | Path) -> Iterator[tuple[Path, dict]]:
    """Every result JSON a run directory keeps (eval's, compare's, eval-nll's, the benchmarks'), in name
    order, as (path, parsed dict); config.json, sampling.json (the run's sampling defaults), files that do not
    parse and JSON that is not an object are passed over. The one reader behind ``imagegen info``, the report
    and the web app."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    for p in sorted(run_dir.glob("*.json")):
        if p.name in ("config.json", "sampling.json"):
            continue
        try:
            d = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(d, dict):
            yield p, d


def is_nll_result(d: dict) -> bool:
    """Whether a result is eval-nll's (flat ``nats``, ``bits_per_dim``, ``split``, ``n``; since the NLL paths
    were merged it also carries an eval-style ``summary``)."""
    return isinstance(d.get("nats"), (int, float)) and isinstance(d.get("bits_per_dim"), (int, float))
