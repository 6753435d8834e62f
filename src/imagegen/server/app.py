"""The HTTP API (FastAPI) and the page. Thin: a handler checks the request (run id, counts, options,
images), hands a job to the run's worker (imagegen.server.jobs) and answers with the job; the job calls the
Python API (imagegen.server.tasks). Every error is a JSON ``{"error": "one line"}`` with a 4xx status, and
the server keeps serving.

Endpoints (the OpenAPI schema at /openapi.json has their fields)::

    GET  /api/health                     ok, runs, jobs waiting per run
    GET  /api/capabilities               limits, mask presets, restoration tasks (and which runs offer each)
    GET  /api/runs                       every run: family, data, step, images seen, options, metrics
    GET  /api/runs/{run}                 ... plus config, checkpoint, training sample grids, test images
    GET  /api/runs/{run}/samples/{name}  a training sample grid (PNG), by a name from the listing
    GET  /api/runs/{run}/test-images/{i} test image i of the run's dataset (PNG), when it is on disk
    POST /api/sample | /api/complete | /api/restore | /api/interpolate    -> 202 a job (429 when busy)
    GET  /api/jobs/{id}?wait=S           the job (waits up to S seconds for it to finish)
    DELETE /api/jobs/{id}                cancel it
    GET  /api/jobs/{id}/grid.png | /images.npz   a finished job's images
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..data import to_float
from ..errors import ImagegenError
from ..families.base import check_labels
from . import tasks
from .images import ImageRejected, decode_image, decode_mask, grid_png, npz_bytes, png_bytes
from .jobs import Busy, JobManager
from .runs import Run, family_options

STATIC = Path(__file__).parent / "static"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]", "testserver")
# The page loads only what the server serves; a browser enforces it (no CDN, fonts or analytics can load).
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; font-src 'none'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'")


@dataclass
class Limits:
    """What one request may ask for (``imagegen serve --max-...``)."""

    max_images: int = 64  # images per request (n, frames)
    max_steps: int = 1000  # any integer family option (steps, iterations, resample, restarts)
    max_upload_bytes: int = 2_000_000  # per uploaded image
    max_upload_pixels: int = 4_000_000  # per uploaded image, read from its header before decoding
    max_queue: int = 8  # jobs waiting per run; past it: 429 busy
    max_wait_s: float = 30.0  # the longest GET /api/jobs/{id}?wait=

    @property
    def max_body_bytes(self) -> int:  # two base64 images (interpolation's a and b, or image and mask) + JSON
        return 2 * (self.max_upload_bytes * 4 // 3 + 16) + 65536


# ---------------------------------------------------------------------------------------------- requests

OptionValue = StrictBool | StrictInt | StrictFloat | StrictStr


class ImageIn(BaseModel):
    """An image: base64 bytes (or a data: URL) of a PNG/JPEG/WebP/BMP/GIF, or a test image of the run."""

    model_config = ConfigDict(extra="forbid")
    data: str | None = Field(None, description="base64 image bytes or a data:image/...;base64, URL")
    test_index: int | None = Field(None, ge=0, description="index into the run's test split")


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run: int = Field(..., ge=0, description="run id: its index in GET /api/runs")
    seed: int = Field(0, ge=0, le=2**63 - 1)
    labels: list[int] | None = Field(None, description="one class for all images, or one per image")
    options: dict[str, OptionValue] = Field({}, description="the family's options (GET /api/runs: ops.*.options)")


class SampleIn(_Request):
    n: int = Field(16, ge=1, description="images")


class CompleteIn(_Request):
    image: ImageIn
    mask: str | None = Field(None, description="base64 mask image at the model's size: white keeps, black fills")
    preset: str | None = Field(None, description=f"instead of a mask: {', '.join(tasks.MASK_PRESETS)}")
    n: int = Field(1, ge=1, description="completions")
    resize: bool = Field(False, description="centre-crop and resize images of another size to the model's")


class RestoreIn(_Request):
    task: str = Field("denoise", description="a restoration task from GET /api/capabilities")
    image: ImageIn
    params: dict[str, float] = Field({}, description="the task's parameters (GET /api/capabilities)")
    n: int = Field(1, ge=1)
    resize: bool = False


class InterpolateIn(_Request):
    mode: Literal["seeds", "images"] = "seeds"
    seeds: tuple[int, int] = Field((1, 2), description="mode 'seeds': the two seeds")
    a: ImageIn | None = None
    b: ImageIn | None = None
    frames: int = Field(8, ge=2)
    resize: bool = False


class Rejected(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _host_name(host: str) -> str:
    """'127.0.0.1:7860' -> '127.0.0.1'; '[::1]:7860' -> '[::1]'."""
    if host.startswith("["):
        return host.split("]")[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# ---------------------------------------------------------------------------------------------- the app


def create_app(runs: list[Run], limits: Limits | None = None, allowed_hosts: tuple[str, ...] | None = None,
               ) -> FastAPI:
    """The API and page for ``runs`` (loaded already). ``allowed_hosts``: the Host headers answered (a
    browser on another site cannot reach a loopback server through DNS rebinding); None: loopback names."""
    limits = limits or Limits()
    by_id = {r.index: r for r in runs}
    jobs = JobManager([r.index for r in runs], max_queue=limits.max_queue)
    hosts = set(allowed_hosts or LOOPBACK_HOSTS)

    @asynccontextmanager
    async def lifespan(app):
        yield
        jobs.stop()

    # no /docs or /redoc: FastAPI's pages load their scripts from a CDN, and nothing here may leave the machine
    app = FastAPI(title="imagegen serve", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Sample, complete, restore and interpolate with trained imagegen runs. "
                              "Every error is {\"error\": \"one line\"}; long work is a job to poll.")
    app.state.jobs, app.state.runs, app.state.limits = jobs, runs, limits

    # ------------------------------------------------------------------ errors: one line, 4xx, keep serving
    def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"error": _one_line(message)}, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request, exc):
        errs = exc.errors()
        e = errs[0] if errs else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        return error(422, f"{where}: {e.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc):
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(Rejected)
    async def _rejected(request, exc):
        return error(exc.status, exc.message)

    @app.exception_handler(ImageRejected)
    async def _image(request, exc):
        return error(exc.status, exc.message)

    @app.exception_handler(ImagegenError)
    async def _user(request, exc):
        return error(400, str(exc))

    @app.exception_handler(Busy)
    async def _busy(request, exc):
        return error(429, str(exc), {"Retry-After": "1"})

    @app.middleware("http")
    async def _guard(request: Request, call_next):
        host = _host_name(request.headers.get("host") or "")
        if "*" not in hosts and host not in hosts:
            return error(421, f"this server answers only to {', '.join(sorted(hosts))}; open it as "
                              "http://127.0.0.1:PORT/")
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limits.max_body_bytes):
            return error(413, f"the request body is over the server's limit of {limits.max_body_bytes} bytes "
                              f"(uploads: {limits.max_upload_bytes} bytes per image)")
        if request.method in ("POST", "PUT", "PATCH") and length is None:
            return error(411, "send the request body with a Content-Length header")
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    # ------------------------------------------------------------------ checks shared by the requests
    def get_run(run_id: int) -> Run:
        if run_id not in by_id:
            raise Rejected(404, f"unknown run {run_id}; this server has runs 0..{len(runs) - 1} (GET /api/runs)")
        return by_id[run_id]

    def check_count(n: int, what: str) -> None:
        if n > limits.max_images:
            raise Rejected(400, f"{what} = {n} is over the server's limit of {limits.max_images} per request "
                                "(imagegen serve --max-images)")

    def check_options(run: Run, op: str, options: dict) -> dict:
        """The family's own options, checked against its signature (names, types, choices) and the caps."""
        spec = family_options(run.model.family, op)
        if spec is None:
            raise Rejected(400, f"run {run.index} ({run.model.family}) does not offer '{op}'")
        by_name = {o["name"]: o for o in spec}
        out = {}
        for k, v in options.items():
            if k not in by_name:
                raise Rejected(400, f"the {run.model.family} family's {op} does not take option '{k}'; it takes: "
                                    f"{', '.join(by_name) or 'no options'}")
            o = by_name[k]
            t = o["type"]
            ok = (t == "bool" and isinstance(v, bool)) or (t == "str" and isinstance(v, str)) or \
                 (t == "int" and isinstance(v, int) and not isinstance(v, bool)) or \
                 (t == "float" and isinstance(v, (int, float)) and not isinstance(v, bool))
            if not ok:
                raise Rejected(400, f"option {k} must be a{'n' if t == 'int' else ''} {t}, got {v!r}")
            if t == "float":
                v = float(v)
                if not math.isfinite(v):
                    raise Rejected(400, f"option {k} must be a finite number, got {v!r}")
            if t == "int" and abs(v) > limits.max_steps:
                raise Rejected(400, f"option {k} = {v} is over the server's limit of {limits.max_steps} "
                                    "(imagegen serve --max-steps)")
            if t == "str" and len(v) > 64:
                raise Rejected(400, f"option {k} is too long")
            if "choices" in o and v not in o["choices"]:
                raise Rejected(400, f"option {k} must be one of {', '.join(map(str, o['choices']))}, got {v!r}")
            out[k] = v
        return out

    def labels_for(run: Run, labels, n: int):
        if labels is None:
            return None
        return check_labels(labels, n, run.model.info.num_classes if run.model.class_conditional else 0, "cpu")

    def image_for(run: Run, im: ImageIn | None, what: str, resize: bool) -> torch.Tensor:
        """(1, C, H, W) in [-1, 1] from an upload or a test image of the run."""
        if im is None or (im.data is None) == (im.test_index is None):
            raise Rejected(400, f"{what}: give exactly one of data (base64 image) or test_index")
        if im.test_index is not None:
            try:
                u8, _ = run.test_image(im.test_index)
            except (LookupError, IndexError) as e:
                raise Rejected(400, str(e)) from None
            return to_float(u8.unsqueeze(0))
        return decode_image(im.data, what, run.model.info, limits.max_upload_bytes, limits.max_upload_pixels,
                            resize)

    def submit(run: Run, kind: str, fn, key: dict) -> JSONResponse:
        job = jobs.submit(run.index, kind, fn, json.dumps(key, sort_keys=True, default=str))
        return JSONResponse(jobs.describe(job), status_code=202)

    # ------------------------------------------------------------------ the page
    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return Response(status_code=204)

    # ------------------------------------------------------------------ information
    @app.get("/api/health", summary="Is the server up; jobs waiting or running per run")
    def health():
        return {"ok": True, "runs": len(runs), "jobs": {str(k): v for k, v in jobs.queued().items()}}

    @app.get("/api/capabilities", summary="Limits, mask presets and restoration tasks")
    def capabilities():
        restore = []
        for name, t in tasks.RESTORE_TASKS.items():
            d = t.to_dict()
            d["runs"] = [r.index for r in runs if name in tasks.restore_tasks_for(r.model)]
            d["options"] = {str(r.index): family_options(r.model.family, t.op) for r in runs
                            if r.index in d["runs"]}
            restore.append(d)
        return {"limits": asdict(limits), "mask_presets": list(tasks.MASK_PRESETS), "restore_tasks": restore,
                "ops": ["sample", "complete", "restore", "interpolate"]}

    @app.get("/api/runs", summary="The runs this server was started with")
    def list_runs():
        return [r.summary() for r in runs]

    @app.get("/api/runs/{run_id}", summary="One run: config, checkpoint, sample grids, test images")
    def run_detail(run_id: int):
        return get_run(run_id).detail()

    @app.get("/api/runs/{run_id}/samples/{name}", summary="A sample grid saved while training (PNG)")
    def run_grid(run_id: int, name: str):
        run = get_run(run_id)
        try:
            path = run.sample_grid_path(name)
        except KeyError:
            raise Rejected(404, f"run {run_id} has no sample grid '{name}' (GET /api/runs/{run_id} lists them)") \
                from None
        return FileResponse(path, media_type="image/png")

    @app.get("/api/runs/{run_id}/test-images/{index}", summary="A test image of the run's dataset (PNG)")
    def test_image(run_id: int, index: int):
        run = get_run(run_id)
        try:
            u8, label = run.test_image(index)
        except (LookupError, IndexError) as e:
            raise Rejected(404, str(e)) from None
        headers = {} if label is None else {"X-Label": str(label)}
        return Response(png_bytes(u8), media_type="image/png", headers=headers)

    # ------------------------------------------------------------------ work
    @app.post("/api/sample", status_code=202, summary="Draw n images (a job)")
    def sample(req: SampleIn):
        run = get_run(req.run)
        check_count(req.n, "n")
        options = check_options(run, "sample", req.options)
        y = labels_for(run, req.labels, req.n)
        return submit(run, "sample", tasks.sample_job(run.model, req.n, y, req.seed, options),
                      {"n": req.n, "options": options})

    @app.post("/api/complete", status_code=202, summary="Fill the erased part of an image (a job)")
    def complete(req: CompleteIn):
        run = get_run(req.run)
        check_count(req.n, "n")
        options = check_options(run, "complete", req.options)
        y = labels_for(run, req.labels, req.n)
        x = image_for(run, req.image, "image", req.resize)
        if (req.mask is None) == (req.preset is None):
            raise Rejected(400, f"give exactly one of mask (base64 image: white keeps) or preset "
                                f"({', '.join(tasks.MASK_PRESETS)})")
        if req.mask is not None:
            mask = decode_mask(req.mask, run.model.info, limits.max_upload_bytes, limits.max_upload_pixels,
                               req.resize)
        else:
            mask = tasks.preset_mask(req.preset, run.model.info)
        return submit(run, "complete", tasks.complete_job(run.model, x, mask, req.n, y, req.seed, options),
                      {"n": req.n, "options": options, "unknown": int((mask == 0).sum())})

    @app.post("/api/restore", status_code=202, summary="Degrade and restore an image (a job)")
    def restore(req: RestoreIn):
        run = get_run(req.run)
        task = tasks.RESTORE_TASKS.get(req.task)
        if task is None:
            raise Rejected(400, f"unknown restoration task '{req.task}'; this server offers: "
                                f"{', '.join(tasks.RESTORE_TASKS)}")
        if req.task not in tasks.restore_tasks_for(run.model):
            raise Rejected(400, f"run {run.index} ({run.model.family}) does not offer '{req.task}'; runs that do: "
                                f"{[r.index for r in runs if req.task in tasks.restore_tasks_for(r.model)]}")
        check_count(req.n, "n")
        params = tasks.check_params(task, req.params)
        options = check_options(run, task.op, req.options)
        y = labels_for(run, req.labels, req.n)
        x = image_for(run, req.image, "image", req.resize)
        return submit(run, "restore", tasks.restore_job(run.model, task, x, params, req.n, y, req.seed, options),
                      {"task": task.name, "n": req.n, "params": params, "options": options})

    @app.post("/api/interpolate", status_code=202, summary="A strip between two seeds or two images (a job)")
    def interpolate(req: InterpolateIn):
        run = get_run(req.run)
        check_count(req.frames, "frames")
        modes = run.interpolate_modes()
        if not modes:
            raise Rejected(400, f"run {run.index} ({run.model.family}) does not offer interpolation")
        if req.mode not in modes:
            raise Rejected(400, f"the {run.model.family} family interpolates between {' or '.join(modes)}, "
                                f"not {req.mode}")
        options = check_options(run, "interpolate", req.options)
        y = None if req.labels is None else labels_for(run, req.labels, len(req.labels))
        if req.mode == "seeds":
            if min(req.seeds) < 0:
                raise Rejected(422, "seeds must be >= 0")
            a = b = None
            seeds = req.seeds
        else:
            a = image_for(run, req.a, "a", req.resize)
            b = image_for(run, req.b, "b", req.resize)
            seeds = None
        return submit(run, "interpolate",
                      tasks.interpolate_job(run.model, a, b, seeds, req.frames, y, req.seed, options),
                      {"mode": req.mode, "frames": req.frames, "options": options})

    # ------------------------------------------------------------------ jobs
    def get_job(job_id: str):
        try:
            return jobs.get(job_id)
        except KeyError:
            raise Rejected(404, f"unknown job '{job_id}' (finished jobs are kept for the last "
                                f"{jobs.keep_finished})") from None

    @app.get("/api/jobs/{job_id}", summary="A job's state, progress and (when done) result")
    async def job_state(job_id: str, wait: float = Query(0.0, ge=0.0, description="seconds to wait for it")):
        job = get_job(job_id)
        deadline = time.monotonic() + min(wait, limits.max_wait_s)
        while not job.done_event.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # the event loop stays free; the work runs in the run's worker thread
        return jobs.describe(job)

    @app.delete("/api/jobs/{job_id}", summary="Cancel a job (queued: dropped; running: stopped)")
    def job_cancel(job_id: str):
        get_job(job_id)
        return jobs.describe(jobs.cancel(job_id))

    def finished(job_id: str):
        job = get_job(job_id)
        if job.status != "done":
            raise Rejected(409, f"job {job_id} is {job.status}, not done")
        return job

    @app.get("/api/jobs/{job_id}/grid.png", summary="A finished job's images as one PNG grid")
    def job_grid(job_id: str):
        job = finished(job_id)
        return Response(grid_png(job.result["images"], job.result["nrow"]), media_type="image/png",
                        headers={"Content-Disposition": f'attachment; filename="{job.kind}-{job.id}.png"'})

    @app.get("/api/jobs/{job_id}/images.npz", summary="A finished job's images as .npz (uint8 x, labels y)")
    def job_npz(job_id: str):
        job = finished(job_id)
        return Response(npz_bytes(job.result["images"], job.result["labels"]), media_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="{job.kind}-{job.id}.npz"'})

    return app
