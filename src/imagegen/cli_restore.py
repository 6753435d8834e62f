"""Restoration commands: ``restore`` (super-resolution, denoising, colourisation, inpainting and their
compositions) and ``enhance`` (super-resolution by 2 or 4, the shortcut).

``imagegen.cli`` calls :func:`register` on its typer app. The image given is the *measurement*: for srK the
low-resolution image (the model's size / K), for colourise a grey (or colour, made grey) image, for
denoise a noisy one, for inpaint the image whose masked-out part is to be filled. See docs/restoration.md.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from .errors import ImagegenError

TASK_HELP = ("sr2 | sr4 | denoise:S (S: noise std in [-1, 1] units) | colourise | inpaint (with --mask or --keep); "
             "join with +, e.g. sr2+denoise:0.1")


def _given(**kw) -> dict:
    return {k: v for k, v in kw.items() if v is not None}


def load_measurement(path: Path, model, op):
    """Read the image a task's measurement is: at the measurement's size (srK: the model's size / K; a
    different size is resized with a warning), in the model's channels; colourise then takes the channel
    mean (its forward map), so a colour photo and a grey one both give the grey measurement. A mask
    (inpaint) zeroes the unknown pixels: what the image holds there is not used."""
    from .data import load_image

    c, s = op.measurement_shape(model.info.channels, model.info.size)
    x = load_image(path, dataclasses.replace(model.info, size=s))  # (1, C, s, s)
    for m in op.maps:
        if m.task in ("colourise", "inpaint"):
            x = m.forward(x)
    return x


def _restore(run, image, task, mask, keep, n, out, compare, labels, seed, device, options):
    import torch

    from . import restoration
    from .api import load
    from .cli import _check_count, _check_outputs, _parse_labels, _write_images
    from .data import load_mask, make_mask

    _check_outputs(out)
    _check_count("--n", n)
    model = load(run, device=device)
    c, s = model.info.channels, model.info.size
    m = None
    if "inpaint" in task.lower():
        if (mask is None) == (keep is None):
            raise ImagegenError("inpaint needs exactly one of --mask MASK.png (white = keep) or --keep top-half")
        m = load_mask(mask, model.info) if mask is not None else make_mask(keep, model.info)
    elif mask is not None or keep is not None:
        raise ImagegenError(f"--mask/--keep are for the inpaint task, not '{task}'; drop them or add +inpaint")
    op = restoration.parse_task(task, c, s, m)
    restoration.check_offered(model.family, op)  # before any image is read or any step is taken
    y = load_measurement(image, model, op)
    ys = y.expand(n, -1, -1, -1).clone()
    fixed = model.restore(ys, op, labels=_parse_labels(labels), seed=seed, **options)
    if compare:  # the measurement as the pseudo-inverse shows it (blocky, grey, masked), then the results
        fixed = torch.cat([op.pinv(y).clamp(-1, 1), fixed])
    _write_images(fixed, out, None, nrow=fixed.shape[0])


def register(app: typer.Typer) -> None:
    """Add the restoration commands to ``app``."""

    @app.command("restore")
    def restore_cmd(
        run: Path = typer.Argument(..., help="run directory, checkpoint file or zoo:NAME"),
        image: Path = typer.Option(..., help="the measurement: the low-resolution (srK), grey, noisy or masked image"),
        task: str = typer.Option(..., help=TASK_HELP),
        mask: Path | None = typer.Option(None, help="inpaint: mask image, white pixels are known"),
        keep: str | None = typer.Option(None, help="inpaint, instead of --mask: top-half | left-half | ..."),
        n: int = typer.Option(1, help="restorations (independent draws) of the image"),
        out: Path = typer.Option(..., help="PNG of the restored image(s), or .npz"),
        compare: bool = typer.Option(False, help="put the measurement (through the pseudo-inverse) first"),
        labels: str | None = typer.Option(None), seed: int = typer.Option(0), device: str = typer.Option("auto"),
        method: str | None = typer.Option(None, help="family specific: diffusion ddnm | repaint | noisy-start; "
                                                      "vae gibbs | latent (default auto)"),
        steps: int | None = typer.Option(None, help="sampling steps (diffusion) or optimiser steps (GAN, VAE)"),
        sampler: str | None = typer.Option(None, help="diffusion sampler (ddim, ddpm, dpmpp-2m, heun)"),
        guidance: float | None = typer.Option(None, help="classifier-free guidance (diffusion)"),
        restarts: int | None = typer.Option(None, help="latent search restarts (GAN, VAE latent)"),
    ) -> None:
        """Recover an image from a degraded measurement y = A(x) + noise with a trained model."""
        _restore(run, image, task, mask, keep, n, out, compare, labels, seed, device,
                 _given(method=method, steps=steps, sampler=sampler, guidance=guidance, restarts=restarts))

    @app.command("enhance")
    def enhance_cmd(
        run: Path = typer.Argument(..., help="run directory, checkpoint file or zoo:NAME"),
        image: Path = typer.Option(..., help="the low-resolution image (the model's size / scale)"),
        scale: int = typer.Option(2, help="upscaling factor: 2 or 4"),
        n: int = typer.Option(1, help="independent draws"),
        out: Path = typer.Option(..., help="PNG of the enlarged image(s)"),
        compare: bool = typer.Option(False, help="put the nearest-neighbour enlargement first"),
        labels: str | None = typer.Option(None), seed: int = typer.Option(0), device: str = typer.Option("auto"),
        method: str | None = typer.Option(None, help="family specific (see imagegen restore --help)"),
        steps: int | None = typer.Option(None, help="sampling or optimiser steps"),
    ) -> None:
        """Super-resolution by 2 or 4: 'imagegen restore --task srK' with the model as the prior."""
        if scale not in (2, 4):
            raise ImagegenError(f"--scale must be 2 or 4, got {scale}; for other factors use "
                                f"imagegen restore --task sr{scale}")
        _restore(run, image, f"sr{scale}", None, None, n, out, compare, labels, seed, device,
                 _given(method=method, steps=steps))
