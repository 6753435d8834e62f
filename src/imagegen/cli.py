"""The ``imagegen`` command line: thin, it parses options and calls the public API.

A user mistake (``ImagegenError``) is printed as one line, ``error: ...``, with exit status 2.
"""

from __future__ import annotations

import errno
import functools
import inspect
import json
import os
import sys
import typing
import warnings
from pathlib import Path

import click
import torch
import typer

from . import api, checkpoint, config, registry, zoo
from .cli_options import family_options, option_help
from .data import (
    ARRAY_EXTENSIONS,
    DATASETS,
    IMAGE_EXTENSIONS,
    load_image,
    load_mask,
    make_mask,
    save_image_array,
    to_uint8,
)
from .errors import ImagegenError
from .evaluation import balanced_labels
from .evaluation.runs import is_nll_result, saved_results
from .families.base import check_labels
from .likelihood import evaluate_nll
from .trainer import save_grid

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, sample, evaluate and compare GANs, VAEs, autoregressive and diffusion models.")


def _echo(msg: str) -> None:
    typer.echo(msg)


# ---------------------------------------------------------------------------------------------- list / info


@app.command("list")
def list_cmd() -> None:
    """List families (with what each can do), datasets and presets."""
    _echo("families:")
    for name in registry.FAMILIES:
        caps = (["sample"] if registry.generative(name) else []) + [
            f"restore ({', '.join(registry.restore_tasks(name))})" if c == "restore" else c
            for c in registry.capabilities(name)]
        role = "" if registry.generative(name) else "  (first stage of latent models: train FAMILY --latent RUN)"
        _echo(f"  {name:<11} {', '.join(caps)}{role}")
    _echo("datasets:")
    for d in DATASETS:
        _echo(f"  {d}")
    _echo("presets:")
    for p in config.preset_names():
        fam = config.load_preset(p)["family"]
        _echo(f"  {p:<24} ({fam})")


@app.command("zoo")
def zoo_cmd() -> None:
    """The pretrained models that ship with imagegen: use zoo:NAME wherever a run is taken."""
    models = zoo.entries()
    if not models:
        _echo("this install ships no zoo models (benchmarks/zoo_build.py builds them)")
        return
    for name, e in models.items():
        _echo(zoo.describe(name, e))
    _echo(f"{len(models)} models, {sum(e['bytes'] for e in models.values()) / 1e6:.1f} MB in {zoo.ZOO_DIR}; "
          f"e.g. imagegen sample zoo:{next(iter(models))} --n 16 --out grid.png")


@app.command("info")
def info_cmd(run: Path = typer.Argument(..., help="run directory, checkpoint file or zoo:NAME")) -> None:
    """Family, step, images seen, the latest logged metrics, the results saved in the run, and its config."""
    shown, run = run, zoo.resolve(run)  # zoo:NAME -> its folder in the package
    ckpt = checkpoint.resolve(run)
    m = checkpoint.read_meta(ckpt)
    _echo(f"run:         {shown}" + (f" ({run})" if zoo.is_zoo(shown) else ""))
    _echo(f"checkpoint:  {ckpt.name}")
    _echo(f"family:      {m['family']}")
    _echo(f"data:        {m['data_info']['name']} ({m['data_info']['channels']}x{m['data_info']['size']}x"
          f"{m['data_info']['size']}, {m['data_info']['num_classes']} classes)"
          + (f"; {m['data_info']['channels_from']}" if m["data_info"].get("channels_from") else ""))
    fs = m.get("latent", {}).get("first_stage")
    if fs:
        shape = "x".join(str(v) for v in fs.get("latent_shape", []))
        _echo(f"latent:      {shape} codes of the first stage {fs['path']} (autoencoder step {fs.get('step')}, "
              f"sha256 {fs['sha256'][:12]})")
    _echo(f"step:        {m['step']}")
    _echo(f"images seen: {m['images_seen']} ({m['images_seen'] / 1000:.1f} kimg)")
    _echo(f"train time:  {m.get('elapsed_s', 0):.0f} s")
    for name, label in (("metrics.jsonl", "last log:   "), ("evals.jsonl", "last eval:  ")):
        logged = Path(run) / name if Path(run).is_dir() else None
        if logged and logged.is_file():
            lines = logged.read_text().strip().splitlines()
            if lines:
                _echo(f"{label} {lines[-1]}")
    best = Path(run) / "checkpoints" / "best.safetensors" if Path(run).is_dir() else None
    if best is not None and best.is_file():
        b = checkpoint.read_meta(best).get("best", {})
        _echo(f"best:        {b.get('metric')} {b.get('value', float('nan')):.4g} at step {b.get('step')} "
              f"({b.get('n')} samples; {best})")
    results = _saved_results(Path(run)) if Path(run).is_dir() else []
    if results:
        _echo("results:     (the JSON files of eval, eval-nll and the benchmarks in the run directory)")
        for line in results:
            _echo(f"  {line}")
    _echo("config:")
    _echo(json.dumps(m["config"], indent=2))


def _saved_results(run_dir: Path) -> list[str]:
    """One line per result file in a run directory: an evaluation's summary (eval, compare's per-run JSON,
    the benchmarks) or a likelihood (eval-nll), with the N and checkpoint step it was measured at."""
    lines = []
    for p, d in saved_results(run_dir):
        if is_nll_result(d):  # eval-nll's (it also has a summary: the nats line says more)
            nums = [f"nll {d['nats']:.4g} nats ({d['bits_per_dim']:.4g} bits/dim, {d.get('bound', 'exact')})"]
            where = [f"{k} {d[k]}" for k in ("split", "n", "step") if k in d]
        elif isinstance(d.get("summary"), dict) and d["summary"]:
            proto = next(iter(d.get("metrics", {}).values()), {}).get("protocol", d.get("protocol", {}))
            nums = [f"{k} {v:.4g}" for k, v in d["summary"].items()
                    if isinstance(v, (int, float)) and not k.endswith("_std")]
            where = [f"{k} {proto[k]}" for k in ("n_gen", "sampler", "steps", "guidance", "checkpoint_step")
                     if k in proto]
        else:
            continue
        lines.append(f"{p.name}: {', '.join(nums)}" + (f" [{', '.join(where)}]" if where else ""))
    return lines


# ---------------------------------------------------------------------------------------------- train


@app.command("train", context_settings={"help_option_names": ["-h", "--help"]})
def train_cmd(
    family: str | None = typer.Argument(None, help=f"one of: {', '.join(registry.FAMILIES)}"),
    preset: str | None = typer.Option(None, help="a named recipe (see 'imagegen list')"),
    data: str | None = typer.Option(None, help="digits | mnist | fashion-mnist | binarized-mnist | cifar10 | "
                                                  "folder:PATH"),
    data_root: str | None = typer.Option(None, help="dataset root (torchvision layout); or $IMAGEGEN_DATA"),
    image_size: int | None = typer.Option(None, help="resize images to this size"),
    channels: int | None = typer.Option(None, help="1 (grey) or 3 (RGB)"),
    latent: str | None = typer.Option(None, help="a trained autoencoder run: model its codes (a latent model)"),
    steps: int | None = typer.Option(None, help="budget: optimiser steps"),
    kimg: float | None = typer.Option(None, help="budget: thousands of training images"),
    budget: str | None = typer.Option(None, help="budget: wall-clock time, e.g. 90s, 5m, 1.5h"),
    seed: int | None = typer.Option(None, help="random seed"),
    out: Path | None = typer.Option(None, help="run directory (default runs/<family>-<data>)"),
    set_: list[str] = typer.Option([], "--set", help="override a config value, e.g. model.latent_dim=16"),
    resume: bool = typer.Option(True, "--resume/--fresh", help="continue from the run's newest checkpoint "
                                                               "(default) or start over"),
    deterministic: bool = typer.Option(False, help="use deterministic algorithms"),
    dry_run: bool = typer.Option(False, help="print the resolved config and exit"),
) -> None:
    """Train a model. Re-running the same --out resumes it."""
    setup = dict(preset=preset, data=data, data_root=data_root, steps=steps, kimg=kimg, budget=budget, overrides=set_,
                 latent=latent, image_size=image_size, channels=channels, seed=seed, deterministic=deterministic)
    if dry_run:
        _echo(api.train_config(family, **setup).to_json())
        return
    run_dir = api.train(family, out=out, fresh=not resume, **setup)
    if os.environ.get("RANK", "0") == "0":  # one line, from the main process of a multi-process run
        _echo(f"run directory: {run_dir}")


# ---------------------------------------------------------------------------------------------- sample & apps

# The options of sample / complete / denoise / interpolate come from the contract: every keyword option of any
# registered family's function (its signature, and SAMPLE_CHOICES for the values of a choice) is a flag, so a
# family's new option reaches the command line without an edit here. Which family takes which is checked when
# the run is loaded (api.check_options): an option the run's family does not take is a one-line error naming
# the ones it does.

def with_family_options(fn_name: str, exclude: frozenset = frozenset()):
    """Give a command one ``--flag`` per option of the families' ``fn_name`` (see ``family_options``); the
    command receives the ones the user gave as ``options: dict``."""

    def wrap(command):
        generated = family_options(fn_name, exclude)
        base = inspect.signature(command)
        params = [p for p in base.parameters.values() if p.name != "options"]
        hints = typing.get_type_hints(command)
        hints.pop("options", None)
        taken = {p.name for p in params}
        for name, entry in generated.items():
            if name in taken:
                raise TypeError(f"{fn_name} option {name} clashes with the command's own --{name}")
            kind = entry["type"]
            decls = [f"--{name.replace('_', '-')}/--no-{name.replace('_', '-')}"] if kind is bool else []
            params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                                            default=typer.Option(None, *decls, help=option_help(name, entry)),
                                            annotation=kind | None))
            hints[name] = kind | None

        @functools.wraps(command)
        def run(**kwargs):
            options = {k: kwargs.pop(k) for k in generated if kwargs.get(k) is not None}
            for k in generated:
                kwargs.pop(k, None)
            return command(**kwargs, options=options)

        run.__signature__ = base.replace(parameters=params)
        run.__annotations__ = hints
        del run.__wrapped__  # typer reads the signature above, not the command's own
        return run

    return wrap


def _parse_labels(labels: str | None):
    if labels is None:
        return None
    try:
        return [int(v) for v in labels.split(",") if v.strip()]
    except ValueError:
        raise ImagegenError(f"--labels takes integers like 3 or 0,1,2, got '{labels}'") from None


def _check_outputs(out: Path | None, out_dir: Path | None = None) -> None:
    """Refuse an output we could not write before any sampling time is spent on it."""
    if out is None and out_dir is None:
        raise ImagegenError("say where to write: --out grid.png (or samples.npz) or --out-dir folder/")
    known = sorted(IMAGE_EXTENSIONS) + list(ARRAY_EXTENSIONS)
    if out is not None and out.suffix.lower() not in known:
        raise ImagegenError(f"--out {out}: cannot write a '{out.suffix}' file; end the name in one of "
                            f"{', '.join(known)}")
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise ImagegenError(f"--out-dir {out_dir} is a file; give a folder")


def _check_count(name: str, n: int) -> None:
    config.check_range(n, "[1,inf)", name)


def _write_images(x, out: Path | None, out_dir: Path | None, nrow: int | None = None, labels=None) -> None:
    """Write what the command made; every caller ran ``_check_outputs`` before its sampling."""
    if out is not None and out.suffix.lower() in ARRAY_EXTENSIONS:  # every image, uint8, for eval-folder
        save_image_array(out, to_uint8(x.cpu()), labels)
        _echo(f"wrote {x.shape[0]} images to {out}")
    elif out is not None:
        save_grid(x, out, nrow=nrow)
        _echo(f"wrote {out}")
    if out_dir is not None:  # with labels, one sub-folder per class: the layout folder: and eval-folder read
        from torchvision.utils import save_image  # torchvision takes over a second to import: only when used

        names = None if labels is None else [str(int(v)) for v in labels]
        for folder in {out_dir} if names is None else {out_dir / c for c in names}:
            folder.mkdir(parents=True, exist_ok=True)
        for i in range(x.shape[0]):
            folder = out_dir if names is None else out_dir / names[i]
            save_image((x[i].clamp(-1, 1) + 1) / 2, str(folder / f"{i:06d}.png"))
        where = "" if names is None else f" ({len(set(names))} class sub-folders)"
        _echo(f"wrote {x.shape[0]} images to {out_dir}{where}")


@app.command("sample")
@with_family_options("sample")
def sample_cmd(
    run: Path = typer.Argument(..., help="run directory, checkpoint file or zoo:NAME"),
    n: int = typer.Option(64, help="number of images"),
    out: Path | None = typer.Option(None, help="one PNG grid, or a .npz of all images (uint8 x, labels y) "
                                               "for 'imagegen eval-folder'"),
    out_dir: Path | None = typer.Option(None, help="one PNG per image in this folder; with --labels, in one "
                                                   "sub-folder per class (what --data folder: and eval-folder read)"),
    labels: str | None = typer.Option(None, help="class label(s): 3, one per image 0,1,2,..., or 'balanced' "
                                                 "(0, 1, ..., K-1, 0, 1, ...)"),
    seed: int = typer.Option(0, help="image i is drawn from a generator seeded by (seed, i): the same images at "
                                     "any --batch-size"),
    batch_size: int = typer.Option(256),
    device: str = typer.Option("auto"),
    no_ema: bool = typer.Option(False, help="use the raw weights instead of the EMA copy"),
    options: dict | None = None,
) -> None:
    """Draw samples from a trained model. The sampling options below are the families' (a family takes its own)."""
    _check_outputs(out, out_dir)
    _check_count("--n", n)
    model = api.load(run, device=device, ema=not no_ema)
    k = model.info.num_classes
    wanted = balanced_labels(n, max(k, 1)) if labels and labels.strip().lower() == "balanced" \
        else _parse_labels(labels)
    y = check_labels(wanted, n, k, "cpu")  # (n,) as model.sample uses them
    x = model.sample(n, labels=y, seed=seed, batch_size=batch_size, progress=True, **options)
    _write_images(x, out, out_dir, labels=y)


@app.command("eval-nll")
def eval_nll_cmd(
    run: Path = typer.Argument(...),
    split: str = typer.Option("test"),
    data_root: str | None = typer.Option(None, help="dataset root, if not the one used for training"),
    n: int | None = typer.Option(None, help="evaluate only the first N images"),
    batch_size: int = typer.Option(100),
    seed: int = typer.Option(0, help="seed of the fixed binarisation (binary data) and of sampling bounds"),
    device: str = typer.Option("auto"),
    conditional: bool = typer.Option(False, help="class-conditional models: report -log p(x|y) with the true "
                                                 "labels instead of the marginal -log p(x)"),
    t_samples: int | None = typer.Option(None, help="diffusion: estimate the bound's KL sum from K random time "
                                                   "steps per image (unbiased, K + 1 network calls) instead of all T"),
    out: Path | None = typer.Option(None, help="write the result as JSON"),
) -> None:
    """Negative log-likelihood on a split, in nats per image and bits per dimension."""
    options = {} if t_samples is None else {"t_samples": t_samples}
    result = evaluate_nll(run, split=split, data_root=data_root, n=n, batch_size=batch_size, seed=seed,
                          device=device, conditional=conditional, **options)
    _echo(f"{result['family']} on {result['dataset']} ({split}, {result['n']} images): "
          f"{result['nats']:.3f} nats/image, {result['bits_per_dim']:.4f} bits/dim ({result['bound']}; "
          f"conditioning: {result['conditioning']})")
    if out is not None:
        out.write_text(json.dumps(result, indent=2))
        _echo(f"wrote {out}")


@with_family_options("complete")
def inpaint_cmd(
    run: Path = typer.Argument(...),
    image: Path = typer.Option(..., help="the image to fill"),
    mask: Path | None = typer.Option(None, help="mask image: white pixels are kept, black ones filled"),
    keep: str | None = typer.Option(None, help="instead of --mask: top-half | left-half | bottom-half | right-half"),
    n: int = typer.Option(1, help="completions per image"),
    out: Path = typer.Option(..., help="PNG strip: original, masked input, completions"),
    labels: str | None = typer.Option(None), seed: int = typer.Option(0), device: str = typer.Option("auto"),
    options: dict | None = None,
) -> None:
    """Fill the unknown part of an image (a mask, or --keep top-half) through the family's 'complete'."""
    _check_outputs(out)
    _check_count("--n", n)
    model = api.load(run, device=device)
    x = load_image(image, model.info)
    if (mask is None) == (keep is None):
        raise ImagegenError("give exactly one of --mask MASK.png (white = keep) or --keep top-half|left-half")
    m = load_mask(mask, model.info) if mask is not None else make_mask(keep, model.info)
    xs, ms = x.expand(n, -1, -1, -1).clone(), m.expand(n, -1, -1, -1).clone()
    filled = model.complete(xs, ms, labels=_parse_labels(labels), seed=seed, **options)
    masked = x * m + (1 - m) * -1  # the input with the unknown part blacked out, shown first
    _write_images(torch.cat([x, masked, filled]), out, None, nrow=n + 2)


app.command("inpaint")(inpaint_cmd)
app.command("complete")(inpaint_cmd)


@app.command("denoise")
@with_family_options("denoise")
def denoise_cmd(
    run: Path = typer.Argument(...),
    image: Path = typer.Option(...),
    strength: float = typer.Option(0.4, help="0 keeps the image, 1 ignores it"),
    n: int = typer.Option(1),
    out: Path = typer.Option(...),
    labels: str | None = typer.Option(None), seed: int = typer.Option(0), device: str = typer.Option("auto"),
    options: dict | None = None,
) -> None:
    """Denoise or edit an image (SDEdit-style where the family supports it)."""
    _check_outputs(out)
    _check_count("--n", n)
    model = api.load(run, device=device)
    x = load_image(image, model.info)
    y = model.denoise(x.expand(n, -1, -1, -1).clone(), strength, labels=_parse_labels(labels), seed=seed,
                      **options)
    _write_images(torch.cat([x, y]), out, None, nrow=n + 1)


@app.command("interpolate")
@with_family_options("interpolate", exclude=frozenset({"seeds"}))
def interpolate_cmd(
    run: Path = typer.Argument(...),
    a: Path | None = typer.Option(None, help="first image"),
    b: Path | None = typer.Option(None, help="second image"),
    seeds: str | None = typer.Option(None, help="instead of images: two seeds, e.g. 1,2 (GANs, diffusion)"),
    frames: int = typer.Option(8),
    out: Path = typer.Option(...),
    labels: str | None = typer.Option(None), device: str = typer.Option("auto"),
    options: dict | None = None,
) -> None:
    """A strip of images morphing from A to B (or between the samples of two seeds)."""
    _check_outputs(out)
    model = api.load(run, device=device)
    if seeds is not None:
        try:
            seed_pair = tuple(int(s) for s in seeds.split(","))
        except ValueError:
            raise ImagegenError(f"--seeds takes two integers like 1,2, got '{seeds}'") from None
        if len(seed_pair) != 2:
            raise ImagegenError(f"--seeds takes exactly two integers like 1,2, got '{seeds}'")
        options["seeds"] = seed_pair
        xa = xb = None
    else:
        if a is None or b is None:
            raise ImagegenError("give two images (--a A.png --b B.png) or two seeds (--seeds 1,2)")
        xa, xb = load_image(a, model.info), load_image(b, model.info)
    strip = model.interpolate(xa, xb, frames, labels=_parse_labels(labels), **options)
    _write_images(strip, out, None, nrow=frames)


def _register_extensions() -> None:
    """Command groups that live beside their implementation (e.g. evaluation); imported here, after this
    module's own commands exist, because they import helpers from it."""
    try:
        from . import cli_eval
    except ImportError:
        return
    cli_eval.register(app)
    __import__(f"{__package__}.cli_restore", fromlist=["register"]).register(app)  # restore, enhance
    __import__(f"{__package__}.cli_serve", fromlist=["register"]).register(app)  # imagegen serve (the web app)
    __import__(f"{__package__}.cli_report", fromlist=["register"]).register(app)  # imagegen report (HTML page)


_register_extensions()


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"  # one line for the user, not the source line that raised it


def main(argv: list[str] | None = None) -> None:
    warnings.simplefilter("default")
    previous_format, warnings.formatwarning = warnings.formatwarning, _format_warning
    try:
        _run(argv)
    finally:  # in-process callers (tests, notebooks) get their own warning format back
        warnings.formatwarning = previous_format


def _run(argv: list[str] | None) -> None:
    try:
        code = app(args=argv, standalone_mode=False)
        # typer >= 0.13 turns Ctrl-C (and any Exit) into a returned exit code when not standalone; commands
        # themselves return None, so an int here is an exit status to pass on, not data
        if isinstance(code, int) and not isinstance(code, bool) and code != 0:
            if code == 130:
                typer.echo("aborted", err=True)
            sys.exit(code)
    except ImagegenError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as e:  # click's usage errors (unknown option, missing argument, bad value)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):  # a log line, an event file
            typer.echo(f"error: disk full writing {e.filename or 'a file'} ({e.strerror}); free some space "
                       f"and run the same command again", err=True)
            sys.exit(2)
        if isinstance(e, _usage_error_types()):
            e.show()
            sys.exit(e.exit_code)
        raise


def _usage_error_types() -> tuple[type, ...]:
    """Click's exception class, and the copy newer typer releases vendor as ``typer._click`` (its usage
    errors are not ``click.ClickException`` instances, so catching click's alone printed tracebacks)."""
    found = [click.ClickException]
    try:
        from typer._click.exceptions import ClickException as TyperClickException
    except ImportError:  # typer that uses click itself
        pass
    else:
        found.append(TyperClickException)
    return tuple(found)


if __name__ == "__main__":
    main()

