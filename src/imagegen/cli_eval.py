"""Evaluation commands: ``eval``, ``compare``, ``eval-folder``, ``ref-stats``, ``train-classifier``.

``imagegen.cli`` calls :func:`register` on its typer app. Commands stay thin: they parse options and call
``imagegen.evaluation``; user mistakes raise ImagegenError, which the CLI prints as one line.

The options of ``eval``, ``compare`` and ``eval-folder`` are one set, :data:`SCORING_OPTIONS` (plus
:data:`SAMPLING_OPTIONS` for the two that sample a run), written once here and added to each command by
:func:`with_options`; ``imagegen report`` reuses the same option objects and takes :data:`SAMPLING_OPTIONS`
through :func:`with_options` too.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path

import typer

from .cli_options import sampling_options
from .device import pick_device
from .evaluation import (
    FEATURES,
    METRIC_HELP,
    METRICS,
    EvalOptions,
    compare_runs,
    evaluate_folder,
    evaluate_run,
    format_comparison,
    format_summary,
    parse_list,
    reference_stats,
)
from .metrics.classifier import default_train_config, train_classifier

_METRICS_HELP = "comma list of: " + "; ".join(f"{k} ({v})" for k, v in METRIC_HELP.items())
_FEATURES_HELP = f"feature networks for fid/kid/pr/dc, comma list of: {', '.join(FEATURES)}"
_INCEPTION_HELP = ("local Inception TorchScript file (offline machines; default: $IMAGEGEN_INCEPTION, the cache, "
                   "else clean-fid's download)")

# single options other commands (report) spell the same way (typer reads a default's OptionInfo, so one
# object serves every command)
METRICS_OPT = typer.Option("fid,kid,pr,dc", help=_METRICS_HELP)
N_OPT = typer.Option(10000, help="generated images (nll: evaluate the first N reference images)")
REF_OPT = typer.Option("test", help="reference split: train or test")
N_REF_OPT = typer.Option(None, help="reference images (default: min(N, split size))")
FEATURES_OPT = typer.Option("inception", help=_FEATURES_HELP)
SEED_OPT = typer.Option(0, help="sampling seed (also of KID subsets and CAS training)")
BATCH_OPT = typer.Option(128, help="images per sampling / feature batch")
DATA_ROOT_OPT = typer.Option(None, help="dataset root (default: the run's, else $IMAGEGEN_DATA or the cache)")
INCEPTION_OPT = typer.Option(None, help=_INCEPTION_HELP)
CLASSIFIER_OPT = typer.Option(None, help="classifier safetensors (default: packaged)")
DEVICE_OPT = typer.Option("auto", help="auto | cpu | cuda")

# (name, type, option): what eval, compare and eval-folder all take; each is an EvalOptions field
SCORING_OPTIONS = (
    ("metrics", str, METRICS_OPT), ("n", int, N_OPT), ("ref", str, REF_OPT), ("n_ref", int | None, N_REF_OPT),
    ("features", str, FEATURES_OPT), ("seed", int, SEED_OPT), ("batch_size", int, BATCH_OPT),
    ("data_root", str | None, DATA_ROOT_OPT), ("inception_weights", str | None, INCEPTION_OPT),
    ("classifier_weights", str | None, CLASSIFIER_OPT), ("device", str, DEVICE_OPT),
    ("kid_subsets", int, typer.Option(100)), ("kid_subset_size", int, typer.Option(1000)),
    ("cas_epochs", int, typer.Option(3, help="epochs of each CAS / augmentation classifier")),
    ("aug_real", int, typer.Option(1000, help="real images in the augmentation comparison")),
    ("refresh_cache", bool, typer.Option(False, help="recompute cached reference features")),
)
# the sampling options of `eval` and `compare`: every keyword option of a family's `sample`, read from the
# contract (imagegen.cli_options), so e.g. the VAE's --mode reaches evaluation as it reaches `imagegen sample`
SAMPLING_OPTIONS = sampling_options()
_SCORING = {name for name, _, _ in SCORING_OPTIONS}
_SAMPLING = {name for name, _, _ in SAMPLING_OPTIONS}


def given(**kw) -> dict:
    """The keyword arguments that were given (not None)."""
    return {k: v for k, v in kw.items() if v is not None}


def with_options(*groups, **overrides):
    """Add the options of ``groups`` to a command after its own parameters; the command then receives them
    as ``opts`` (an :class:`EvalOptions`, metrics and features parsed) and ``sample_options`` (those given).
    ``overrides``: name -> typer.Option where a command means something else by an option (eval-folder's
    ``--n``)."""

    def wrap(fn):
        own = [p for name, p in inspect.signature(fn).parameters.items() if name not in ("opts", "sample_options")]
        shared = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=overrides.get(name, option),
                                    annotation=kind) for group in groups for name, kind, option in group]
        added = {p.name for p in shared}  # only these are taken from the command's keywords (report has its own --n)

        @functools.wraps(fn)
        def command(**kw):
            opts = EvalOptions(**given(**{k: kw.pop(k) for k in list(kw) if k in _SCORING and k in added}))
            opts.metrics = parse_list(opts.metrics, METRICS, "metric")
            opts.features = parse_list(opts.features, FEATURES, "feature network")
            sample_options = given(**{k: kw.pop(k) for k in list(kw) if k in _SAMPLING and k in added})
            extra = {"sample_options": sample_options} if "sample_options" in inspect.signature(fn).parameters else {}
            return fn(**kw, opts=opts, **extra)

        command.__signature__ = inspect.Signature(own + shared)
        command.__annotations__ = {p.name: p.annotation for p in own + shared}
        return command

    return wrap


def _report(result: dict, out: Path | None) -> None:
    typer.echo(format_summary(result))
    if out is not None:
        typer.echo(f"wrote {out}")


def register(app: typer.Typer) -> None:
    """Add the evaluation commands to ``app``."""

    @app.command("eval")
    @with_options(SCORING_OPTIONS, SAMPLING_OPTIONS)
    def eval_cmd(
        run: Path = typer.Argument(..., help="run directory, checkpoint file or zoo:NAME"),
        out: Path | None = typer.Option(None, help="write the result, with its protocol, as JSON"),
        *, opts: EvalOptions, sample_options: dict,
    ) -> None:
        """Generate N samples from a run and score them against a reference split (FID, KID, PR, ...)."""
        result = evaluate_run(run, opts, sample_options, out)
        _report(result, out)

    @app.command("compare")
    @with_options(SCORING_OPTIONS, SAMPLING_OPTIONS)
    def compare_cmd(
        runs: list[Path] = typer.Argument(..., help="run directories (or checkpoint files, zoo:NAME, zoo:*) of one "
                                                    "dataset"),
        out: Path | None = typer.Option(None, help="write every run's result, with its protocol, as JSON"),
        *, opts: EvalOptions, sample_options: dict,
    ) -> None:
        """Score several runs of one dataset with one protocol and print them side by side (Markdown)."""
        comparison = compare_runs(runs, opts, sample_options, out)
        typer.echo(format_comparison(comparison))
        if out is not None:
            typer.echo(f"wrote {out}")

    @app.command("eval-folder")
    @with_options(SCORING_OPTIONS, n=typer.Option(0, help="use only the first N images (0: all)"))
    def eval_folder_cmd(
        folder: Path = typer.Argument(..., help="folder of generated images (class sub-folders give labels), or "
                                                "a .npz/.npy of uint8 images (labels under y)"),
        data: str = typer.Option(..., help="reference dataset: mnist, fashion-mnist, cifar10, ..."),
        out: Path | None = typer.Option(None, help="write the result, with its protocol, as JSON"),
        *, opts: EvalOptions,
    ) -> None:
        """Score any folder (or .npz/.npy array) of generated images against a dataset split."""
        result = evaluate_folder(folder, data, opts, out)
        _report(result, out)

    @app.command("ref-stats")
    def ref_stats_cmd(
        data: str = typer.Option(..., help="dataset: mnist, fashion-mnist, cifar10, digits, folder:PATH"),
        split: str = typer.Option("train", help="train or test"),
        n: int | None = typer.Option(None, help="a seeded random subset of N images (default: all)"),
        features: str = FEATURES_OPT,
        image_size: int | None = typer.Option(None, help="resize the data first (match your model's size)"),
        channels: int | None = typer.Option(None, help="1 or 3 (match your model's channels)"),
        data_root: str | None = typer.Option(None, help="dataset root (default $IMAGEGEN_DATA or the cache)"),
        inception_weights: str | None = INCEPTION_OPT, classifier_weights: str | None = CLASSIFIER_OPT,
        batch_size: int = typer.Option(128), device: str = typer.Option("auto"),
        refresh: bool = typer.Option(False, help="recompute even if cached"),
    ) -> None:
        """Compute and cache a split's reference features and statistics (eval reuses them)."""
        opts = EvalOptions(**given(data_root=data_root, inception_weights=inception_weights,
                                   classifier_weights=classifier_weights, batch_size=batch_size, device=device,
                                   refresh_cache=refresh))
        for row in reference_stats(data, split, n, features, opts, image_size, channels):
            state = "already cached" if row["cached"] else f"computed in {row['seconds']} s"
            typer.echo(f"{row['dataset']} {row['split']} n={row['n']} {row['feature_net']} "
                       f"(sha256 {row['feature_net_sha256'][:12]}): {state} -> {row['cache']}")

    @app.command("train-classifier")
    def train_classifier_cmd(
        data: str = typer.Option(..., help="mnist or fashion-mnist"),
        data_root: str | None = typer.Option(None, help="dataset root (default $IMAGEGEN_DATA or the cache)"),
        epochs: int | None = typer.Option(None, help="default: 6 (mnist), 15 (fashion-mnist)"),
        batch_size: int = typer.Option(128),
        lr: float = typer.Option(2e-3, help="peak learning rate (one-cycle)"),
        seed: int = typer.Option(0),
        out: Path | None = typer.Option(None, help="weights file (default: the packaged "
                                                   "imagegen/weights/<data>-classifier.safetensors)"),
        device: str = typer.Option("auto"),
    ) -> None:
        """Train the dataset classifier used by cfd, cscore, cacc and --features classifier."""
        cfg = default_train_config(data)
        cfg.batch_size, cfg.lr, cfg.seed = batch_size, lr, seed
        if epochs is not None:
            cfg.epochs = epochs
        meta = train_classifier(data, data_root, out, cfg, device=pick_device(device))
        typer.echo(f"{data} classifier: test accuracy {meta['test_accuracy']:.4f} after {cfg.epochs} epochs "
                   f"({meta['train_seconds']} s) -> {meta['path']}")
