"""``imagegen serve``: a local web app over the Python API (sample, complete, restore, interpolate, compare).

``app`` holds the routes, ``jobs`` the per-model queue and worker threads, ``tasks`` what each job calls,
``runs`` the loaded runs, ``images`` the upload checks; ``static/`` is the one page.
"""

from .app import Limits, create_app
from .runs import load_runs

__all__ = ["Limits", "create_app", "load_runs"]
