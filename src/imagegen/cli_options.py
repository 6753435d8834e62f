"""The sampling options the command line offers, read from the family contract: every keyword option of any
registered family's ``sample`` / ``complete`` / ``denoise`` / ``interpolate`` (its signature, and ``SAMPLE_CHOICES``
for the values of a choice). ``imagegen sample`` and its siblings (imagegen.cli) and ``eval`` / ``compare``
(imagegen.cli_eval) take their flags from here, so a family's new option reaches every command without an edit."""

from __future__ import annotations

import inspect
import typing

import typer

from . import registry

CONTRACT_ARGS = frozenset({"model", "n", "x", "mask", "a", "b", "frames", "strength", "labels", "generator"})
# options the CLI offered before they were generated, kept so scripts keep working (no family takes them now)
KEPT_FLAGS = {"interpolate": {"sampler": str}}


def family_options(fn_name: str, exclude: frozenset = frozenset()) -> dict[str, dict]:
    """name -> {type, default per family, choices per family} of the keyword options that the registered
    families' ``fn_name`` functions take (the contract's own arguments left out)."""
    found: dict[str, dict] = {}
    for family in registry.FAMILIES:
        fam = registry.get_family(family)
        fn = getattr(fam, fn_name, None)
        if fn is None or (fn_name == "sample" and not registry.generative(family)):
            continue
        hints = typing.get_type_hints(fn)
        choices = getattr(fam, "SAMPLE_CHOICES", {}) if fn_name in ("sample", "complete") else {}
        for name, param in inspect.signature(fn).parameters.items():
            if name in CONTRACT_ARGS or name in exclude or param.default is inspect.Parameter.empty:
                continue
            kind = type(param.default) if param.default is not None else _plain_type(hints.get(name, str))
            entry = found.setdefault(name, {"type": kind, "defaults": {}, "choices": {}})
            if entry["type"] is not kind:  # int in one family, float in another: take the wider
                entry["type"] = float if {entry["type"], kind} <= {int, float} else str
            entry["defaults"][family] = param.default
            if name in choices:
                entry["choices"][family] = tuple(choices[name])
    for name, kind in KEPT_FLAGS.get(fn_name, {}).items():
        found.setdefault(name, {"type": kind, "defaults": {}, "choices": {}})
    return found


def _plain_type(hint) -> type:
    """``int | None`` -> int; anything but bool/int/float -> str."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return args[0] if args[0] in (bool, int, float) else str


def option_help(name: str, entry: dict) -> str:
    if not entry["defaults"]:
        return "not taken by any family (kept for old scripts)"
    parts = []
    for family, default in entry["defaults"].items():
        values = entry["choices"].get(family)
        parts.append(f"{family}: {' | '.join(map(str, values))}" if values else f"{family}, default {default}")
    return "; ".join(parts)


def sampling_options() -> tuple[tuple[str, type, typer.models.OptionInfo], ...]:
    """(name, type, typer.Option) of every option of the families' ``sample``, for commands that sample a run on
    the way (``eval``, ``compare``): all default to None (not given: the family's own default)."""
    return tuple((name, entry["type"] | None, typer.Option(None, help=option_help(name, entry)))
                 for name, entry in family_options("sample").items())
