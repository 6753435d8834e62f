"""Config is data: dataclasses with defaults, YAML presets, typed ``key=value`` overrides.

Resolution order (later wins): dataclass defaults -> the family's ``TRAIN_DEFAULTS`` -> a preset
(``src/imagegen/presets/NAME.yaml``) -> ``--set`` overrides. Unknown keys are errors that list the
valid ones; values are checked against the field's annotation. Nothing is ever ``exec``-ed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from importlib import resources
from typing import Any, ClassVar

import yaml

from .errors import ImagegenError

# the largest side the data loaders resize images to (data.image_size); each check of memory comes after this
MAX_IMAGE_SIZE = 4096


@dataclass
class DataConfig:
    name: str = "digits"  # digits | mnist | fashion-mnist | binarized-mnist | cifar10 | folder:PATH
    root: str | None = None  # dataset root in torchvision's layout; default $IMAGEGEN_DATA or the cache
    image_size: int | None = None  # None: the dataset's own size (digits: 16)
    channels: int | None = None  # 1 or 3; None: the dataset's own (a folder: grey if every image is)
    split: str = "train"
    limit: int | None = None  # keep only the first N images (quick experiments)
    hflip: bool = False  # random horizontal flips while training (colour datasets)
    download: bool = True  # let torchvision download a missing dataset (needs a network)
    latent: str | None = None  # a trained autoencoder run or checkpoint: train on its codes (imagegen.latent)
    # per-image training augmentation (imagegen.augment): hflip, rotate:DEG, scale:LO-HI, translate:PX,
    # colour-jitter:B,C,S,H; e.g. --set data.augment=rotate:10,translate:2
    augment: list[str] = field(default_factory=list)

    RANGES: ClassVar[dict[str, str]] = {"image_size": f"[1,{MAX_IMAGE_SIZE}]", "limit": "[1,inf)",
                                        "channels": "[1,3]"}

    def __post_init__(self):
        from .augment import canonical

        self.augment = canonical(self.augment)  # validated now (one-line error), recorded as parsed


@dataclass
class TrainConfig:
    batch_size: int = 64  # per process and per micro-step
    lr: float = 2e-4
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    grad_accum_steps: int = 1
    mixed_precision: str = "no"  # no | bf16 | fp16
    ema_decay: float = 0.999  # 0 disables the EMA copy
    steps: int | None = None  # budget in optimiser steps
    kimg: float | None = None  # budget in thousands of training images (all processes)
    budget_minutes: float | None = None  # budget in wall-clock minutes (resumes count what was spent)
    seed: int = 0
    deterministic: bool = False
    log_every: int = 50
    sample_every: int = 500  # steps between sample grids; 0 disables
    ckpt_every: int = 500  # steps between checkpoints (one is always written at the end)
    keep_last: int = 3  # checkpoints kept on disk
    sample_n: int = 64  # images in the periodic grids
    device: str = "auto"  # auto | cpu | cuda
    eval_every: int = 0  # steps between evaluations during training (evals.jsonl, TensorBoard eval/); 0: off
    eval_metrics: str = "cfd"  # what 'imagegen eval --metrics' takes (nll: test NLL of eval_n images)
    eval_n: int = 1000  # generated images per evaluation, scored against as many test images
    keep_best: str = ""  # an eval result (fid, fid_clf, class_accuracy, ...): keep checkpoints/best.safetensors

    # counts that multiply the work of one step (grad_accum_steps) or of a preview (sample_n) have an upper
    # bound too: a larger value is a typo, and would run for ever before anything said so
    RANGES: ClassVar[dict[str, str]] = {
        "batch_size": "[1,inf)", "lr": "(0,inf)", "adam_betas": "[0,1)", "weight_decay": "[0,inf)",
        "grad_clip": "[0,inf)", "grad_accum_steps": "[1,4096]", "ema_decay": "[0,1)", "steps": "[0,inf)",
        "kimg": "[0,inf)", "budget_minutes": "(0,inf)", "log_every": "[1,inf)", "sample_every": "[0,inf)",
        "ckpt_every": "[1,inf)", "keep_last": "[1,inf)", "sample_n": "[1,4096]", "eval_every": "[0,inf)",
        "eval_n": "[2,inf)", "seed": "[0,4294967295]"}  # numpy's seeds are 32-bit
    LENGTHS: ClassVar[dict[str, tuple[int, int | None]]] = {"adam_betas": (2, 2)}  # (fewest, most) values


@dataclass
class RunConfig:
    family: str
    model: Any
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return {"family": self.family, "model": asdict(self.model), "data": asdict(self.data),
                "train": asdict(self.train)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def class_conditional(self, num_classes: int) -> bool:
        """Whether the model takes labels: ``model.class_cond`` set and data with ``num_classes`` > 0."""
        return bool(getattr(self.model, "class_cond", False)) and num_classes > 0


# ---------------------------------------------------------------------------------------------- typing


class _SetLoader(yaml.SafeLoader):
    """YAML for ``--set`` values with YAML 1.2's booleans (true/false only). YAML 1.1, PyYAML's default, also
    reads yes/no/on/off as booleans, so ``--set train.mixed_precision=no`` (the documented value) reached the
    config as False and was refused; boolean fields still take yes/no/on/off (see ``coerce``)."""


_SetLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_SetLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))


def _load_value(text: str) -> Any:
    return yaml.load(text, Loader=_SetLoader)  # noqa: S506 - a SafeLoader subclass


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` (already parsed from YAML) against annotation ``tp``; convert where lossless."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except ImagegenError as e:
                errors.append(str(e))
        raise ImagegenError(errors[0] if errors else f"{where}: cannot be {value!r}")
    if origin in (list, tuple):
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [_load_value(v) for v in value.split(",") if v.strip()]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]  # --set model.attn_resolutions=16: YAML reads a one-item list as a number
        if not isinstance(value, (list, tuple)):
            raise ImagegenError(f"{where}: expected a list like 1,2,3, got {value!r}")
        return [coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("yes", "no", "on", "off", "y", "n"):
            return value.lower() in ("yes", "on", "y")
        raise ImagegenError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ImagegenError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads '3e-4' (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ImagegenError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ImagegenError(f"{where}: expected a string, got {value!r}")
    raise ImagegenError(f"{where}: unsupported type {_type_name(tp)}")


def check_range(value: Any, spec: str, where: str) -> None:
    """``spec`` is an interval such as ``[1,inf)``, ``(0,inf)`` or ``[0,1)``; a list is checked item by item
    and None (an unset optional) passes. A config class lists its fields' intervals in ``RANGES``."""
    if value is None:
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_range(v, spec, f"{where}[{i}]")
        return
    lo_s, hi_s = spec[1:-1].split(",")
    lo, hi = float(lo_s), float(hi_s)
    ok_lo = value > lo if spec[0] == "(" else value >= lo
    ok_hi = value < hi if spec[-1] == ")" else value <= hi
    if ok_lo and ok_hi:
        return
    if math.isinf(hi):
        need = f"> {lo_s}" if spec[0] == "(" else f">= {lo_s}"
        raise ImagegenError(f"{where} must be {need}, got {value}")
    raise ImagegenError(f"{where} must lie in {spec[0]}{lo_s}, {hi_s}{spec[-1]}, got {value}")


def check_length(value: list, bounds: tuple[int, int | None], where: str) -> None:
    """A list field's number of values: ``bounds`` = (fewest, most or None). A config class lists them in
    ``LENGTHS`` (say ``train.adam_betas``: exactly 2)."""
    lo, hi = bounds
    if len(value) >= lo and (hi is None or len(value) <= hi):
        return
    want = f"exactly {lo}" if lo == hi else f"at least {lo}" if hi is None else f"{lo} to {hi}"
    raise ImagegenError(f"{where} takes {want} comma-separated values (e.g. 1,2), got {len(value)}")


def from_dict(cls, data: dict, where: str = "") -> Any:
    """Build dataclass ``cls`` from a plain dict, rejecting unknown keys and ill-typed values."""
    if not isinstance(data, dict):
        raise ImagegenError(f"{where or cls.__name__}: expected a mapping, got {data!r}")
    hints = _hints(cls)
    names = [f.name for f in fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ImagegenError(
            f"unknown config key '{_join(where, unknown[0])}'; valid keys here: {', '.join(names)}")
    kwargs = {}
    for k, v in data.items():
        tp = hints[k]
        if is_dataclass(tp):
            kwargs[k] = from_dict(tp, v, _join(where, k))
        else:
            kwargs[k] = coerce(v, tp, _join(where, k))
            if k in getattr(cls, "RANGES", {}):
                check_range(kwargs[k], cls.RANGES[k], _join(where, k))
            if k in getattr(cls, "LENGTHS", {}) and isinstance(kwargs[k], list):
                check_length(kwargs[k], cls.LENGTHS[k], _join(where, k))
    return cls(**kwargs)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


# ---------------------------------------------------------------------------------------------- presets


def preset_names() -> list[str]:
    files = resources.files("imagegen") / "presets"
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str) -> dict:
    if name not in preset_names():
        raise ImagegenError(f"unknown preset '{name}'; available presets: {', '.join(preset_names())}")
    text = (resources.files("imagegen") / "presets" / f"{name}.yaml").read_text()
    data = yaml.safe_load(text) or {}
    if "family" not in data:
        raise ImagegenError(f"preset '{name}' does not say which family it is for (add 'family: ...')")
    return data


def _deep_update(base: dict, new: dict) -> dict:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_update(base[k], v)
        else:
            base[k] = v
    return base


def parse_overrides(items: list[str]) -> dict:
    """``["model.latent_dim=16", "train.lr=1e-3"]`` -> nested dict with YAML-parsed values."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ImagegenError(f"--set expects key=value (e.g. model.latent_dim=16), got '{item}'")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ImagegenError(f"--set expects key=value, got '{item}'")
        try:
            value = _load_value(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ImagegenError(f"--set {key}: '{p}' is a value, not a section")
        node[parts[-1]] = value
    return out


def resolve(family: str | None = None, preset: str | None = None, overrides: dict | None = None,
            ) -> RunConfig:
    """The one place a run's config is put together (CLI, Python API and tests all call it)."""
    from . import registry

    layers: dict = {}
    if preset:
        layers = load_preset(preset)
    if family and preset and layers.get("family") != family:
        raise ImagegenError(
            f"preset '{preset}' is for the {layers.get('family')} family, not '{family}'; drop one of them")
    family = family or layers.get("family")
    if family is None:
        raise ImagegenError("say which family to train (e.g. 'imagegen train vae') or pick a --preset")
    fam = registry.get_family(family)
    merged: dict = {"model": {}, "data": {}, "train": dict(getattr(fam, "TRAIN_DEFAULTS", {}))}
    _deep_update(merged, {k: v for k, v in layers.items() if k != "family"})
    _deep_update(merged, overrides or {})
    top = {"model", "data", "train"}
    unknown = [k for k in merged if k not in top]
    if unknown:
        raise ImagegenError(f"unknown config key '{unknown[0]}'; valid sections: model, data, train "
                            f"(e.g. --set model.{unknown[0]}=...)")
    return RunConfig(
        family=family,
        model=from_dict(fam.Config, merged["model"], "model"),
        data=from_dict(DataConfig, merged["data"], "data"),
        train=from_dict(TrainConfig, merged["train"], "train"),
    )


def from_saved(d: dict) -> RunConfig:
    """Rebuild a RunConfig from a run directory's ``config.json`` (or a checkpoint's metadata)."""
    from . import registry

    fam = registry.get_family(d["family"])
    return RunConfig(family=d["family"], model=from_dict(fam.Config, d.get("model", {}), "model"),
                     data=from_dict(DataConfig, d.get("data", {}), "data"),
                     train=from_dict(TrainConfig, d.get("train", {}), "train"))


def replace(cfg, **kw):
    return dataclasses.replace(cfg, **kw)


def parse_budget(text: str) -> float:
    """``'90s' | '5m' | '1.5h' | '30'`` (minutes) -> minutes."""
    t = text.strip().lower()
    scale = {"s": 1 / 60, "m": 1.0, "h": 60.0}
    try:
        if t and t[-1] in scale:
            return float(t[:-1]) * scale[t[-1]]
        return float(t)
    except ValueError:
        raise ImagegenError(f"--budget: cannot read '{text}'; use e.g. 90s, 5m or 1.5h") from None
