"""Scoring images that did not come from a run: a folder (class sub-folders give labels) or a NumPy array."""

from __future__ import annotations

from pathlib import Path

import torch

from ..data import ARRAY_EXTENSIONS, load_folder, load_image_array
from ..errors import ImagegenError
from ..provenance import git_commit
from .metrics_table import LABEL_METRICS, LIKELIHOOD_METRICS
from .options import EvalOptions, check_counts, eval_options, parse_metrics
from .reference import load_reference
from .runs import write_result
from .scoring import evaluate_images


def folder_labels(class_names: tuple[str, ...], dataset_classes: tuple[str, ...]) -> list[int] | None:
    """Map a folder's class sub-folder names to the dataset's class indices ('3' or 'Trouser' style)."""
    mapping = []
    lower = [c.lower() for c in dataset_classes]
    for name in class_names:
        if name.isdigit() and int(name) < max(1, len(dataset_classes)):
            mapping.append(int(name))
        elif name.lower() in lower:
            mapping.append(lower.index(name.lower()))
        else:
            return None
    return mapping


def evaluate_folder(folder: str | Path, dataset: str, opts: EvalOptions | None = None,
                    out: str | Path | None = None, **options) -> dict:
    """Evaluate any folder of generated images (class sub-folders give labels for cacc/cas), or a NumPy
    ``.npz``/``.npy`` file of uint8 images (``imagegen.data.load_image_array``; labels, if stored, are
    the dataset's class indices). ``options``: EvalOptions fields, as for ``evaluate_run``."""
    git_commit()  # fixed now, before the long part (see git_commit)

    opts = eval_options(opts, options)
    check_counts(opts, 0)  # 0: every image
    metrics = parse_metrics(opts).metrics
    if any(m in LIKELIHOOD_METRICS for m in metrics):
        raise ImagegenError("nll needs a model, not a folder of images; use 'imagegen eval RUN --metrics nll'")
    folder = Path(folder).expanduser()
    is_array = folder.suffix.lower() in ARRAY_EXTENSIONS
    if is_array:
        images, labels = load_image_array(folder)
    else:
        ds = load_folder(folder, "__no_split__", None, None)
        images, labels = ds.images, ds.labels
    if opts.n and opts.n < images.shape[0]:
        images = images[: opts.n]
        labels = None if labels is None else labels[: opts.n]
    if labels is not None:
        _, _, ref_info, _ = load_reference(dataset, opts.ref, 1, opts.data_root, None, None)
        if is_array and not ref_info.num_classes:  # an unlabelled reference: nothing to compare labels with
            labels = None
        elif is_array:  # stored labels are the dataset's class indices
            if not 0 <= int(labels.min()) <= int(labels.max()) < ref_info.num_classes:
                raise ImagegenError(f"the labels in {folder} run from {int(labels.min())} to {int(labels.max())} "
                                    f"but {dataset} has {ref_info.num_classes} classes")
        else:
            mapping = folder_labels(ds.info.class_names, ref_info.class_names)
            if mapping is None:
                if any(m in metrics for m in LABEL_METRICS):
                    raise ImagegenError(f"the sub-folders of {folder} ({', '.join(ds.info.class_names[:5])}...) "
                                        f"are not {dataset} classes; name them 0..9 or after the classes")
                labels = None
            else:
                labels = torch.tensor(mapping)[labels]
    source, how = ("array", "stored with the images") if is_array else ("folder", "from class sub-folders")
    proto = {"generated_from": f"{source} {folder.resolve()}", "folder_images": int(images.shape[0]),
             "labels": how if labels is not None else None}
    result = evaluate_images(images, labels, dataset, opts, proto)
    if out is not None:
        write_result(result, out)
    return result
