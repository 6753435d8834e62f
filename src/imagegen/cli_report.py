"""``imagegen report``: one self-contained HTML page comparing runs (imagegen.report builds it).

``imagegen.cli`` calls :func:`register` on its typer app. The command only parses options; user mistakes
raise ImagegenError, which the CLI prints as one line.
"""

from __future__ import annotations

from pathlib import Path

import typer

from . import cli_eval as shared  # the options eval and compare take, so report spells them the same
from .evaluation import METRIC_HELP
from .report import report

_METRICS_HELP = ("also score every run now with one protocol (needs --n); comma list of: "
                 + ", ".join(METRIC_HELP))


def register(app: typer.Typer) -> None:
    """Add the ``report`` command to ``app``."""

    @app.command("report")
    @shared.with_options(shared.SAMPLING_OPTIONS)  # every family's sampling option, read from the contract
    def report_cmd(
        runs: list[Path] = typer.Argument(..., help="run directories (or checkpoint files, zoo:NAME, zoo:*)"),
        out: Path = typer.Option(..., help="the HTML file to write (self-contained: opens from disk)"),
        metrics: str | None = typer.Option(None, help=_METRICS_HELP),
        n: int | None = typer.Option(None, help="with --metrics: generated images per run"),
        ref: str = shared.REF_OPT, features: str = shared.FEATURES_OPT,
        results: list[Path] = typer.Option([], "--results", help="a result JSON of 'imagegen eval' or 'compare' "
                                                                   "kept outside the runs (repeatable)"),
        floor: list[Path] = typer.Option([], "--floor", help="an 'imagegen eval-folder' result of real images: "
                                                             "the floor at its N (repeatable)"),
        seed: int = typer.Option(0, help="seed of the sample grids and completions (the same for every run)"),
        n_grid: int = typer.Option(64, help="images in each run's sample grid"),
        n_complete: int = typer.Option(8, help="test images in each completion strip"),
        keep: str = typer.Option("top-half", help="what the completions keep: top-half | left-half | bottom-half | "
                                                  "right-half"),
        complete: bool = typer.Option(True, "--complete/--no-complete", help="make the completion strips"),
        title: str | None = typer.Option(None, help="the page title (default: the runs' names)"),
        data_root: str | None = shared.DATA_ROOT_OPT, inception_weights: str | None = shared.INCEPTION_OPT,
        device: str = shared.DEVICE_OPT,
        *, opts, sample_options: dict,
    ) -> None:
        """One HTML page comparing runs: samples, completions, numbers with their protocol, plots."""
        path = report(runs, out, metrics=metrics, n=n, ref=ref, features=features, results=results, floors=floor,
                      seed=seed, n_grid=n_grid, n_complete=n_complete, keep=keep, complete=complete,
                      sample_options=sample_options,
                      device=device, data_root=data_root, inception_weights=inception_weights, title=title)
        typer.echo(f"wrote {path}")
