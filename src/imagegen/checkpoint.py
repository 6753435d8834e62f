"""Checkpoints carry no code: tensors in safetensors, everything else in its JSON metadata.

One file per checkpoint, ``<run>/checkpoints/ckpt-<step>.safetensors``, holding

* tensors ``model/<key>``, ``ema/<key>``, ``optim/<name>/<param index>/<key>``, ``rng/<device>``;
* metadata ``imagegen`` = JSON with the format version, family, resolved config, data info, step,
  images seen, elapsed seconds, the batch sampler's position and the optimisers' param groups.

Writes are atomic (temp file, fsync, rename, fsync of the folder), so a crash never leaves a torn
file. Loading uses ``safetensors`` only: nothing is ever unpickled.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from tqdm.auto import tqdm

from .cache import cache_dir
from .errors import ImagegenError
from .interrupt import StopRequest
from .zoo import is_zoo
from .zoo import resolve as zoo_resolve

FORMAT_VERSION = 1
_NAME = re.compile(r"ckpt-(\d+)\.safetensors$")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write(f, data: bytes) -> None:
    """The one place file bytes are written (tests inject a full disk here)."""
    f.write(data)


def atomic_write_bytes(data: bytes, path: str | Path) -> None:
    """Write ``data`` to ``path`` so that ``path`` holds either its old bytes or all the new ones: a temp
    file in the same folder, fsync, rename, fsync of the folder. A write that fails (a full disk, a quota, a
    read-only mount) removes the temp file, leaves ``path`` as it was and is a one-line ImagegenError."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            _write(f, data)
            f.flush()
            os.fsync(f.fileno())  # a full disk may only show here (delayed allocation)
        os.replace(tmp, path)
    except OSError as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ImagegenError(f"cannot write {path}: disk full ({e.strerror}; {len(data) / 1e6:.1f} MB to "
                                f"write), nothing there was changed: free some space and run the same command "
                                f"again") from None
        raise ImagegenError(f"cannot write {path}: {e.strerror or e}; nothing there was changed") from None
    _fsync_dir(path.parent)


def remove_stale_temp_files(folder: str | Path) -> None:
    """Remove the temp files of writes a killed process never finished (``.NAME.tmp-PID``, PID not running)."""
    for p in Path(folder).glob(".*.tmp-*"):
        try:
            pid = int(p.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue  # that process still runs (maybe writing it now)
        except ProcessLookupError:
            pass
        except OSError:
            continue  # another user's process: not ours to judge
        p.unlink(missing_ok=True)


def atomic_save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict | None = None) -> None:
    # safetensors refuses shared or non-contiguous storage: give it private contiguous copies
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    atomic_write_bytes(st_save(flat, metadata=metadata), path)


def _not_readable(path: Path, e: Exception) -> ImagegenError:
    return ImagegenError(f"{path} is not a readable imagegen checkpoint ({e}); it may be torn or from "
                         f"another program: point at another checkpoint or retrain")


def _meta_of(path: Path, header: dict) -> dict:
    """The imagegen metadata of a parsed safetensors header, checked for presence and format version."""
    try:
        meta = json.loads(header.get("__metadata__", {}).get("imagegen", "null") or "null")
    except (AttributeError, json.JSONDecodeError) as e:
        raise _not_readable(path, e) from None
    if not isinstance(meta, dict) or meta.get("format") is None:
        raise ImagegenError(f"{path} is a safetensors file but not an imagegen checkpoint (no 'imagegen' "
                            f"metadata); only checkpoints written by 'imagegen train' can be loaded")
    if meta["format"] > FORMAT_VERSION:
        raise ImagegenError(f"{path} uses checkpoint format {meta['format']}, newer than this imagegen "
                            f"understands ({FORMAT_VERSION}); upgrade imagegen")
    return meta


def _header(data: bytes) -> dict:
    header_len = int.from_bytes(data[:8], "little")
    if len(data) < 8 or len(data) < 8 + header_len:
        raise ValueError("the file is shorter than its header says")
    return json.loads(data[8:8 + header_len])


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    try:
        data = path.read_bytes()
        tensors = st_load(data)
        header = _header(data)
    except (OSError, SafetensorError, ValueError, json.JSONDecodeError) as e:
        raise _not_readable(path, e) from None
    return tensors, _meta_of(path, header)


def read_meta(path: str | Path) -> dict:
    """The metadata (step, config, best, ...) of a checkpoint file, or of the newest one of a run directory,
    without reading its tensors."""
    path = resolve(path)
    try:
        with path.open("rb") as f:
            head = f.read(8)
            header_len = int.from_bytes(head, "little")
            if len(head) < 8 or header_len > 100_000_000:
                raise ValueError("no safetensors header")
            header = _header(head + f.read(header_len))
    except (OSError, ValueError, json.JSONDecodeError) as e:
        raise _not_readable(path, e) from None
    return _meta_of(path, header)


# ---------------------------------------------------------------------------------------------- state dicts


def _optim_to_flat(name: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim/{name}/{idx}/{k}"] = v
            else:
                scalars.setdefault(str(idx), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optim_from_flat(name: str, tensors: dict, meta: dict) -> dict:
    state: dict[int, dict] = {}
    prefix = f"optim/{name}/"
    for key, v in tensors.items():
        if key.startswith(prefix):
            idx, k = key[len(prefix):].split("/", 1)
            state.setdefault(int(idx), {})[k] = v
    for idx, d in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(d)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def rng_state() -> dict[str, torch.Tensor]:
    out = {"rng/cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng/cuda{i}"] = s
    return out


def set_rng_state(tensors: dict[str, torch.Tensor]) -> None:
    if "rng/cpu" in tensors:
        torch.set_rng_state(tensors["rng/cpu"])
    if torch.cuda.is_available():
        states = [tensors[f"rng/cuda{i}"] for i in range(torch.cuda.device_count()) if f"rng/cuda{i}" in tensors]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


# ---------------------------------------------------------------------------------------------- save/load


def save(path: str | Path, *, meta: dict, model: torch.nn.Module, ema: torch.nn.Module | None = None,
         optimizers: dict[str, torch.optim.Optimizer] | None = None, include_rng: bool = True) -> Path:
    path = Path(path)
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema/{k}": v for k, v in ema.state_dict().items()})
    optim_meta = {}
    for name, opt in (optimizers or {}).items():
        t, m = _optim_to_flat(name, opt)
        tensors.update(t)
        optim_meta[name] = m
    if include_rng:
        tensors.update(rng_state())
    meta = dict(meta, format=FORMAT_VERSION, optim=optim_meta)
    try:
        atomic_save_tensors(tensors, path, metadata={"imagegen": json.dumps(meta)})
    except ImagegenError as e:  # a full disk: say which checkpoint a resume will start from
        run_dir = run_dir_of(path)
        prev = latest(run_dir) if run_dir is not None else None
        keep = f"; the last good checkpoint, {prev.name}, is intact" if prev is not None and prev != path else ""
        raise ImagegenError(f"{e}{keep}") from None
    return path


class Checkpoint:
    """A loaded checkpoint: ``meta`` (JSON) and ``tensors`` (CPU), with helpers to restore modules."""

    def __init__(self, path: Path, tensors: dict[str, torch.Tensor], meta: dict):
        self.path, self.tensors, self.meta = path, tensors, meta

    @property
    def family(self) -> str:
        return self.meta["family"]

    def section(self, prefix: str) -> dict[str, torch.Tensor]:
        p = prefix + "/"
        return {k[len(p):]: v for k, v in self.tensors.items() if k.startswith(p)}

    def has_ema(self) -> bool:
        return any(k.startswith("ema/") for k in self.tensors)

    def load_module(self, module: torch.nn.Module, prefix: str = "model") -> None:
        sd = self.section(prefix)
        own = module.state_dict()
        # state a module added later (its OPTIONAL_STATE, e.g. the VAE's fitted prior) may be absent from older files
        optional = set(getattr(module, "OPTIONAL_STATE", ()))
        missing = [k for k in own if k not in sd and k not in optional]
        extra = [k for k in sd if k not in own]
        wrong = [k for k in own if k in sd and tuple(own[k].shape) != tuple(sd[k].shape)]
        if missing or extra or wrong:
            detail = (f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}" if extra else
                      f"{wrong[0]} is {tuple(sd[wrong[0]].shape)} in the file but "
                      f"{tuple(own[wrong[0]].shape)} in the model")
            raise ImagegenError(f"{self.path} does not fit this model ({detail}); its config differs from "
                                f"the one used now: load it with its own config.json or retrain")
        module.load_state_dict(sd, strict=all(k in sd for k in own))

    def load_optimizers(self, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        for name, opt in optimizers.items():
            if name not in self.meta.get("optim", {}):
                raise ImagegenError(f"{self.path} has no state for optimiser '{name}'; resume with the "
                                    f"same family and config, or start a fresh run")
            opt.load_state_dict(_optim_from_flat(name, self.tensors, self.meta["optim"][name]))


def resolve(path: str | Path) -> Path:
    """A checkpoint file itself, or the newest checkpoint of a run directory (``zoo:NAME``: a zoo model's)."""
    path = zoo_resolve(path) if is_zoo(path) else Path(path)
    if path.is_dir():
        found = latest(path)
        if found is None:
            raise ImagegenError(f"no checkpoint in {path} (looked for checkpoints/ckpt-*.safetensors); "
                                f"train first with 'imagegen train ... --out {path}'")
        return found
    if not path.exists():
        raise ImagegenError(f"checkpoint {path} does not exist; pass a run directory or a .safetensors file")
    return path


def load(path: str | Path, family: str | None = None) -> Checkpoint:
    """Load a checkpoint file, or the newest one of a run directory. ``family`` guards against mixing."""
    path = resolve(path)
    tensors, meta = _read(path)
    if family is not None and meta.get("family") != family:
        raise ImagegenError(f"{path} is a '{meta.get('family')}' checkpoint, not '{family}'; use the matching "
                            f"family or another --out")
    return Checkpoint(path, tensors, meta)


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    d = Path(run_dir) / "checkpoints"
    if not d.is_dir():
        return []
    found = []
    for p in d.iterdir():
        m = _NAME.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def run_dir_of(checkpoint_file: Path) -> Path | None:
    """The run directory of ``<run>/checkpoints/ckpt-N.safetensors`` (None for a checkpoint kept elsewhere)."""
    return checkpoint_file.parent.parent if checkpoint_file.parent.name == "checkpoints" else None


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"ckpt-{step:08d}.safetensors"


def prune(run_dir: str | Path, keep_last: int) -> None:
    found = list_checkpoints(run_dir)
    for _, p in found[: max(0, len(found) - max(1, keep_last))]:
        p.unlink(missing_ok=True)
    remove_stale_temp_files(Path(run_dir) / "checkpoints")  # left by a killed run's unfinished write


# ---------------------------------------------------------------------------------------------- resumable rows


class PartialRows:
    """The rows a long computation has made so far (reference features, generated images), kept on disk so
    that a run that stops (Ctrl-C, a killed job, a lost session) continues where it stopped: Inception runs at
    ~15 img/s on a 2-core CPU in ONNX Runtime (~5 in torch), so 50,000 reference images take ~1 hour (~2.7)
    and an FID-10k of a diffusion model longer still, with its sampling. ``path`` is a folder of shards,
    ``rows-<first row>.safetensors``, each written atomically with only the rows new since the last one
    (every ``every_s`` seconds, on Ctrl-C and at the end), so keeping 50k x 2048 features costs one pass of
    writes, not one per minute. Shards are used only when their ``tag`` (everything the rows depend on)
    equals this one's."""

    def __init__(self, path: str | Path, tag: str, what: str = "rows", every_s: float | None = None):
        if every_s is None:  # IMAGEGEN_PARTIAL_EVERY_S: how often rows are kept (the fault tests use 0)
            every_s = float(os.environ.get("IMAGEGEN_PARTIAL_EVERY_S") or 60.0)
        self.path, self.tag, self.what, self.every_s = Path(path), tag, what, every_s
        self.resumed_rows = 0  # how many rows the last load found (0: computed from the start)

    def _shards(self) -> list[tuple[int, Path]]:
        if not self.path.is_dir():
            return []
        found = []
        for p in self.path.glob("rows-*.safetensors"):
            try:
                found.append((int(p.stem[len("rows-"):]), p))
            except ValueError:
                continue
        return sorted(found)

    def load(self, n_total: int, multiple_of: int = 1) -> torch.Tensor | None:
        """The rows kept by an earlier call, or None when there are none usable: shards from row 0 on without
        gaps, all with this tag, at most ``n_total`` rows, a multiple of ``multiple_of`` (whole chunks) unless
        they are all ``n_total``. Anything else (a torn shard, another tag) is ignored and later overwritten."""
        rows: list[torch.Tensor] = []
        k = 0
        for start, p in self._shards():
            if start != k:
                break  # a gap: keep what is contiguous from 0
            try:
                with safe_open(str(p), framework="pt") as f:
                    if (f.metadata() or {}).get("tag") != self.tag:
                        break
                    part = f.get_tensor("rows")
            except Exception:
                break
            rows.append(part)
            k += part.shape[0]
        if not rows or k > n_total or (k % multiple_of and k != n_total):
            return None
        self.resumed_rows = k
        print(f"resuming: {k} of {n_total} {self.what} already computed ({self.path})", file=sys.stderr)
        return torch.cat(rows)

    def save(self, rows: torch.Tensor, start: int) -> None:
        """Keep ``rows``, rows ``start:start + len(rows)`` of the whole; a shard from an earlier, different
        computation that starts at a later row is removed so it cannot be mistaken for a continuation."""
        for first, p in self._shards():
            if first > start:
                p.unlink(missing_ok=True)
        atomic_save_tensors({"rows": rows}, self.path / f"rows-{start:09d}.safetensors", metadata={"tag": self.tag})

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


PARTIAL_MAX_AGE_DAYS = 14


def partial_rows(tag: str, what: str = "rows") -> PartialRows:
    """A PartialRows in the cache folder, its file named by the tag's hash. Files there that no run has
    touched for PARTIAL_MAX_AGE_DAYS are deleted on the way: they belong to evaluations stopped and never
    re-run (a stopped CIFAR-10 FID-50k leaves ~150 MB of images)."""
    folder = cache_dir() / "partial"
    cutoff = time.time() - PARTIAL_MAX_AGE_DAYS * 86400
    for old in folder.glob("*"):
        try:
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
        except OSError:
            pass  # another process removed it
    name = hashlib.sha256(tag.encode()).hexdigest()[:32]
    return PartialRows(folder / name, tag, what)


def compute_rows(n_total: int, chunk: int, make: Callable[[int], torch.Tensor], resume: PartialRows | None = None,
                 desc: str = "", progress: bool = True, any_start: bool = False) -> torch.Tensor | None:
    """``make(start)`` -> the rows ``start:start + chunk``, for start = 0, chunk, 2 chunk, ...; concatenated
    (None when n_total is 0). With ``resume``, rows an earlier stopped call kept are reused, and the rows so
    far are saved every ``resume.every_s`` seconds, when the loop stops (Ctrl-C, or an error such as running
    out of GPU memory) and at the end (the caller discards them when it no longer needs them). ``make`` must
    give the same rows for the same start (say, a seed per chunk); ``any_start``: rows do not depend on the
    chunking (features of given images), so rows kept with another chunk size are resumed from too."""
    kept = resume.load(n_total, 1 if any_start else chunk) if resume is not None else None
    out = [] if kept is None else [kept]
    done = saved = 0 if kept is None else kept.shape[0]  # rows made / rows on disk
    bar = tqdm(total=n_total, initial=done, desc=desc, unit="img", disable=not progress, leave=False)
    last_save = time.monotonic()
    unsaved: list[torch.Tensor] = []

    def keep() -> None:
        nonlocal saved, last_save, unsaved
        if resume is not None and unsaved:
            rows = torch.cat(unsaved)
            resume.save(rows, saved)
            saved, unsaved, last_save = saved + rows.shape[0], [], time.monotonic()

    # with somewhere to keep rows, Ctrl-C or SIGTERM (a scheduler's, or kill's) stops after the batch in progress
    stop = StopRequest("stopping after this batch and keeping the rows so far") if resume is not None else None
    try:
        with stop or nullcontext():
            for start in range(done, n_total, chunk):
                rows = make(start)
                out.append(rows)
                unsaved.append(rows)
                bar.update(rows.shape[0])
                if resume is not None and time.monotonic() - last_save >= resume.every_s:
                    keep()
                if stop is not None and stop.signal is not None:
                    raise KeyboardInterrupt
        keep()  # at the end too: the caller discards the rows once it has used them (say, after FID)
    except BaseException as e:
        bar.close()
        if resume is not None:
            try:
                keep()
            except Exception:
                pass  # the error that stopped the loop is the one to report
            if saved:
                why = (f"stopped by {stop.signal or 'Ctrl-C'}" if isinstance(e, KeyboardInterrupt)
                       else "stopped by an error")
                print(f"{why}: {saved} of {n_total} {resume.what} kept in {resume.path}; run the same command "
                      f"again to continue", file=sys.stderr)
        raise
    bar.close()
    return torch.cat(out) if out else None
