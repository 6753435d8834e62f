"""Evaluation commands: ``eval``, ``compare``, ``eval-folder``, ``ref-stats``, ``train-classifier``.

``imagegen.cli`` calls :func:`register` on its typer app. Commands stay thin: they parse options and call
``imagegen.evaluation``; user mistakes raise ImagegenError, which the CLI prints as one line.
"""

from __future__ import annotations

from pathlib import Path

import typer

from .evaluation import FEATURES, METRIC_HELP, METRICS

_METRICS_HELP = "comma list of: " + "; ".join(f"{k} ({v})" for k, v in METRIC_HELP.items())
_FEATURES_HELP = f"feature networks for fid/kid/pr/dc, comma list of: {', '.join(FEATURES)}"
_INCEPTION_HELP = ("local Inception TorchScript file (offline machines; default: $IMAGEGEN_INCEPTION, the cache, "
                   "else clean-fid's download)")


# options shared by eval and compare (typer reads a default's OptionInfo, so one object serves both)
METRICS_OPT = typer.Option("fid,kid,pr,dc", help=_METRICS_HELP)
N_OPT = typer.Option(10000, help="generated images (nll: evaluate the first N reference images)")
REF_OPT = typer.Option("test", help="reference split: train or test")
N_REF_OPT = typer.Option(None, help="reference images (default: min(N, split size))")
FEATURES_OPT = typer.Option("inception", help=_FEATURES_HELP)
SEED_OPT = typer.Option(0, help="sampling seed")
BATCH_OPT = typer.Option(128, help="images per sampling / feature batch")
DATA_ROOT_OPT = typer.Option(None, help="dataset root, if not the one used for training")
INCEPTION_OPT = typer.Option(None, help=_INCEPTION_HELP)
CLASSIFIER_OPT = typer.Option(None, help="classifier safetensors (default: packaged)")
DEVICE_OPT = typer.Option("auto", help="auto | cpu | cuda")
SAMPLER_OPT = typer.Option(None, help="sampler (families that take one, e.g. diffusion: ddim)")
STEPS_OPT = typer.Option(None, help="sampling steps (families that take them)")
GUIDANCE_OPT = typer.Option(None, help="classifier-free guidance scale (diffusion)")
TEMPERATURE_OPT = typer.Option(None, help="sampling temperature (VAE, PixelCNN)")
TRUNCATION_OPT = typer.Option(None, help="truncation (GANs)")


def _given(**kw) -> dict:
    """The keyword arguments that were given (not None)."""
    return {k: v for k, v in kw.items() if v is not None}


def _options(**kw):
    from .evaluation import EvalOptions

    return EvalOptions(**_given(**kw))


def _report(result: dict, out: Path | None) -> None:
    from .evaluation import format_summary

    typer.echo(format_summary(result))
    if out is not None:
        typer.echo(f"wrote {out}")


def register(app: typer.Typer) -> None:
    """Add the evaluation commands to ``app``."""

    @app.command("eval")
    def eval_cmd(
        run: Path = typer.Argument(..., help="run directory or checkpoint file"),
        metrics: str = METRICS_OPT, n: int = N_OPT, ref: str = REF_OPT, n_ref: int | None = N_REF_OPT,
        features: str = FEATURES_OPT,
        out: Path | None = typer.Option(None, help="write the result, with its protocol, as JSON"),
        seed: int = SEED_OPT, batch_size: int = BATCH_OPT, data_root: str | None = DATA_ROOT_OPT,
        inception_weights: str | None = INCEPTION_OPT, classifier_weights: str | None = CLASSIFIER_OPT,
        device: str = DEVICE_OPT,
        kid_subsets: int = typer.Option(100), kid_subset_size: int = typer.Option(1000),
        cas_epochs: int = typer.Option(3, help="epochs of each CAS / augmentation classifier"),
        aug_real: int = typer.Option(1000, help="real images in the augmentation comparison"),
        refresh_cache: bool = typer.Option(False, help="recompute cached reference features"),
        sampler: str | None = SAMPLER_OPT, steps: int | None = STEPS_OPT, guidance: float | None = GUIDANCE_OPT,
        temperature: float | None = TEMPERATURE_OPT, truncation: float | None = TRUNCATION_OPT,
        eta: float | None = typer.Option(None, help="DDIM eta"),
    ) -> None:
        """Generate N samples from a run and score them against a reference split (FID, KID, PR, ...)."""
        from .evaluation import evaluate_run, parse_list

        opts = _options(metrics=parse_list(metrics, METRICS, "metric"), n=n, ref=ref, n_ref=n_ref,
                        features=parse_list(features, FEATURES, "feature network"), batch_size=batch_size,
                        seed=seed, data_root=data_root, inception_weights=inception_weights,
                        classifier_weights=classifier_weights, device=device, kid_subsets=kid_subsets,
                        kid_subset_size=kid_subset_size, cas_epochs=cas_epochs, aug_real=aug_real,
                        refresh_cache=refresh_cache)
        sample_options = _given(sampler=sampler, steps=steps, guidance=guidance, temperature=temperature,
                                truncation=truncation, eta=eta)
        result = evaluate_run(run, opts, sample_options, out)
        _report(result, out)

    @app.command("compare")
    def compare_cmd(
        runs: list[Path] = typer.Argument(..., help="run directories (or checkpoint files) of one dataset"),
        metrics: str = METRICS_OPT, n: int = N_OPT, ref: str = REF_OPT, n_ref: int | None = N_REF_OPT,
        features: str = FEATURES_OPT,
        out: Path | None = typer.Option(None, help="write every run's result, with its protocol, as JSON"),
        seed: int = SEED_OPT, batch_size: int = BATCH_OPT, data_root: str | None = DATA_ROOT_OPT,
        inception_weights: str | None = INCEPTION_OPT, classifier_weights: str | None = CLASSIFIER_OPT,
        device: str = DEVICE_OPT,
        kid_subsets: int = typer.Option(100), kid_subset_size: int = typer.Option(1000),
        sampler: str | None = SAMPLER_OPT, steps: int | None = STEPS_OPT, guidance: float | None = GUIDANCE_OPT,
        temperature: float | None = TEMPERATURE_OPT, truncation: float | None = TRUNCATION_OPT,
    ) -> None:
        """Score several runs of one dataset with one protocol and print them side by side (Markdown)."""
        from .evaluation import compare_runs, format_comparison, parse_list

        opts = _options(metrics=parse_list(metrics, METRICS, "metric"), n=n, ref=ref, n_ref=n_ref,
                        features=parse_list(features, FEATURES, "feature network"), batch_size=batch_size,
                        seed=seed, data_root=data_root, inception_weights=inception_weights,
                        classifier_weights=classifier_weights, device=device, kid_subsets=kid_subsets,
                        kid_subset_size=kid_subset_size)
        sample_options = _given(sampler=sampler, steps=steps, guidance=guidance, temperature=temperature,
                                truncation=truncation)
        comparison = compare_runs(runs, opts, sample_options, out)
        typer.echo(format_comparison(comparison))
        if out is not None:
            typer.echo(f"wrote {out}")

    @app.command("eval-folder")
    def eval_folder_cmd(
        folder: Path = typer.Argument(..., help="folder of generated images (class sub-folders give labels), or "
                                                "a .npz/.npy of uint8 images (labels under y)"),
        data: str = typer.Option(..., help="reference dataset: mnist, fashion-mnist, cifar10, ..."),
        ref: str = typer.Option("test", help="reference split: train or test"),
        metrics: str = typer.Option("fid,kid,pr,dc", help=_METRICS_HELP),
        n: int = typer.Option(0, help="use only the first N images (0: all)"),
        n_ref: int | None = typer.Option(None, help="reference images (default: min(N, split size))"),
        features: str = typer.Option("inception", help=_FEATURES_HELP),
        out: Path | None = typer.Option(None, help="write the result, with its protocol, as JSON"),
        batch_size: int = typer.Option(128),
        data_root: str | None = typer.Option(None, help="dataset root (default $IMAGEGEN_DATA or the cache)"),
        inception_weights: str | None = typer.Option(None, help=_INCEPTION_HELP),
        classifier_weights: str | None = typer.Option(None, help="classifier safetensors (default: packaged)"),
        device: str = typer.Option("auto"),
        kid_subsets: int = typer.Option(100), kid_subset_size: int = typer.Option(1000),
        cas_epochs: int = typer.Option(3), aug_real: int = typer.Option(1000),
        seed: int = typer.Option(0, help="seed of KID subsets and CAS training"),
        refresh_cache: bool = typer.Option(False, help="recompute cached reference features"),
    ) -> None:
        """Score any folder (or .npz/.npy array) of generated images against a dataset split."""
        from .evaluation import evaluate_folder, parse_list

        opts = _options(metrics=parse_list(metrics, METRICS, "metric"), n=n, ref=ref, n_ref=n_ref,
                        features=parse_list(features, FEATURES, "feature network"), batch_size=batch_size,
                        data_root=data_root, inception_weights=inception_weights,
                        classifier_weights=classifier_weights, device=device, kid_subsets=kid_subsets,
                        kid_subset_size=kid_subset_size, cas_epochs=cas_epochs, aug_real=aug_real, seed=seed,
                        refresh_cache=refresh_cache)
        result = evaluate_folder(folder, data, opts, out)
        _report(result, out)

    @app.command("ref-stats")
    def ref_stats_cmd(
        data: str = typer.Option(..., help="dataset: mnist, fashion-mnist, cifar10, digits, folder:PATH"),
        split: str = typer.Option("train", help="train or test"),
        n: int | None = typer.Option(None, help="a seeded random subset of N images (default: all)"),
        features: str = typer.Option("inception", help=_FEATURES_HELP),
        image_size: int | None = typer.Option(None, help="resize the data first (match your model's size)"),
        channels: int | None = typer.Option(None, help="1 or 3 (match your model's channels)"),
        data_root: str | None = typer.Option(None, help="dataset root (default $IMAGEGEN_DATA or the cache)"),
        inception_weights: str | None = typer.Option(None, help=_INCEPTION_HELP),
        classifier_weights: str | None = typer.Option(None, help="classifier safetensors (default: packaged)"),
        batch_size: int = typer.Option(128),
        device: str = typer.Option("auto"),
        refresh: bool = typer.Option(False, help="recompute even if cached"),
    ) -> None:
        """Compute and cache a split's reference features and statistics (eval reuses them)."""
        from .evaluation import reference_stats

        opts = _options(data_root=data_root, inception_weights=inception_weights,
                        classifier_weights=classifier_weights, batch_size=batch_size, device=device,
                        refresh_cache=refresh)
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
        from .api import pick_device
        from .metrics.classifier import default_train_config, train_classifier

        cfg = default_train_config(data)
        cfg.batch_size, cfg.lr, cfg.seed = batch_size, lr, seed
        if epochs is not None:
            cfg.epochs = epochs
        meta = train_classifier(data, data_root, out, cfg, device=pick_device(device))
        typer.echo(f"{data} classifier: test accuracy {meta['test_accuracy']:.4f} after {cfg.epochs} epochs "
                   f"({meta['train_seconds']} s) -> {meta['path']}")
