"""imagegen: train, sample, evaluate and compare GANs, VAEs, autoregressive and diffusion image models.

Python API::

    import imagegen
    run_dir = imagegen.train("vae", data="digits", steps=200, out="runs/vae-digits")
    model = imagegen.load(run_dir)
    x = model.sample(16, seed=0)          # (16, C, H, W) in [-1, 1]
    result = imagegen.evaluate_run(run_dir, metrics="fid,kid", n=2000)   # what 'imagegen eval' writes
    imagegen.report([run_dir, "runs/gan-digits"], "report.html")   # one HTML page comparing runs
"""

from __future__ import annotations

from .api import LoadedModel, load, train  # noqa: E402
from .data import DATASETS  # noqa: E402
from .evaluation import EvalOptions, compare_runs, evaluate_folder, evaluate_run, reference_stats  # noqa: E402
from .provenance import __version__  # noqa: E402
from .registry import FAMILIES  # noqa: E402
from .report import report  # noqa: E402

__all__ = ["DATASETS", "FAMILIES", "EvalOptions", "LoadedModel", "__version__", "compare_runs", "evaluate_folder",
           "evaluate_run", "load", "reference_stats", "report", "train"]
