"""Evaluation: what ``imagegen eval``, ``compare``, ``eval-folder`` and ``ref-stats`` call, and what the trainer
calls every ``train.eval_every`` steps. One module per question:

- ``metrics_table``: the one table of metrics (name, help, result keys, needs, lower-is-better);
- ``options``: :class:`EvalOptions` and its checks;
- ``reference``: the reference split, its subset, the feature networks, cached reference features;
- ``scoring``: generated images against the reference (every generative metric), and the likelihood;
- ``generation``: seeded, resumable generation of the images to score; the sampling options in force;
- ``runs``: one run, several runs side by side, result files written and read back;
- ``folders``: a folder or array of images that did not come from a run;
- ``during_training``: the checks and the evaluation of ``train.eval_every``.

Every path meets in :func:`scoring.evaluate_images`; the likelihood in :func:`imagegen.likelihood.split_nll`.
This package sits below the trainer and the public API (see ``imagegen/__init__.py``) and imports neither.
"""

from __future__ import annotations

from .during_training import evaluate_during_training, training_eval_options, training_result_keys
from .folders import evaluate_folder
from .generation import balanced_labels, generate_uint8, sample_options_protocol, takes
from .metrics_table import COMPARE_COLUMNS, GENERATIVE, LOWER_IS_BETTER, METRIC_HELP, METRICS, TABLE, Metric
from .options import FEATURES, EvalOptions, parse_list
from .reference import load_reference, reference_features, reference_stats
from .runs import (
           compare_runs,
           evaluate_model,
           evaluate_run,
           format_comparison,
           format_summary,
           saved_results,
           write_result,
)
from .scoring import evaluate_images

__all__ = ["COMPARE_COLUMNS", "FEATURES", "GENERATIVE", "LOWER_IS_BETTER", "METRICS", "METRIC_HELP", "TABLE",
           "EvalOptions", "Metric", "balanced_labels", "compare_runs", "evaluate_during_training", "evaluate_folder",
           "evaluate_images", "evaluate_model", "evaluate_run", "format_comparison", "format_summary",
           "generate_uint8", "load_reference", "parse_list", "reference_features", "reference_stats",
           "sample_options_protocol", "saved_results", "takes", "training_eval_options", "training_result_keys",
           "write_result"]
