"""``imagegen report``: one self-contained HTML page that compares trained runs.

This module gathers the data (what each run is, its sample grid and completion strip, every number that was
computed for it with the protocol that produced it, the real-data floor at the same N, plots) into a plain
dict; the page itself is the Jinja2 template ``imagegen/templates/report.html.j2``. Images and plots are
embedded as base64 PNG (``data:`` URIs) and the style sheet is inline, so the file opens from disk with no
network and no script.

Only numbers that were computed are shown: the result JSONs of ``imagegen eval`` / ``compare`` /
``eval-nll`` / the benchmarks kept in a run directory (or passed with ``results=``), the in-training
evaluations in ``evals.jsonl``, and, when asked for, an ``imagegen.evaluate_run`` now. A number is only ever
compared with numbers of the same protocol (metric, N generated and N reference, reference split, feature
network): FID falls roughly as 1/N (docs/evaluation.md), so a FID-500 next to a FID-10k says nothing.
"""

from __future__ import annotations

import base64
import datetime as _dt
import inspect
import io
import json
import math
from pathlib import Path

import torch

from . import checkpoint, registry, zoo
from .api import load
from .checkpoint import atomic_write_bytes
from .config import check_range, replace
from .data import load_dataset, make_mask, to_float, to_uint8
from .errors import ImagegenError
from .evaluation import (
    FEATURES,
    LOWER_IS_BETTER,
    METRICS,
    balanced_labels,
    evaluate_run,
    parse_list,
    sample_options_protocol,
    saved_results,
    takes,
)
from .evaluation.metrics_table import CLASSIFIER_KEYS
from .evaluation.runs import applicable, is_nll_result
from .metrics.classifier import CLASSIFIER_DATASETS
from .metrics.fid import INCEPTION_NAME
from .provenance import __version__, commit_label

# display names and order of the metric table (result keys as imagegen.evaluation writes them)
METRIC_LABELS = {
    "fid": "FID (Inception)", "kid": "KID (Inception)", "precision": "precision", "recall": "recall",
    "density": "density", "coverage": "coverage",
    "fid_clf": "classifier FD", "kid_clf": "KID (classifier)", "precision_clf": "precision (classifier)",
    "recall_clf": "recall (classifier)", "density_clf": "density (classifier)", "coverage_clf": "coverage (classifier)",
    "classifier_score": "classifier score", "class_accuracy": "class accuracy", "cas": "CAS",
    "aug_gain": "augmentation gain", "nll_nats": "NLL (nats/image)", "bits_per_dim": "bits/dim",
}
# extras a result keeps next to a value (kid's std over subsets, the NLL's standard error)
_SPREAD = ("std", "sem")
# log keys that are not a metric of the run (bookkeeping of the trainer)
_NOT_METRICS = {"step", "kimg", "elapsed_s", "n", "eval_s", "img_per_s"}

# Real train images against real test images: the score a perfect model would get at that N, measured with
# benchmarks/reference_fid.py and documented in docs/evaluation.md ("Numbers: real train vs real test").
# Keyed by the feature network's sha256 so a floor is only shown beside numbers from the same network.
_INCEPTION_SHA = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"  # inception-2015-12-05
_CLF_SHA = {"mnist": "f9bbfbf8bf5e68fdd80dc6e66aa4c4e7f1aabc200af5fcf1975bd1c978dd8495",
            "fashion-mnist": "8934c30bf81813879ea364ac8321b2d2f18b829c002eff1264ab29d51b0a05c1"}
_FLOOR_SOURCE = "docs/evaluation.md (benchmarks/reference_fid.py, real train vs test, seed-0 subsets)"
_FLOOR_TABLE = {  # (dataset, metric): {N generated: value}; N reference = min(N, 10000)
    ("mnist", "fid"): {100: 50.24, 200: 34.25, 500: 19.26, 1000: 11.60, 2000: 6.48, 5000: 2.83, 10000: 1.56,
                       50000: 1.09},
    ("mnist", "kid"): {100: -0.40e-3, 200: -0.46e-3, 500: -0.26e-3, 1000: -0.09e-3, 2000: 0.04e-3, 5000: 0.16e-3,
                       10000: 0.15e-3, 50000: 0.12e-3},
    ("fashion-mnist", "fid"): {1000: 28.03, 2000: 15.24, 5000: 6.27, 10000: 3.12, 50000: 1.90},
    ("fashion-mnist", "kid"): {1000: 0.02e-3, 2000: 0.03e-3, 5000: 0.03e-3, 10000: 0.01e-3, 50000: -0.01e-3},
    ("mnist", "fid_clf"): {500: 29.21, 1000: 14.81, 2000: 8.48, 5000: 4.23, 10000: 3.08, 50000: 2.55},
    ("fashion-mnist", "fid_clf"): {500: 30.57, 1000: 11.38, 2000: 5.00, 5000: 2.08, 10000: 0.83, 50000: 0.56},
}
KNOWN_FLOORS = [
    {"dataset": ds, "metric": m, "n_gen": n, "n_ref": min(n, 10000), "ref": "test",
     "feature_sha": _INCEPTION_SHA if not m.endswith("_clf") else _CLF_SHA[ds], "value": v, "source": _FLOOR_SOURCE}
    for (ds, m), by_n in _FLOOR_TABLE.items() for n, v in by_n.items()]

KEEPS = ("top-half", "left-half", "bottom-half", "right-half")  # imagegen.data.make_mask
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f",
          "#bcbd22")


# ---------------------------------------------------------------------------------------------- entry point


def report(runs, out: str | Path, *, metrics: str | list[str] | None = None, n: int | None = None,
           ref: str = "test", features: str | list[str] = "inception", results=(), floors=(), seed: int = 0,
           n_grid: int = 64, n_complete: int = 8, keep: str = "top-half", complete: bool = True,
           sample_options: dict | None = None, device: str = "auto", data_root: str | None = None,
           inception_weights: str | None = None, title: str | None = None, progress: bool = True) -> Path:
    """Write one self-contained HTML report comparing ``runs`` (run directories or checkpoint files) to
    ``out`` (``.html``) and return its path.

    ``metrics`` with ``n``: also score every run now with ``imagegen.evaluate_run`` (same metrics, N,
    ``ref`` split, ``features`` and ``seed`` for all; a metric a run cannot have is left out with the
    reason). ``results``: more result JSONs of ``imagegen eval`` / ``compare`` (kept outside the runs);
    ``floors``: ``imagegen eval-folder`` results of real images, shown as the floor at their N. The sample
    grid (``n_grid`` images, seed ``seed``) and the completion strip (the same ``n_complete`` test images
    with ``keep`` known, for every run) use the family defaults overlaid with ``sample_options`` where a
    family takes them."""
    out = Path(out)
    if out.suffix.lower() != ".html":
        raise ImagegenError(f"--out {out}: a report is one HTML file; end the name in .html")
    html = render(build(runs, metrics=metrics, n=n, ref=ref, features=features, results=results, floors=floors,
                        seed=seed, n_grid=n_grid, n_complete=n_complete, keep=keep, complete=complete,
                        sample_options=sample_options, device=device, data_root=data_root,
                        inception_weights=inception_weights, title=title, progress=progress))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(html.encode("utf-8"), out)
    return out


def render(context: dict) -> str:
    """The page: ``context`` (from :func:`build`) through the packaged template."""
    import jinja2  # optional: only building a page needs it

    env = jinja2.Environment(loader=jinja2.PackageLoader("imagegen", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), trim_blocks=True,
                             lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["num"] = fmt
    env.filters["seconds"] = seconds
    return env.get_template("report.html.j2").render(**context)


def fmt(value, digits: int = 4) -> str:
    """A number as the report prints it: 4 significant digits, thousands separated for counts."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


def seconds(s: float) -> str:
    """A duration for people: 0.42 s, 95 s, 31.5 min, 2.1 h."""
    if s < 10:
        return f"{s:.2g} s"
    if s < 600:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


# ---------------------------------------------------------------------------------------------- building


def _check_runs(runs) -> list[tuple[Path, Path]]:
    """(argument, run directory) per run; an unknown path or a run without checkpoints is a one-line error."""
    runs = zoo.run_paths([runs] if isinstance(runs, (str, Path)) else list(runs))  # zoo:NAME, zoo:* too
    if not runs:
        raise ImagegenError("give at least one run directory to report on")
    checked = []
    for r in runs:
        p = Path(r)
        if not p.exists():
            raise ImagegenError(f"run {p} does not exist; pass run directories made by 'imagegen train' "
                                f"(or their checkpoint files)")
        if p.is_dir() and checkpoint.latest(p) is None:
            raise ImagegenError(f"{p} has no checkpoints (looked for {p}/checkpoints/ckpt-*.safetensors); train it "
                                f"first ('imagegen train ... --out {p}') or pass another run")
        run_dir = p if p.is_dir() else (checkpoint.run_dir_of(p) or p.parent)
        checked.append((p, run_dir))
    return checked


def _labels(paths: list[Path]) -> list[str]:
    """Short unique names: the run directory's name (a checkpoint file: its run's, or else its folder's, and its
    stem), with the parent folder where two share one."""
    names = [p.name if p.is_dir() else f"{(checkpoint.run_dir_of(p) or p.parent).name}/{p.stem}" for p in paths]
    shared = {name for name in names if names.count(name) > 1}
    return ["/".join(p.resolve().parts[-2:]) if name in shared else name for p, name in zip(paths, names)]


def build(runs, *, metrics=None, n=None, ref="test", features="inception", results=(), floors=(), seed=0,
          n_grid=64, n_complete=8, keep="top-half", complete=True, sample_options=None, device="auto",
          data_root=None, inception_weights=None, title=None, progress=True) -> dict:
    """Everything the template shows, as plain data (see the module docstring)."""
    checked = _check_runs(runs)
    if keep not in KEEPS:
        raise ImagegenError(f"--keep {keep}: choose one of {', '.join(KEEPS)}")
    check_range(n_grid, "[1,inf)", "--n-grid")
    check_range(n_complete, "[1,inf)", "--n-complete")
    metric_list = parse_list(metrics, METRICS, "metric") if metrics else []
    if metric_list and n is None:
        raise ImagegenError("--metrics needs --n (how many images to generate per run, e.g. --n 2000)")
    if n is not None and not metric_list:
        raise ImagegenError("--n needs --metrics (which numbers to compute now, e.g. --metrics fid,kid)")
    feature_list = parse_list(features, FEATURES, "feature network") or ["inception"]
    result_files = [Path(p) for p in results]
    floor_files = [Path(p) for p in floors]
    for p in result_files + floor_files:
        if not p.is_file():
            raise ImagegenError(f"result file {p} does not exist")
    labels = _labels([p for p, _ in checked])
    entries_by_run: dict[str, list[dict]] = {}
    cards = []
    for i, ((path, run_dir), label) in enumerate(zip(checked, labels)):
        model = load(path, device=device)
        card = _run_card(model, path, run_dir, label, COLORS[i % len(COLORS)], seed, n_grid, n_complete, keep,
                         complete, dict(sample_options or {}), data_root, progress)
        entries = _saved_entries(run_dir, label)
        entries += _jsonl_entries(run_dir, label, model)
        if metric_list:
            entries += _compute_now(model, path, label, card, metric_list, n, ref, feature_list, seed, device,
                                    data_root, inception_weights, dict(sample_options or {}), progress)
        entries_by_run[label] = entries
        cards.append(card)
        del model
    for p in result_files:
        _attach_external(p, checked, labels, entries_by_run)
    floor_rows = KNOWN_FLOORS + [f for p in floor_files for f in _floor_entries(p)]
    for card in cards:
        card["results"] = _results_by_source(entries_by_run[card["label"]])
        card["eval_hardware"] = _eval_hardware(entries_by_run[card["label"]])
    table = _metric_table(cards, entries_by_run, floor_rows)
    plots = _plots(cards, entries_by_run, floor_rows)
    datasets = sorted({c["data"]["name"] for c in cards})
    return {"title": title or ("imagegen report: " + ", ".join(labels)), "cards": cards, "table": table,
            "plots": plots, "summary": _summary(cards, table, entries_by_run), "datasets": datasets,
            "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "version": _version(), "seed": seed, "n_grid": n_grid, "keep": keep,
            "computed_now": {"metrics": metric_list, "n": n, "ref": ref,
                             "features": feature_list if set(metric_list) - {"nll"} else []}
            if metric_list else None}


def _version() -> str:
    return f"imagegen {__version__}, commit {commit_label()}"


# ---------------------------------------------------------------------------------------------- one run


def _run_card(model, path, run_dir, label, color, seed, n_grid, n_complete, keep, complete, sample_options,
              data_root, progress) -> dict:
    meta, cfg, info = model.meta, model.config, model.info
    saved = cfg.to_dict()
    params = sum(p.numel() for p in model.module.parameters())
    logs = _read_jsonl(run_dir / "metrics.jsonl")
    card = {
        "label": label, "path": str(path), "color": color, "family": model.family,
        "preset": saved.get("preset") or meta.get("preset"),
        "model_config": saved.get("model", {}), "config_json": json.dumps(saved, indent=2),
        "data": {"name": info.name or cfg.data.name, "shape": f"{info.channels}x{info.size}x{info.size}",
                 "classes": info.num_classes, "class_cond": model.class_conditional},
        "step": model.step, "images_seen": int(meta.get("images_seen", 0)),
        "train_s": float(meta.get("elapsed_s", 0.0)), "params": params,
        "hardware": meta.get("hardware"), "checkpoint": Path(model.path).name if model.path else None,
        "batch_size": cfg.train.batch_size, "lr": cfg.train.lr,
        "notes": [], "logs": logs, "evals": _read_jsonl(run_dir / "evals.jsonl"),
    }
    # the sample grid: the same seed for every run, labels 0, 1, ..., K-1, 0, ... for class-conditional models
    opts = {k: v for k, v in sample_options.items() if takes(model.fam, k, v)}
    y = balanced_labels(n_grid, info.num_classes) if model.class_conditional else None
    x = model.sample(n_grid, labels=y, seed=seed, batch_size=min(n_grid, 256), progress=progress, **opts)
    nrow = min(n_grid, 8 if n_grid <= 64 else 16)
    card["grid"] = _grid_image(x, nrow)
    card["grid_options"] = ", ".join(f"{k} {v}" for k, v in sample_options_protocol(model, opts).items())
    card["grid_labels"] = "labels 0, 1, ..., K-1 in turn" if y is not None else None
    card["completion"] = _completion(model, n_complete, keep, seed, data_root, sample_options) if complete else \
        {"note": "completion strips were turned off (--no-complete)"}
    card["loss_plot"] = _loss_plot(logs, label, color)
    return card


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a line cut short by a crash: the rest is still worth plotting
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _png(image) -> dict:
    """A PIL image as a data URI with its size (the template scales small grids up, pixelated)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    scale = max(1, min(6, round(280 / max(1, image.width))))  # 8x8 grids: 16x16 digits at 2x, MNIST at 1x
    return {"src": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"),
            "width": image.width * scale, "height": image.height * scale}


def _grid_image(x: torch.Tensor, nrow: int, pad_value: float = 1.0) -> dict:
    from PIL import Image  # image libraries load only when a page is built
    from torchvision.utils import make_grid

    grid = make_grid(to_uint8(x.float().cpu()), nrow=nrow, padding=1, pad_value=int(255 * pad_value))  # (3, H, W)
    return _png(Image.fromarray(grid.permute(1, 2, 0).numpy()))


def _completion(model, k: int, keep: str, seed: int, data_root, sample_options: dict) -> dict:
    """The same ``k`` test images for every run (the first of each class where the split is labelled), with
    ``keep`` known: rows original, input, completion. A note instead where it cannot be made. The sampling
    options that the family's ``complete`` also takes (diffusion: steps) go to it too."""
    if "complete" not in registry.capabilities(model.family):
        return {"note": f"the {model.family} family has no 'complete'"}
    data_cfg = replace(model.config.data, limit=None, download=False,
                       root=data_root if data_root is not None else model.config.data.root)
    try:
        ds = load_dataset(data_cfg, "test").fixed_binarization(0)
    except ImagegenError as e:
        return {"note": f"no completion strip: the test split is not on disk ({str(e).split(';')[0]})"}
    try:
        mask = make_mask(keep, model.info)
    except ImagegenError as e:
        return {"note": f"no completion strip: {e}"}
    idx = _pick_images(ds.labels, k, len(ds))
    x = to_float(ds.images[idx].cpu())
    if tuple(x.shape[1:]) != (model.info.channels, model.info.size, model.info.size):
        return {"note": f"no completion strip: the test images are {tuple(x.shape[1:])}, the model's "
                        f"{(model.info.channels, model.info.size, model.info.size)}"}
    labels = None
    if model.class_conditional:  # a conditional model completes each image given its own (true) class
        if ds.labels is None:
            return {"note": "no completion strip: the model is class-conditional and the test split has no labels"}
        labels = ds.labels[idx].cpu()
    m = mask.expand(x.shape[0], -1, -1, -1)
    complete_takes = inspect.signature(model.fam.complete).parameters
    opts = {key: v for key, v in sample_options.items()
            if key in complete_takes and key not in ("labels", "generator") and takes(model.fam, key, v)}
    filled = model.complete(x, m, labels=labels, seed=seed, **opts)
    shown = x * m + (1 - m) * -1  # the unknown part blacked out
    return {"image": _grid_image(torch.cat([x, shown, filled]), x.shape[0]), "keep": keep,
            "images": "the first test image of each class" if ds.labels is not None and k <= ds.info.num_classes
            else f"the first {x.shape[0]} test images", "n": int(x.shape[0]),
            "labels": "each completed given its true class" if labels is not None else None}


def _pick_images(labels, k: int, total: int) -> torch.Tensor:
    """The first image of class 0, 1, ..., k-1 when the split is labelled with at least k classes, else the
    first k images: the same indices for every run of a dataset."""
    k = min(k, total)
    if labels is not None:
        labels = labels.cpu()
        firsts = [int((labels == c).nonzero()[0]) for c in range(k) if (labels == c).any()]
        if len(firsts) == k:
            return torch.tensor(firsts)
    return torch.arange(k)


# ---------------------------------------------------------------------------------------------- numbers


def _entry(run, metric, value, proto: dict, source: str, extras: dict | None = None) -> dict:
    return {"run": run, "metric": metric, "value": float(value), "source": source,
            "spread": next((float(extras[s]) for s in _SPREAD if extras and isinstance(extras.get(s), (int, float))),
                           None),
            "n_gen": proto.get("n_gen"), "n_ref": proto.get("n_ref"), "ref": proto.get("ref_split"),
            "dataset": proto.get("dataset"), "features": proto.get("feature_net"),
            "feature_sha": proto.get("feature_net_sha256"), "step": proto.get("checkpoint_step"),
            "sampler": proto.get("sampler"), "steps": proto.get("steps"), "guidance": proto.get("guidance"),
            "hardware": proto.get("hardware"), "nll_kind": proto.get("nll_kind"),
            "run_path": proto.get("run"), "checkpoint": proto.get("checkpoint")}


def _result_entries(d: dict, run: str, source: str) -> list[dict]:
    """The numbers of one result dict: ``imagegen eval`` / ``evaluate_run`` ({summary, metrics, protocol}) or
    ``imagegen eval-nll`` ({nats, bits_per_dim, split, n, ...})."""
    out = []
    if isinstance(d.get("metrics"), dict) and d["metrics"]:
        for key, m in d["metrics"].items():
            if not isinstance(m, dict) or not isinstance(m.get("value"), (int, float)):
                continue
            out.append(_entry(run, key, m["value"], m.get("protocol", d.get("protocol", {})), source, m))
    elif is_nll_result(d):
        proto = {"n_ref": d.get("n"), "ref_split": d.get("split"), "dataset": d.get("dataset"),
                 "checkpoint_step": d.get("step"), "nll_kind": d.get("bound"), "checkpoint": d.get("checkpoint")}
        out.append(_entry(run, "nll_nats", d["nats"], proto, source, {"sem": d.get("nats_sem")}))
        out.append(_entry(run, "bits_per_dim", d["bits_per_dim"], proto, source, {"sem": d.get("bits_per_dim_sem")}))
    return out


def _saved_entries(run_dir: Path, run: str) -> list[dict]:
    """Every result JSON kept in the run directory (what ``imagegen info`` lists)."""
    out = []
    for p, d in saved_results(run_dir):
        if isinstance(d.get("results"), list):  # 'imagegen compare --out' kept here
            for res in d["results"]:
                if isinstance(res, dict) and _names_run(res.get("protocol") or {}, run_dir):
                    out += _result_entries(res, run, p.name)
        else:
            out += _result_entries(d, run, p.name)
    return out


def _names_run(proto: dict, run_dir: Path) -> bool:
    """Whether a result's protocol names this run (its directory or one of its checkpoints)."""
    for key in ("run", "checkpoint"):
        if proto.get(key):
            t = Path(proto[key]).resolve()
            if run_dir.resolve() in (t, checkpoint.run_dir_of(t) or t):
                return True
    return False


def _jsonl_entries(run_dir: Path, run: str, model) -> list[dict]:
    """The last in-training evaluation (the final weights) from ``evals.jsonl``: the test split, ``n``
    samples, the family's preview sampler (imagegen.evaluation.evaluate_during_training)."""
    rows = [r for r in _read_jsonl(run_dir / "evals.jsonl") if isinstance(r.get("n"), int)]
    if not rows:
        return []
    last = rows[-1]
    preview = dict(getattr(model.fam, "PREVIEW_OPTIONS", {}))
    dataset = model.config.data.name
    out = []
    for key, value in last.items():
        if key in _NOT_METRICS or not isinstance(value, (int, float)) or key.endswith(("_std", "_sem")) \
                or key.endswith(("_real", "_ratio", "_real_baseline", "_real_only", "_real_plus_generated")):
            continue
        nll = key in ("nll_nats", "bits_per_dim")
        proto = {"n_gen": None if nll else last["n"], "n_ref": last["n"] if nll else None, "ref_split": "test",
                 "dataset": dataset, "feature_net": None if nll else _feature_name(key, dataset),
                 "checkpoint_step": last.get("step"), "sampler": preview.get("sampler"),
                 "steps": preview.get("steps")}
        spread = {s: last.get(f"{key}_{s}") for s in _SPREAD}
        out.append(_entry(run, key, value, proto, f"evals.jsonl (step {last.get('step')})", spread))
    return out


def _feature_name(key: str, dataset: str) -> str | None:
    """The feature network an in-training evaluation used for ``key`` (evals.jsonl records no hash)."""
    if key in CLASSIFIER_KEYS or key.endswith("_clf"):
        return f"classifier-{CLASSIFIER_DATASETS.get(dataset, dataset)}"
    return INCEPTION_NAME


def _compute_now(model, path, run, card, metrics, n, ref, features, seed, device, data_root, inception_weights,
                 sample_options, progress) -> list[dict]:
    """``imagegen.evaluate_run`` with one protocol for every run; metrics a run cannot have are noted."""
    usable, skipped = applicable(model, metrics)
    opts = {k: v for k, v in sample_options.items() if takes(model.fam, k, v)}
    entries = []
    if usable:
        try:
            result = evaluate_run(path, None, opts, None, metrics=usable, n=n, ref=ref, features=list(features),
                                  seed=seed, device=device, data_root=data_root,
                                  inception_weights=inception_weights, progress=progress)
        except ImagegenError as e:  # e.g. nll of an EDM model, no Inception weights offline: say it, go on
            card["notes"].append(f"--metrics {','.join(usable)} could not be computed: {e}")
        else:
            entries = _result_entries(result, run, f"computed now (--metrics {','.join(usable)} --n {n})")
    for m, why in skipped.items():
        card["notes"].append(f"--metrics {m} left out: {why}")
    return entries


def _attach_external(path: Path, checked, labels, entries_by_run) -> None:
    """A result JSON given with ``results=``: an ``eval`` result or a ``compare`` result; each evaluation
    goes to the run whose path its protocol names."""
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ImagegenError(f"cannot read result file {path}: {e}") from None
    found = d.get("results") if isinstance(d, dict) and isinstance(d.get("results"), list) else [d]
    where = {}
    for (p, run_dir), label in zip(checked, labels):
        where[p.resolve()] = label
        where[run_dir.resolve()] = label
    attached = 0
    for res in found:
        if not isinstance(res, dict):
            continue
        proto = res.get("protocol") or {}
        for key in ("run", "checkpoint"):
            target = proto.get(key)
            if not target:
                continue
            t = Path(target).resolve()
            label = where.get(t) or where.get(checkpoint.run_dir_of(t) or t)
            if label:
                entries_by_run[label] += _result_entries(res, label, path.name)
                attached += 1
                break
    if not attached:
        raise ImagegenError(f"{path} holds no evaluation of these runs (its protocol names other runs, or it is "
                            f"not an 'imagegen eval'/'compare' result); pass it with the runs it scored")


def _floor_entries(path: Path) -> list[dict]:
    """An ``imagegen eval-folder`` result of real images, as the floor at its N."""
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ImagegenError(f"cannot read floor file {path}: {e}") from None
    entries = _result_entries(d, "real", path.name) if isinstance(d, dict) else []
    if not entries:
        raise ImagegenError(f"{path} is not an 'imagegen eval-folder' result (no metrics with a protocol)")
    return [{"dataset": e["dataset"], "metric": e["metric"], "n_gen": e["n_gen"], "n_ref": e["n_ref"],
             "ref": e["ref"], "feature_sha": e["feature_sha"], "features": e["features"], "value": e["value"],
             "source": path.name} for e in entries]


def _eval_hardware(entries: list[dict]) -> str | None:
    found = sorted({e["hardware"] for e in entries if e.get("hardware")})
    return "; ".join(found) if found else None


def _results_by_source(entries: list[dict]) -> list[dict]:
    """The run's numbers, one row per result (file, evals.jsonl or computed now)."""
    rows: dict[str, dict] = {}
    for e in entries:
        proto = ", ".join(p for p in (_protocol_text(e), _nll_kind(e)) if p)
        row = rows.setdefault(e["source"], {"source": e["source"], "numbers": [], "protocol": proto})
        row["numbers"].append({"name": METRIC_LABELS.get(e["metric"], e["metric"]), "value": e["value"],
                               "spread": e["spread"]})
    return list(rows.values())


def _protocol_text(e: dict) -> str:
    parts = []
    if e["n_gen"] is not None:
        parts.append(f"N {e['n_gen']:,} generated vs {e['n_ref']:,} real" if e["n_ref"] is not None
                     else f"N {e['n_gen']:,} generated")
    elif e["n_ref"] is not None:
        parts.append(f"{e['n_ref']:,} real images")
    if e["ref"]:
        parts.append(f"{e['ref']} split")
    if e["features"]:
        parts.append(e["features"] + (f" ({e['feature_sha'][:8]})" if e["feature_sha"] else ""))
    return ", ".join(parts)


def _nll_kind(e: dict, short: bool = False) -> str | None:
    """What kind of likelihood a number is (exact, IWAE bound, variational bound); ``short``: without the
    citation and estimator details that follow the first parenthesis."""
    kind = e.get("nll_kind")
    if kind in (None, "as the family documents"):
        return None
    return str(kind).split(" (")[0].split(";")[0] if short else str(kind)


def _sampling_text(e: dict) -> str:
    parts = [f"step {e['step']:,}" if isinstance(e["step"], int) else None,
             e["sampler"], f"{e['steps']} steps" if e["steps"] else None,
             f"guidance {e['guidance']}" if e["guidance"] not in (None, 1.0) else None, _nll_kind(e, short=True)]
    return ", ".join(p for p in parts if p)


def _group_key(e: dict) -> tuple:
    """What must be equal for two numbers to be compared: metric, N generated and real, split, network."""
    return (e["metric"], e["n_gen"], e["n_ref"], e["ref"], e["features"])


def _floor_for(key: tuple, dataset: str | None, sha: str | None, floor_rows: list[dict]) -> dict | None:
    metric, n_gen, n_ref, ref, _ = key
    for f in reversed(floor_rows):  # a user's --floor file (listed last) wins over the packaged table
        if f["metric"] != metric or f["dataset"] != dataset or f["ref"] != ref or f["n_gen"] != n_gen:
            continue
        if n_ref is not None and f["n_ref"] is not None and f["n_ref"] != n_ref:
            continue
        if sha and f["feature_sha"] and sha != f["feature_sha"]:
            continue
        return f
    return None


def _metric_table(cards, entries_by_run, floor_rows) -> dict:
    """Rows: one per (metric, protocol); columns: the runs, then the real floor at that N. Per cell the
    newest number (highest checkpoint step) for that run and protocol; the best of two or more marked."""
    order = list(METRIC_LABELS)
    groups: dict[tuple, dict] = {}
    for card in cards:
        for e in entries_by_run[card["label"]]:
            g = groups.setdefault(_group_key(e), {"cells": {}, "datasets": set(), "shas": set()})
            g["datasets"].add(e["dataset"])
            if e["feature_sha"]:
                g["shas"].add(e["feature_sha"])
            old = g["cells"].get(card["label"])
            if old is None or (e["step"] or 0) >= (old["step"] or 0):
                g["cells"][card["label"]] = e
    rows = []
    for key in sorted(groups, key=lambda k: (order.index(k[0]) if k[0] in order else len(order), k[0],
                                             k[1] or 0, k[2] or 0, str(k[3]), str(k[4]))):
        g = groups[key]
        metric = key[0]
        lower = metric in LOWER_IS_BETTER
        values = {run: e["value"] for run, e in g["cells"].items() if math.isfinite(e["value"])}
        best = None
        if len(values) >= 2:
            best = (min if lower else max)(values, key=values.get)
        dataset = next(iter(g["datasets"])) if len(g["datasets"]) == 1 else None
        sha = next(iter(g["shas"])) if len(g["shas"]) == 1 else None
        floor = _floor_for(key, dataset, sha, floor_rows)
        example = next(iter(g["cells"].values()))
        cells = []
        for card in cards:
            e = g["cells"].get(card["label"])
            cells.append(None if e is None else {"value": e["value"], "spread": e["spread"],
                                                 "best": card["label"] == best, "detail": _sampling_text(e),
                                                 "source": e["source"]})
        notes = []
        if len(g["shas"]) > 1:
            notes.append("feature network hashes differ between runs")
        if len(g["datasets"]) > 1:
            notes.append("runs of different datasets")
        rows.append({"metric": metric, "label": METRIC_LABELS.get(metric, metric),
                     "direction": "lower is better" if lower else "higher is better",
                     "protocol": _protocol_text(example),
                     "cells": cells, "floor": floor, "best": best, "notes": notes, "key": key})
    return {"runs": [c["label"] for c in cards], "colors": [c["color"] for c in cards], "rows": rows}


# ---------------------------------------------------------------------------------------------- summary


def _summary(cards, table, entries_by_run) -> dict:
    """Sentences that say only what the numbers say, and the caveats their protocols imply."""
    points, caveats = [], []
    rows = table["rows"]
    # NLL in nats and in bits/dim are one measurement in two units: count and state it once (bits/dim)
    bpd_keys = {r["key"][1:] for r in rows if r["metric"] == "bits_per_dim"}
    compared = [r for r in rows if r["best"] is not None
                and not (r["metric"] == "nll_nats" and r["key"][1:] in bpd_keys)]
    for r in compared[:6]:
        vals = [(run, c["value"]) for run, c in zip(table["runs"], r["cells"]) if c is not None]
        others = ", ".join(f"{run} {fmt(v)}" for run, v in vals if run != r["best"])
        best_v = dict(vals)[r["best"]]
        text = f"{r['label']} ({r['protocol']}; {r['direction']}): {r['best']} is best with {fmt(best_v)} " \
               f"(against {others})"
        if r["floor"]:
            text += f"; real data score {fmt(r['floor']['value'])} at this N"
        close = _within_noise(r, table["runs"])
        if close:
            text += f"; the gap to {close} is within two standard errors, so not a clear difference"
        points.append(text + ".")
    if len(compared) > 6:
        points.append(f"{len(compared) - 6} more comparisons are in the table below.")
    wins: dict[str, int] = {}
    for r in compared:
        wins[r["best"]] = wins.get(r["best"], 0) + 1
    if len(compared) >= 2 and wins:
        top = max(wins, key=wins.get)
        points.append(f"{top} is best on {wins[top]} of the {len(compared)} metric/protocol pairs that two or more "
                      f"runs share.")
    if not rows:
        points.append("No metric has been computed for these runs yet: pass --metrics fid,kid --n 2000 (or run "
                      "'imagegen eval RUN --out RUN/eval.json') to add numbers.")
    elif not compared:
        points.append("No metric was computed with the same protocol for two runs, so none is compared; "
                      "pass --metrics ... --n ... to score every run the same way.")
    if len(cards) > 1:
        cost = "; ".join(f"{c['label']} ({c['family']}) {seconds(c['train_s'])}, {c['images_seen'] / 1000:.1f} kimg, "
                         f"{c['params'] / 1e6:.3g} M parameters" for c in cards)
        points.append(f"Cost: {cost}.")
    # caveats
    times = [c["train_s"] for c in cards if c["train_s"] > 0]
    if len(times) > 1 and max(times) > 1.2 * min(times):
        caveats.append(f"Training times differ ({seconds(min(times))} to {seconds(max(times))}): this is not an "
                       f"equal-compute comparison; train every run with the same --budget on the same machine.")
    kimgs = [c["images_seen"] for c in cards]
    if len(kimgs) > 1 and min(kimgs) > 0 and max(kimgs) > 1.2 * min(kimgs):
        caveats.append(f"The runs saw different numbers of training images ({min(kimgs) / 1000:.1f} to "
                       f"{max(kimgs) / 1000:.1f} kimg).")
    by_metric: dict[str, set] = {}
    for r in rows:
        by_metric.setdefault(r["metric"], set()).add((r["key"][1], r["key"][2]))
    for metric, ns in by_metric.items():
        if len(ns) > 1:
            shown = ", ".join(f"{g:,}" if g else f"{rr:,} real" for g, rr in sorted(ns, key=lambda t: (t[0] or 0,
                                                                                                          t[1] or 0)))
            why = ("a likelihood on other test images is another estimate" if metric in ("nll_nats", "bits_per_dim")
                   else "Frechet distances fall roughly as 1/N" if metric.startswith("fid")
                   else "the estimate depends on N")
            caveats.append(f"{METRIC_LABELS.get(metric, metric)} was measured at different N ({shown}); only numbers "
                           f"in one row are comparable ({why}).")
    kinds = {}
    for card in cards:
        for e in entries_by_run[card["label"]]:
            if e["metric"] == "bits_per_dim" and _nll_kind(e):
                kinds.setdefault(card["family"], _nll_kind(e, short=True))
    if len(set(kinds.values())) > 1:
        caveats.append("The likelihoods are of different kinds (" + "; ".join(f"{f}: {k}" for f, k in kinds.items())
                       + "): an upper bound is at least the model's true NLL, so a bound that is lower than an exact "
                         "value still means a better model, but a higher bound does not mean a worse one.")
    refs = {r["key"][3] for r in rows if r["key"][3]}
    if len(refs) > 1:
        caveats.append(f"Numbers use different reference splits ({', '.join(sorted(refs))}).")
    if any(r["notes"] for r in rows):
        caveats.append("Some rows mix runs with different feature network weights or datasets (marked in the table).")
    datasets = {c["data"]["name"] for c in cards}
    if len(datasets) > 1:
        caveats.append(f"The runs were trained on different data ({', '.join(sorted(datasets))}); their numbers are "
                       f"not comparable.")
    for card in cards:
        stale = sorted({e["step"] for e in entries_by_run[card["label"]]
                        if isinstance(e["step"], int) and e["step"] < card["step"]})
        if stale:
            caveats.append(f"Some of {card['label']}'s numbers are from earlier checkpoints (step "
                           f"{', '.join(f'{s:,}' for s in stale[:4])}) than the one shown (step {card['step']:,}).")
    if any(r["floor"] is None for r in rows if r["metric"].startswith(("fid", "kid"))):
        caveats.append("Where no real-data floor is shown it was not measured at that N; read a distance against "
                       "the real train-vs-test distance at the same N (pass one with --floor, from "
                       "'imagegen eval-folder' on real images).")
    return {"points": points, "caveats": caveats}


def _within_noise(row: dict, runs: list[str]) -> str | None:
    """The runner-up of a row when its gap to the best is under two combined standard errors (where both
    numbers carry one: NLL's standard error, KID's std over subsets)."""
    cells = {run: c for run, c in zip(runs, row["cells"]) if c is not None}
    best = cells[row["best"]]
    others = sorted((c["value"], run) for run, c in cells.items() if run != row["best"])
    if not others:
        return None
    value, run = others[0] if row["metric"] in LOWER_IS_BETTER else others[-1]
    s1, s2 = best["spread"], cells[run]["spread"]
    if s1 is None or s2 is None:
        return None
    return run if abs(best["value"] - value) < 2 * math.hypot(s1, s2) else None


# ---------------------------------------------------------------------------------------------- plots


def _figure(ncols: int = 2, width: float = 10.0, height: float = 3.3):
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
                         "axes.grid": True, "grid.alpha": 0.3, "svg.fonttype": "path"})
    fig, axes = plt.subplots(1, ncols, figsize=(width, height), squeeze=False)
    return fig, list(axes[0])


def _fig_png(fig) -> dict:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return {"src": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")}


def _smooth(values: list[float], k: int) -> list[float]:
    if k <= 1:
        return values
    out, acc = [], []
    for v in values:
        acc.append(v)
        if len(acc) > k:
            acc.pop(0)
        out.append(sum(acc) / len(acc))
    return out


def _loss_plot(logs: list[dict], label: str, color: str) -> dict | None:
    """Training loss against images seen and wall-clock time (metrics.jsonl); a GAN's D and G losses apart."""
    keys = [k for k in ("d_loss", "g_loss") if any(k in r for r in logs)] or ["loss"]
    rows = [r for r in logs if all(isinstance(r.get(k), (int, float)) and math.isfinite(r[k]) for k in keys)]
    if not rows:
        return None
    fig, (a, b) = _figure()
    k = max(1, len(rows) // 50)
    for i, key in enumerate(keys):
        ys = [r[key] for r in rows]
        style = "-" if i == 0 else "--"
        for ax, xk in ((a, "kimg"), (b, "elapsed_s")):
            xs = [r.get(xk, 0) for r in rows]
            ax.plot(xs, ys, style, color=color, alpha=0.25, lw=0.8)
            ax.plot(xs, _smooth(ys, k), style, color=color, lw=1.6, label=key)
    positive = all(r[key] > 0 for r in rows for key in keys)
    for ax, xl in ((a, "images seen (kimg)"), (b, "training time (s)")):
        ax.set_xlabel(xl)
        ax.set_ylabel("training loss")
        if positive and max(r[key] for r in rows for key in keys) > 3 * min(r[key] for r in rows for key in keys):
            ax.set_yscale("log")
    a.legend(frameon=False)
    a.set_title(f"{label}: training loss" + (f" (thin: logged, thick: running mean of {k})" if k > 1 else ""),
                loc="left", fontsize=9)
    return _fig_png(fig)


def _plots(cards, entries_by_run, floor_rows) -> list[dict]:
    plots = []
    plots += _eval_curves(cards, floor_rows)
    bpd = _bits_per_dim_plot(cards, entries_by_run)
    if bpd:
        plots.append(bpd)
    pr = _precision_recall_plot(cards, entries_by_run)
    if pr:
        plots.append(pr)
    plots += _steps_plots(cards, entries_by_run)
    return plots


def _eval_curves(cards, floor_rows) -> list[dict]:
    """Every metric of evals.jsonl against images seen and wall-clock time, one line per run."""
    keys: list[str] = []
    for c in cards:
        for r in c["evals"]:
            for k, v in r.items():
                if k not in _NOT_METRICS and isinstance(v, (int, float)) and k not in keys \
                        and not k.endswith(("_std", "_sem", "_real", "_ratio", "_baseline", "_only", "_generated")):
                    keys.append(k)
    plots = []
    for key in sorted(keys, key=lambda k: list(METRIC_LABELS).index(k) if k in METRIC_LABELS else 99):
        fig, (a, b) = _figure()
        ns, datasets = set(), set()
        for c in cards:
            rows = [r for r in c["evals"] if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
            if not rows:
                continue
            ns.add(rows[-1].get("n"))
            datasets.add(c["data"]["name"])
            for ax, xk in ((a, "kimg"), (b, "elapsed_s")):
                ax.plot([r.get(xk, 0) for r in rows], [r[key] for r in rows], "o-", ms=3, color=c["color"],
                        label=f"{c['label']} (N {rows[-1].get('n')})")
        if len(ns) == 1 and len(datasets) == 1:
            n_eval = next(iter(ns))
            nll = key in ("nll_nats", "bits_per_dim")
            fkey = (key, None if nll else n_eval, None, "test", None)
            floor = None if nll else _floor_for(fkey, next(iter(datasets)), None, floor_rows)
            if floor:
                for ax in (a, b):
                    ax.axhline(floor["value"], color="k", ls=":", lw=1, label=f"real data at N {n_eval}")
        name = METRIC_LABELS.get(key, key)
        for ax, xl in ((a, "images seen (kimg)"), (b, "training time (s), evaluations not counted")):
            ax.set_xlabel(xl)
            ax.set_ylabel(name)
        a.legend(frameon=False, fontsize=8)
        direction = "lower is better" if key in LOWER_IS_BETTER else "higher is better"
        plots.append({"title": f"{name} during training ({direction})",
                      "caption": "In-training evaluations (evals.jsonl) of the EMA weights against the test split, "
                                 "sampled with the family's preview sampler.", **_fig_png(fig)})
    return plots


def _latest(entries: list[dict], metric: str) -> dict | None:
    """The newest number of ``metric``: the highest checkpoint step, and among equal steps the last one read
    (the order of the metric table: saved files, evals.jsonl, computed now, --results)."""
    best = None
    for e in entries:
        if e["metric"] == metric and (best is None or (e["step"] or 0) >= (best["step"] or 0)):
            best = e
    return best


def _bits_per_dim_plot(cards, entries_by_run) -> dict | None:
    bars = [(c, _latest(entries_by_run[c["label"]], "bits_per_dim")) for c in cards]
    bars = [(c, e) for c, e in bars if e is not None]
    if not bars:
        return None
    fig, (a,) = _figure(1, 7.5, 0.9 + 0.5 * len(bars))
    names = [f"{c['label']}\n({e['n_ref'] or '?'} {e['ref'] or ''} images)" for c, e in bars]
    for i, (c, e) in enumerate(bars):  # points, not bars from 0: the differences are a few percent
        a.errorbar([e["value"]], [i], xerr=[e["spread"] or 0], fmt="o", color=c["color"], ms=7, capsize=4)
        a.annotate(f"{e['value']:.4g}", (e["value"], i), xytext=(0, 9), textcoords="offset points", ha="center",
                   fontsize=8)
    a.set_yticks(range(len(bars)), names)
    a.set_ylim(len(bars) - 0.4, -0.6)
    a.set_xlabel("bits per dimension (lower is better); error bar: standard error")
    return {"title": "Likelihood: bits per dimension", "caption": "The newest saved number of each run. Exact for "
            "PixelCNN, an upper bound for VAEs (IWAE) and diffusion models (variational bound); the kind is in "
            "each run's saved results.",
            **_fig_png(fig)}


def _precision_recall_plot(cards, entries_by_run) -> dict | None:
    points = []
    for c in cards:
        for e in entries_by_run[c["label"]]:
            if not e["metric"].startswith("precision"):
                continue
            rkey = e["metric"].replace("precision", "recall")
            rec = [r for r in entries_by_run[c["label"]] if r["metric"] == rkey and r["source"] == e["source"]]
            if rec:
                points.append((c, e, rec[0]))
    if not points:
        return None
    fig, (a,) = _figure(1, 6.0, 4.2)
    for c, p, r in points:
        a.scatter([r["value"]], [p["value"]], color=c["color"], s=40, zorder=3)
        net = "classifier" if p["metric"].endswith("_clf") else "Inception"
        a.annotate(f"{c['label']} (N {p['n_gen']}, {net})", (r["value"], p["value"]), fontsize=8,
                   xytext=(5, 4), textcoords="offset points")
    a.set_xlim(0, 1.05)
    a.set_ylim(0, 1.05)
    a.set_xlabel("recall (coverage of the real data)")
    a.set_ylabel("precision (realism of the samples)")
    return {"title": "Precision against recall", "caption": "Kynkaanniemi et al. 2019, k = 3; top right is "
            "best. Each point is one saved evaluation.", **_fig_png(fig)}


def _steps_plots(cards, entries_by_run) -> list[dict]:
    """Quality against sampling steps for diffusion runs that were scored at two or more step counts."""
    plots = []
    for metric in ("fid", "fid_clf", "kid", "kid_clf"):
        lines = {}
        for c in cards:
            if c["family"] != "diffusion":
                continue
            for e in entries_by_run[c["label"]]:
                if e["metric"] == metric and isinstance(e["steps"], int):
                    lines.setdefault((c["label"], e["sampler"], e["n_gen"]), (c, {}))[1][e["steps"]] = e["value"]
        lines = {k: v for k, v in lines.items() if len(v[1]) >= 2}
        if not lines:
            continue
        fig, (a,) = _figure(1, 6.5, 3.6)
        styles = ["o-", "s--", "^-.", "d:"]
        for i, ((label, sampler, n_gen), (c, by_steps)) in enumerate(sorted(lines.items(), key=lambda kv: str(kv[0]))):
            xs = sorted(by_steps)
            a.plot(xs, [by_steps[s] for s in xs], styles[i % len(styles)], color=c["color"], ms=4,
                   label=f"{label}, {sampler}, N {n_gen}")
        a.set_xscale("log")
        a.set_xlabel("sampling steps")
        a.set_ylabel(METRIC_LABELS[metric])
        a.legend(frameon=False, fontsize=8)
        plots.append({"title": f"{METRIC_LABELS[metric]} against sampling steps (diffusion)",
                      "caption": "Saved evaluations of the same checkpoint at several step counts (e.g. "
                                 "benchmarks/diffusion_quality.py).", **_fig_png(fig)})
    return plots


__all__ = ["KNOWN_FLOORS", "build", "render", "report"]
