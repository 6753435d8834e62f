"""Fault injection: what survives a SIGKILL, a full disk and hostile --set values (docs/reliability.md).

Every test here uses the families' TEST_CONFIG models on the digits set at 8x8, so the whole file runs in
well under a minute on a 2-core CPU; the kill points are drawn at random (the seed is printed on failure)."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from helpers import run_cli, subprocess_env, tiny_feature_net
from imagegen import api, checkpoint, registry
from imagegen import evaluation as evaluate
from imagegen.errors import ImagegenError
from imagegen.evaluation import reference  # feature_net: where the scorers look it up

FAMILIES = list(registry.FAMILIES)
STEPS = 8
COMMON = ["data.limit=48", "train.batch_size=8", "train.log_every=1", "train.sample_every=0", "train.ckpt_every=2",
          "train.keep_last=2"]


def _sets(family: str) -> list[str]:
    def fmt(v):
        return ",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v).lower() \
            if isinstance(v, bool) else str(v)

    return [f"model.{k}={fmt(v)}" for k, v in registry.get_family(family).TEST_CONFIG.items()] + COMMON


def _train_argv(family: str, out: Path, steps: int = STEPS) -> list[str]:
    argv = ["train", family, "--data", "digits", "--image-size", "8", "--steps", str(steps), "--out", str(out)]
    for s in _sets(family):
        argv += ["--set", s]
    return argv


def _train_here(family: str, out: Path, steps: int = STEPS) -> Path:
    return api.train(family, data="digits", steps=steps, out=out, progress=False,
                     overrides=_sets(family) + ["data.image_size=8"])


def _assert_same_state(a: Path, b: Path) -> None:
    ca, cb = checkpoint.load(a), checkpoint.load(b)
    assert ca.meta["step"] == cb.meta["step"] == STEPS
    assert ca.meta["optim"] == cb.meta["optim"]  # param groups and scalar state (step counts)
    assert ca.meta["sampler"] == cb.meta["sampler"] and ca.meta["ema_updates"] == cb.meta["ema_updates"]
    assert sorted(ca.tensors) == sorted(cb.tensors)
    for key in ca.tensors:  # model/, ema/, optim/ (Adam moments), rng/
        assert torch.equal(ca.tensors[key], cb.tensors[key]), key


def _logged_steps(run: Path) -> int:
    try:
        return (run / "metrics.jsonl").read_text().count("\n")
    except OSError:
        return 0


# ---------------------------------------------------------------------------------------------- SIGKILL: training


def test_sigkill_during_training_then_resume_equals_an_uninterrupted_run(tmp_path):
    """Each family is trained in a child process that gets SIGKILL (no handler, no last checkpoint) at a random
    moment: after a random number of logged steps plus a random delay, so it lands in a step, in a checkpoint
    write or between them. The same command then resumes from the newest complete checkpoint, and the final
    weights, EMA weights, optimiser state, sampler position and RNG state equal an uninterrupted run's."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    plan = {f: (rng.randint(1, STEPS - 2), rng.uniform(0.0, 0.05)) for f in FAMILIES}
    procs = {}
    for f in FAMILIES:  # all children at once: their start-up (imports) overlaps with the reference runs
        procs[f] = subprocess.Popen([sys.executable, "-m", "imagegen.cli", *_train_argv(f, tmp_path / f"killed-{f}")],
                                    env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def killer():  # in a thread, so the kills land while this process trains the uninterrupted runs
        pending = dict(procs)
        deadline = time.monotonic() + 300
        while pending and time.monotonic() < deadline:
            for f, p in list(pending.items()):
                after, delay = plan[f]
                if p.poll() is not None:
                    pending.pop(f)
                elif _logged_steps(tmp_path / f"killed-{f}") >= after:
                    time.sleep(delay)
                    p.send_signal(signal.SIGKILL)
                    p.wait()
                    pending.pop(f)
            time.sleep(0.005)

    watcher = threading.Thread(target=killer, daemon=True)
    watcher.start()
    try:
        refs = {f: _train_here(f, tmp_path / f"ref-{f}") for f in FAMILIES}
        watcher.join()
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    def kill_early(f):  # a fresh child killed right after its first logged step (no checkpoint yet)
        import shutil

        shutil.rmtree(tmp_path / f"killed-{f}", ignore_errors=True)
        p = subprocess.Popen([sys.executable, "-m", "imagegen.cli", *_train_argv(f, tmp_path / f"killed-{f}")],
                             env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while p.poll() is None and _logged_steps(tmp_path / f"killed-{f}") < 1:
            time.sleep(0.002)
        p.send_signal(signal.SIGKILL)
        p.wait()
        return p

    for f, p in procs.items():
        run = tmp_path / f"killed-{f}"
        late = p.returncode == -signal.SIGKILL and checkpoint.latest(run) is not None and \
            checkpoint.read_meta(run)["step"] >= STEPS
        if p.returncode == 0 or late:  # its kill point came after its last checkpoint (a starved watcher on a
            p = kill_early(f)          # loaded machine): nothing would be resumed, so kill a new one early
        err = p.stderr.read().decode(errors="replace")
        assert p.returncode == -signal.SIGKILL, f"{f} was not killed (seed {seed}, plan {plan[f]}): {err[-2000:]}"
    for f in FAMILIES:
        run = tmp_path / f"killed-{f}"
        killed_at = checkpoint.read_meta(run)["step"] if checkpoint.latest(run) else 0
        assert killed_at < STEPS, (f, seed)
        _train_here(f, run)  # the same command: resumes from the newest complete checkpoint
        try:
            _assert_same_state(refs[f], run)
        except AssertionError as e:
            raise AssertionError(f"{f} killed at {plan[f]} (seed {seed}), resumed from step {killed_at}: {e}") from e
        assert not list((run / "checkpoints").glob(".*.tmp-*")), "a killed write's temp file was left behind"


# ---------------------------------------------------------------------------------------------- disk full


def test_a_checkpoint_write_that_fails_midway_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    """The disk fills while a checkpoint is being written (half its bytes reach the temp file, then ENOSPC):
    the command ends with one 'error: ... disk full' line naming the file and the intact checkpoint, the
    previous checkpoint is byte for byte what it was and loads, no temp file is left, and once there is space
    the same command resumes from it and finishes as if nothing had happened."""
    run = tmp_path / "r"
    code, _, err = run_cli(_train_argv("vae", run, steps=4), capsys)
    assert code == 0, err
    good = checkpoint.latest(run)
    before = good.read_bytes()
    real_write = checkpoint._write

    def disk_fills(f, data):
        if "ckpt-" not in Path(f.name).name:
            return real_write(f, data)
        f.write(data[: len(data) // 2])
        f.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "_write", disk_fills)
    code, _, err = run_cli(_train_argv("vae", run, steps=STEPS), capsys)
    # the progress bar's last frame may precede the message on its line (it is redrawn with \r)
    lines = [line[line.index("error:"):] for line in err.strip().splitlines() if "error:" in line]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "disk full" in lines[0] and str(checkpoint.checkpoint_path(run, 6)) in lines[0]
    assert f"the last good checkpoint, {good.name}, is intact" in lines[0]
    assert checkpoint.latest(run) == good and good.read_bytes() == before
    assert checkpoint.load(run).meta["step"] == 4
    assert not [p.name for p in (run / "checkpoints").iterdir() if ".tmp-" in p.name]
    # the Python API raises the same one-line ImagegenError
    with pytest.raises(ImagegenError, match="disk full"):
        _train_here("vae", run)
    monkeypatch.setattr(checkpoint, "_write", real_write)  # space again: the same command finishes the run
    code, _, err = run_cli(_train_argv("vae", run, steps=STEPS), capsys)
    assert code == 0, err
    _assert_same_state(_train_here("vae", tmp_path / "u"), run)


def test_a_full_disk_elsewhere_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    """A result file, a cache entry, config.json: every atomic write that fails leaves the old file and no temp
    file; an OSError from a plain write (a log line) is one line from the CLI too."""
    target = tmp_path / "result.json"
    target.write_text("old")

    def full(f, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "_write", full)
    with pytest.raises(ImagegenError, match=r"cannot write .*result.json: disk full"):
        checkpoint.atomic_write_bytes(b"new", target)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["result.json"]
    code, _, err = run_cli(_train_argv("vae", tmp_path / "r", steps=1), capsys)  # config.json fails first
    assert code == 2 and "config.json: disk full" in err and "Traceback" not in err
    monkeypatch.undo()

    def full_log(cfg, out, fresh=False, **kw):  # what a full disk does to a plain write (a log line, an event file)
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(out) / "metrics.jsonl"))

    monkeypatch.setattr("imagegen.trainer.train", full_log)
    code, _, err = run_cli(_train_argv("vae", tmp_path / "r", steps=1), capsys)
    assert code == 2 and "error: disk full writing" in err and "metrics.jsonl" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------- hostile files


class _Payload:
    """Unpickling this creates the marker file: proof that loading ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_hostile_checkpoints_are_one_line_errors_and_run_nothing(tmp_path, capsys):
    import pickle

    from safetensors.torch import save_file

    marker = tmp_path / "code-ran"
    (tmp_path / "pickle.safetensors").write_bytes(pickle.dumps({"model": _Payload(marker)}))
    torch.save({"x": _Payload(marker)}, tmp_path / "torch-save.safetensors")
    (tmp_path / "huge-header.safetensors").write_bytes((1 << 62).to_bytes(8, "little") + b"{}")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    for name, needle in (("pickle", "not a readable imagegen checkpoint"),
                         ("torch-save", "not a readable imagegen checkpoint"),
                         ("huge-header", "not a readable imagegen checkpoint"),
                         ("foreign", "not an imagegen checkpoint")):
        for argv in (["info"], ["sample", "--n", "1", "--out", str(tmp_path / "x.png")]):
            cmd = [argv[0], tmp_path / f"{name}.safetensors", *argv[1:]]
            code, _, err = run_cli(cmd, capsys)
            lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
            assert code == 2 and len(lines) == 1 and needle in lines[0] and "Traceback" not in err, (name, err)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------- SIGKILL: evaluation

_EVAL_CHILD = """
import sys
from helpers import tiny_feature_net
from imagegen.evaluation import reference
reference.feature_net = lambda kind, dataset, opts, device: tiny_feature_net(delay_s=0.04)
from imagegen.cli import main
main(sys.argv[1:])
"""


def _kill_when(proc, ready, delay_s: float, timeout_s: float = 60.0) -> bool:
    """SIGKILL ``proc`` ``delay_s`` after ``ready()`` first holds; False when it ended first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if ready():
            time.sleep(delay_s)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    return False


def _partials(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("rows-*.safetensors")]


def test_sigkill_during_eval_and_ref_stats_then_the_same_command_gives_the_uninterrupted_result(
        tmp_path, monkeypatch, capsys):
    """``imagegen eval`` (sampling, reference features, generated features) and ``imagegen ref-stats`` are
    killed at a random moment after their first rows were kept (IMAGEGEN_PARTIAL_EVERY_S=0: after every
    batch); the same command then gives the numbers, and the cached reference statistics, of an uninterrupted
    run in a cache of its own."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    run = _train_here("vae", tmp_path / "run", steps=2)
    monkeypatch.setattr(reference, "feature_net", lambda kind, dataset, opts, device: tiny_feature_net())
    monkeypatch.setenv("IMAGEGEN_PARTIAL_EVERY_S", "0")
    eval_args = ["--metrics", "fid,kid", "--n", "48", "--batch-size", "8", "--kid-subsets", "4", "--device", "cpu"]
    ref_args = ["ref-stats", "--data", "digits", "--split", "test", "--n", "96", "--image-size", "8",
                "--batch-size", "8", "--device", "cpu"]

    # uninterrupted, each in a cache of its own
    monkeypatch.setenv("IMAGEGEN_CACHE", str(tmp_path / "cache-a"))
    code, _, err = run_cli(["eval", run, *eval_args, "--out", tmp_path / "a.json"], capsys)
    assert code == 0, err
    ref_a = evaluate.reference_stats("digits", "test", 96, "inception", image_size=8, batch_size=8,
                                     device="cpu", progress=False)[0]

    monkeypatch.setenv("IMAGEGEN_CACHE", str(tmp_path / "cache-b"))
    script = tmp_path / "child.py"
    script.write_text(_EVAL_CHILD)
    env = subprocess_env()
    killed = {}
    for what, argv in (("eval", ["eval", str(run), *eval_args, "--out", str(tmp_path / "b.json")]),
                       ("ref-stats", ref_args)):
        before = len(_partials(tmp_path / "cache-b"))
        delay = rng.uniform(0.0, 0.25)
        p = subprocess.Popen([sys.executable, str(script), *argv], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        killed[what] = _kill_when(p, lambda b=before: len(_partials(tmp_path / "cache-b")) > b, delay)
        err = p.stderr.read().decode(errors="replace")
        assert killed[what], f"{what} ended before it was killed (seed {seed}): {err[-2000:]}"
    assert not (tmp_path / "b.json").exists()

    code, _, err = run_cli(["eval", run, *eval_args, "--out", tmp_path / "b.json"], capsys)
    assert code == 0, err
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert a["summary"] == b["summary"], seed
    ref_b = evaluate.reference_stats("digits", "test", 96, "inception", image_size=8, batch_size=8,
                                     device="cpu", progress=False)[0]
    from safetensors.torch import load_file

    ta, tb = load_file(ref_a["cache"]), load_file(ref_b["cache"])
    assert sorted(ta) == sorted(tb) == ["features", "mu", "sigma"]
    for k in ta:
        assert torch.equal(ta[k], tb[k]), (k, seed)
    assert not _partials(tmp_path / "cache-b")  # finished: the kept rows are gone


# ---------------------------------------------------------------------------------------------- hostile --set values

def _value_strategies():
    from hypothesis import strategies as st

    ints = st.one_of(st.integers(-3, 12), st.sampled_from([0, 64, 10**6, 2**31, 2**62, -(2**62)]))
    floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                       st.sampled_from([0.0, 1e-8, 0.5, 0.999, 1.0, 2.0, 1e30, -1.0]))
    words = st.sampled_from(["", "auto", "no", "bf16", "fp16", "cpu", "cuda", "eps", "v", "edm", "cosine", "hinge",
                             "wgan-gp", "resnet", "gated", "pixelcnn", "softmax", "logistic_mixture", "bernoulli",
                             "logistic", "color,translation", "digits", "mnist", "folder:/nonexistent", "fid",
                             "bogus", "1,2", "null", "[1, 2]", "{a: 1}"])
    text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)

    def fmt(v):
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, list):
            return ",".join(fmt(x) for x in v)
        return repr(v) if isinstance(v, float) else str(v)

    def for_type(tp):
        import typing

        args = typing.get_args(tp)
        if type(None) in args:
            inner = [a for a in args if a is not type(None)][0]
            return st.one_of(st.just("null"), for_type(inner))
        origin = typing.get_origin(tp)
        if origin is list:
            return st.lists(ints if args and args[0] is int else floats, max_size=4).map(fmt)
        base = {int: ints, float: floats, bool: st.booleans(), str: words}.get(tp, words)
        return st.one_of(base.map(fmt), text)  # the right type, or anything a user could type

    return st, for_type


# train.eval_every starts evaluations (Inception on a CPU: minutes), which their own tests cover; the budget keys
# are capped by steps=1 below; data.root/download are pinned so that no drawn dataset name reaches a network
_SKIP = {("train", "eval_every"), ("data", "root"), ("data", "download")}


def _set_items():
    import typing
    from dataclasses import fields

    from imagegen.config import DataConfig, TrainConfig

    items = []
    for fam in FAMILIES:
        for section, cls in (("model", registry.get_family(fam).Config), ("data", DataConfig),
                             ("train", TrainConfig)):
            hints = typing.get_type_hints(cls)
            items += [(fam, section, f.name, hints[f.name]) for f in fields(cls) if (section, f.name) not in _SKIP]
    return items


def test_any_set_value_trains_one_step_or_is_a_one_line_error(tmp_path_factory):
    """Property: for every key of every config class (each family's model.*, data.*, train.*) and any value a
    user could type after --set, training either runs its step or stops with a one-line ImagegenError, before
    anything else goes wrong: never a raw exception from deep inside torch or the allocator."""
    from hypothesis import HealthCheck, given, settings

    st, for_type = _value_strategies()
    items = _set_items()
    draw_set = st.sampled_from(items).flatmap(
        lambda it: for_type(it[3]).map(lambda text: (it[0], f"{it[1]}.{it[2]}={text}")))

    @settings(max_examples=int(os.environ.get("IMAGEGEN_HYPOTHESIS_EXAMPLES", 30)), deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(draw_set, min_size=1, max_size=2).filter(lambda xs: len({f for f, _ in xs}) == 1))
    def prop(drawn):
        family = drawn[0][0]
        sets = [s for _, s in drawn]
        out = tmp_path_factory.mktemp("set")
        if os.environ.get("IMAGEGEN_HYPOTHESIS_VERBOSE"):
            print(family, sets, flush=True)

        def too_slow(signum, frame):  # a value that makes one step run for minutes is a bug too
            raise TimeoutError("one training step took more than 300 s")

        previous = signal.signal(signal.SIGALRM, too_slow)
        signal.alarm(300)
        try:
            api.train(family, data="digits", steps=1, out=out, progress=False, fresh=True,
                      overrides=_sets(family) + ["data.image_size=8", "data.download=false"] + sets)
        except ImagegenError as e:
            assert "\n" not in str(e).strip(), f"{sets}: a multi-line error: {e}"
        except Exception as e:
            raise AssertionError(f"--set {' --set '.join(sets)} ({family}): {type(e).__name__}: {e}") from e
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
            torch.use_deterministic_algorithms(False)  # train.deterministic=true sets it for the process

    prop()
