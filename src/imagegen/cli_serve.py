"""``imagegen serve``: the local web app (imagegen.server). ``imagegen.cli`` calls :func:`register`."""

from __future__ import annotations

from pathlib import Path

import typer

from .errors import ImagegenError

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_cmd(
        runs: list[Path] = typer.Argument(..., help="run directories (or checkpoint files, zoo:NAME, zoo:*) to serve"),
        port: int = typer.Option(7860, help="TCP port"),
        host: str = typer.Option("127.0.0.1", help="address to bind; anything but loopback exposes the models "
                                                    "to the network"),
        device: str = typer.Option("auto", help="auto | cpu | cuda"),
        max_images: int = typer.Option(64, help="images per request (n, frames)"),
        max_steps: int = typer.Option(1000, help="largest integer family option (steps, iterations, ...)"),
        max_upload_bytes: int = typer.Option(2_000_000, help="bytes per uploaded image"),
        max_upload_pixels: int = typer.Option(4_000_000, help="pixels per uploaded image"),
        max_queue: int = typer.Option(8, help="jobs waiting per model; past it the API answers 429 busy"),
    ) -> None:
        """A local web app: sample, complete by drawing, restore, interpolate and compare the runs."""
        from .config import check_range

        for name, val in (("--port", port), ("--max-images", max_images), ("--max-steps", max_steps),
                          ("--max-upload-bytes", max_upload_bytes), ("--max-upload-pixels", max_upload_pixels),
                          ("--max-queue", max_queue)):
            check_range(val, "[1,inf)", name)
        if port > 65535:
            raise ImagegenError(f"--port must be at most 65535, got {port}")
        try:
            import uvicorn

            from .server import Limits, create_app, load_runs
        except ImportError as e:
            raise ImagegenError(f"imagegen serve needs fastapi and uvicorn ({e}); pip install fastapi uvicorn") \
                from None
        loaded = load_runs(runs, device=device)
        limits = Limits(max_images=max_images, max_steps=max_steps, max_upload_bytes=max_upload_bytes,
                        max_upload_pixels=max_upload_pixels, max_queue=max_queue)
        exposed = host not in _LOOPBACK
        hosts = ("*",) if host in ("0.0.0.0", "::", "") else (*_LOOPBACK, "[::1]", host)
        web = create_app(loaded, limits, allowed_hosts=None if not exposed else hosts)
        for r in loaded:
            typer.echo(f"run {r.index}: {r.name} ({r.model.family}, step {r.model.step}, {r.model.device})")
        if exposed:
            typer.echo(f"warning: binding {host}: anyone who can reach this machine on port {port} can use these "
                       "models and the server's CPU/GPU; there is no login. Use the default 127.0.0.1 unless you "
                       "mean it.", err=True)
        shown = f"[{host}]" if ":" in host else host
        typer.echo(f"serving on http://{shown}:{port}/ (Ctrl-C stops)")
        uvicorn.run(web, host=host, port=port, log_level="warning")
