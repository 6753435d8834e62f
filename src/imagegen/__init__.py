"""imagegen: train, sample, evaluate and compare GANs, VAEs, autoregressive and diffusion image models.

Python API::

    import imagegen
    run_dir = imagegen.train("vae", data="digits", steps=200, out="runs/vae-digits")
    model = imagegen.load(run_dir)
    x = model.sample(16, seed=0)          # (16, C, H, W) in [-1, 1]
    result = imagegen.evaluate_run(run_dir, metrics="fid,kid", n=2000)   # what 'imagegen eval' writes
    imagegen.report([run_dir, "runs/gan-digits"], "report.html")   # one HTML page comparing runs

Layers, lowest first. A module imports only from its own layer or lower ones (at the top of the file or inside
a function alike); tests/test_layers.py checks it, tools/import_graph.py draws it, docs/architecture.md
explains it:

0. core: errors, interrupt, device, provenance, distributions, cache (where rebuildable files live), rng
   (per-image random streams)
1. config: config, augment, registry (the registry imports families by name, at run time)
2. blocks: nn, samplers, families.base (the Batch a train_step is given, helpers), restoration (operators
   shared by the families)
3. data: data, checkpoint, memory
4. metrics: metrics.* (standalone metrics: Inception/FID/KID, PR/DC, the dataset classifier, CAS)
5. families: families.* (one module per family, the contract)
6. model: latent, model (a trained model loaded from a checkpoint)
7. evaluation: evaluation.*, likelihood
8. trainer
9. api
10. front ends: cli, cli_*, server.*, report, demo, and this package's namespace (which gathers the public names)
"""

from __future__ import annotations

# the order above as data (read with ast by tests/test_layers.py and tools/import_graph.py; keep them equal)
LAYERS = (
    ("core", ("imagegen.errors", "imagegen.interrupt", "imagegen.device", "imagegen.provenance",
              "imagegen.distributions", "imagegen.cache", "imagegen.rng", "imagegen.zoo")),
    ("config", ("imagegen.config", "imagegen.augment", "imagegen.registry")),
    ("blocks", ("imagegen.nn", "imagegen.samplers", "imagegen.families.base", "imagegen.restoration")),
    ("data", ("imagegen.data", "imagegen.checkpoint", "imagegen.memory")),
    ("metrics", ("imagegen.metrics",)),
    ("families", ("imagegen.families",)),
    ("model", ("imagegen.latent", "imagegen.model")),
    ("evaluation", ("imagegen.evaluation", "imagegen.likelihood")),
    ("trainer", ("imagegen.trainer",)),
    ("api", ("imagegen.api",)),
    ("front ends", ("imagegen.cli", "imagegen.cli_options", "imagegen.cli_eval", "imagegen.cli_report",
                    "imagegen.cli_restore",
                    "imagegen.cli_serve", "imagegen.server", "imagegen.report", "imagegen.demo", "imagegen")),
)

from .api import LoadedModel, load, train  # noqa: E402
from .data import DATASETS  # noqa: E402
from .evaluation import EvalOptions, compare_runs, evaluate_folder, evaluate_run, reference_stats  # noqa: E402
from .provenance import __version__  # noqa: E402
from .registry import FAMILIES  # noqa: E402
from .report import report  # noqa: E402

__all__ = ["DATASETS", "FAMILIES", "LAYERS", "EvalOptions", "LoadedModel", "__version__", "compare_runs",
           "evaluate_folder", "evaluate_run", "load", "reference_stats", "report", "train"]
