import json

import numpy as np
import pytest
import torch

from imagegen import api, checkpoint, registry
from imagegen.errors import ImagegenError

TINY = ["model.latent_dim=4", "model.base_channels=8", "model.channel_mult=1,1", "data.limit=96",
        "train.batch_size=16", "train.log_every=1", "train.sample_every=0", "train.ckpt_every=100"]


def _train(out, steps, extra=(), **kw):
    return api.train("vae", data="digits", steps=steps, out=out, overrides=list(TINY) + list(extra),
                     progress=False, **kw)


def _losses(run):
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    a = _train(tmp_path / "a", 8)
    _train(tmp_path / "b", 3)
    b = _train(tmp_path / "b", 8)  # same --out: continues from step 3
    assert _losses(a) == _losses(b)
    ca, cb = checkpoint.load(a), checkpoint.load(b)
    assert ca.meta["step"] == cb.meta["step"] == 8
    for key in ca.tensors:
        if key.startswith(("model/", "ema/", "optim/")):
            assert torch.equal(ca.tensors[key], cb.tensors[key]), key


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_ctrl_c_saves_the_step_in_progress_and_the_same_command_resumes(signame, tmp_path, monkeypatch, capfd,
                                                                       interactive_signals):
    import os
    import signal

    sig = getattr(signal, signame)
    fam = registry.get_family("vae")
    real_step = fam.train_step

    def step_then_signal(model, batch, opts, step, accel, **kw):
        logs = real_step(model, batch, opts, step, accel, **kw)
        if step == 4:  # during step 5 (counted from 1): a user's Ctrl-C, or a scheduler's SIGTERM
            os.kill(os.getpid(), sig)
        return logs

    monkeypatch.setattr(fam, "train_step", step_then_signal)
    before = signal.getsignal(sig)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "r", 1000)
    assert signal.getsignal(sig) is before  # the trainer's handler is gone again
    assert f"stopped by {signame} at step 5" in capfd.readouterr().err
    assert checkpoint.load(tmp_path / "r").meta["step"] == 5  # not the last periodic checkpoint (none yet)
    monkeypatch.setattr(fam, "train_step", real_step)
    _train(tmp_path / "r", 8)
    assert _losses(tmp_path / "r") == _losses(_train(tmp_path / "u", 8))  # as if never stopped


def test_evaluations_during_training_are_logged_and_checked_before_the_first_step(tmp_path, monkeypatch, capsys):
    from helpers import make_mnist

    make_mnist(tmp_path / "data", n_train=64, n_test=40)
    gan = ["model.g_channels=8", "model.d_channels=8", "train.batch_size=16", "train.sample_every=0",
           "train.log_every=1", "train.eval_every=2", "train.eval_n=20", "train.eval_metrics=cfd,cscore,cacc"]
    run = api.train("gan", data="mnist", steps=5, out=tmp_path / "g", progress=False, overrides=gan,
                    data_root=str(tmp_path / "data"))
    evals = [json.loads(line) for line in (run / "evals.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [2, 4, 5]  # every 2 steps, and the final weights
    for e in evals:
        assert e["n"] == 20 and np.isfinite(e["fid_clf"]) and 0 <= e["class_accuracy"] <= 1
        assert 1 <= e["classifier_score"] <= 10 and e["eval_s"] >= 0
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5]
    # train.keep_best keeps the checkpoint of the best evaluation, across a resume; --fresh removes it
    keep = gan + ["train.keep_best=fid_clf"]
    run = api.train("gan", data="mnist", steps=5, out=tmp_path / "b", progress=False, overrides=keep,
                    data_root=str(tmp_path / "data"))
    run = api.train("gan", data="mnist", steps=9, out=tmp_path / "b", progress=False, overrides=keep,
                    data_root=str(tmp_path / "data"))
    evals = [json.loads(line) for line in (run / "evals.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [2, 4, 5, 6, 8, 9]
    top = min(evals, key=lambda e: e["fid_clf"])
    best = checkpoint.load(run / "checkpoints" / "best.safetensors")
    assert best.meta["best"]["value"] == pytest.approx(top["fid_clf"]) and best.meta["step"] == top["step"]
    assert checkpoint.load(run).meta["step"] == 9  # resuming still takes the newest, not the best
    assert api.load(run / "checkpoints" / "best.safetensors").sample(4, labels=[0, 1, 2, 3]).shape == (4, 1, 28, 28)
    from helpers import run_cli

    _, out, _ = run_cli(["info", run], capsys)
    assert f"best:        fid_clf {top['fid_clf']:.4g} at step {top['step']} (20 samples" in out
    assert any(line.startswith("last eval:") and '"step": 9,' in line for line in out.splitlines())
    api.train("gan", data="mnist", steps=1, out=tmp_path / "b", progress=False, overrides=gan, fresh=True,
              data_root=str(tmp_path / "data"))
    assert not (run / "checkpoints" / "best.safetensors").exists()
    assert [json.loads(line)["step"] for line in (run / "evals.jsonl").read_text().splitlines()] == [1]
    # what cannot run is an error before any training step
    for extra, needle in ((["train.eval_metrics=nll"], "gan family has no likelihood"),
                          (["train.eval_metrics=fidd"], "unknown"),
                          (["model.class_cond=false", "train.eval_metrics=cacc"], "class-conditional"),
                          (["train.keep_best=precision"], "keep_best='precision' is not among.*fid_clf"),
                          (["train.eval_every=0", "train.keep_best=fid_clf"], "set train.eval_every")):
        with pytest.raises(ImagegenError, match=needle):
            api.train("gan", data="mnist", steps=5, out=tmp_path / "x", progress=False, overrides=gan + extra,
                      data_root=str(tmp_path / "data"))
    with pytest.raises(ImagegenError, match="none for 'digits'.*use --set train.eval_metrics=fid,kid"):
        _train(tmp_path / "d", 3, extra=["train.eval_every=2"])
    # a likelihood family can follow its test NLL (the same code as 'imagegen eval --metrics nll')
    run = _train(tmp_path / "v", 3, extra=["train.eval_every=2", "train.eval_metrics=nll", "train.eval_n=10"])
    evals = [json.loads(line) for line in (run / "evals.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [2, 3] and all(e["bits_per_dim"] > 0 for e in evals)
    monkeypatch.setenv("IMAGEGEN_INCEPTION", str(tmp_path / "missing.pt"))
    with pytest.raises(ImagegenError, match="IMAGEGEN_INCEPTION"):
        _train(tmp_path / "d", 3, extra=["train.eval_every=2", "train.eval_metrics=fid"])
    assert not (tmp_path / "x").exists() and not (tmp_path / "d" / "checkpoints").exists()


def test_run_directory_contents_and_budgets(tmp_path):
    run = _train(tmp_path / "r", 4, extra=["train.sample_every=2", "train.grad_accum_steps=2"])
    assert json.loads((run / "config.json").read_text())["family"] == "vae"
    assert (run / "samples" / "step-00000004.png").is_file()
    assert list((run / "tb").glob("events.out.tfevents.*"))
    meta = checkpoint.load(run).meta
    assert meta["step"] == 4 and meta["images_seen"] == 4 * 16 * 2
    kimg = api.train("vae", data="digits", kimg=0.064, out=tmp_path / "k", overrides=TINY, progress=False)
    assert checkpoint.load(kimg).meta["step"] == 4
    timed = api.train("vae", data="digits", budget="1s", out=tmp_path / "t", overrides=TINY, progress=False)
    assert checkpoint.load(timed).meta["elapsed_s"] >= 1.0


def test_resume_with_other_model_config_is_refused(tmp_path):
    _train(tmp_path / "r", 2)
    with pytest.raises(ImagegenError, match="model.latent_dim"):
        _train(tmp_path / "r", 4, extra=["model.latent_dim=5"])
    fresh = _train(tmp_path / "r", 2, extra=["model.latent_dim=5"], fresh=True)
    assert checkpoint.load(fresh).meta["config"]["model"]["latent_dim"] == 5


def test_public_train_stays_callable(tmp_path):
    import imagegen

    imagegen.train("vae", data="digits", steps=1, out=tmp_path / "a", overrides=TINY, progress=False)
    assert callable(imagegen.train)  # the trainer module must not shadow the function
    imagegen.train("vae", data="digits", steps=1, out=tmp_path / "b", overrides=TINY, progress=False)


def test_no_budget_is_an_error(tmp_path):
    with pytest.raises(ImagegenError, match="no training budget"):
        api.train("vae", data="digits", out=tmp_path / "x", overrides=TINY, progress=False)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.FAMILIES, "nanfam", "nan_family")
    with pytest.raises(ImagegenError, match="NaN or Inf") as e:
        api.train("nanfam", data="digits", steps=20, out=tmp_path / "n", progress=False,
                  overrides=["train.log_every=1", "train.ckpt_every=2", "train.sample_every=0",
                             "train.ema_decay=0", "train.grad_clip=0"])
    assert "ckpt-00000004" in str(e.value)
    last = checkpoint.load(tmp_path / "n")
    assert last.meta["step"] == 4
    assert all(torch.isfinite(t).all() for k, t in last.tensors.items() if k.startswith("model/"))


def test_loaded_model_operations(tmp_path):
    run = _train(tmp_path / "r", 3)
    m = api.load(run)
    x = m.sample(6, seed=1)
    assert x.shape == (6, 1, 16, 16) and torch.equal(x, m.sample(6, seed=1))
    assert m.nll(x, k=3).shape == (6,)
    with pytest.raises(ImagegenError, match="does not take option 'guidance'"):
        m.sample(2, guidance=2.0)
    with pytest.raises(ImagegenError, match="not class-conditional"):
        m.sample(2, labels=3)
    with pytest.raises(ImagegenError, match="does not support 'denoise'"):
        m.denoise(x[:1], 0.5)


def test_loaded_model_names_bad_inputs_in_one_line(tmp_path):
    """Images, masks, seeds and devices a user passes to the Python API are checked where they enter, with
    the expected form in the message, instead of failing deep inside a network (every case below raised a
    raw RuntimeError from a conv or matmul, or silently ran, before the checks existed)."""
    run = _train(tmp_path / "r", 2)
    m = api.load(run)
    x = torch.zeros(2, 1, 16, 16)
    bad_images = [
        (torch.zeros(2, 1, 8, 8), r"shape \(N, 1, 16, 16\).*got shape \(2, 1, 8, 8\)"),
        (torch.zeros(1, 16, 16), r"add the batch dimension with x\[None\]"),
        (torch.zeros(0, 1, 16, 16), r"got shape \(0, 1, 16, 16\)"),
        (torch.zeros(2, 1, 16, 16, dtype=torch.uint8), "to_float converts uint8"),
        (torch.full((2, 1, 16, 16), 255.0), r"values in \[-1, 1\], got \[255, 255\]"),
        (torch.full((2, 1, 16, 16), float("nan")), "NaN or infinite"),
        (x.numpy(), "got ndarray"),
    ]
    for bad, msg in bad_images:
        with pytest.raises(ImagegenError, match=msg):
            m.nll(bad)
    with pytest.raises(ImagegenError, match="a must be a float tensor"):
        m.interpolate(torch.zeros(1, 1, 8, 8), x[:1])
    with pytest.raises(ImagegenError, match=r"mask must be .*shape \(2 or 1, 1, 16, 16\), got shape \(1, 1, 8, 8\)"):
        m.complete(x, torch.ones(1, 1, 8, 8))
    with pytest.raises(ImagegenError, match="got other values"):
        m.complete(x, torch.full((1, 1, 16, 16), 0.5))
    with pytest.raises(ImagegenError, match="not class-conditional"):
        m.nll(x, labels=[1, 2])
    with pytest.raises(ImagegenError, match="seed must be an integer"):
        m.sample(2, seed="a")
    with pytest.raises(ImagegenError, match="unknown device 'tpu'"):
        api.load(run, device="tpu")
    # the accepted forms still work: a bool mask of one image for the whole batch, a numpy integer seed
    keep = torch.ones(1, 1, 16, 16, dtype=torch.bool)
    assert torch.equal(m.complete(x, keep), x)
    assert torch.equal(m.sample(2, seed=np.int64(3)), m.sample(2, seed=3))
