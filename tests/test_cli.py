"""The CLI's commands end to end on the embedded digits set, with a handful of steps."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import run_cli
from imagegen.cli import _write_images, main
from imagegen.data import load_folder

TINY = ["--set", "model.latent_dim=4", "--set", "model.base_channels=8", "--set", "model.channel_mult=1,1",
        "--set", "train.batch_size=16", "--set", "train.log_every=1", "--set", "data.limit=64",
        "--set", "model.nll_samples=4"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    main(["train", "vae", "--data", "digits", "--steps", "4", "--out", str(out), *TINY,
          "--set", "model.class_cond=true"])
    return out


def test_list(capsys):
    code, out, _ = run_cli(["list"], capsys)
    assert code == 0 and "vae" in out and "digits" in out and "vae-mnist" in out


def test_dry_run_prints_resolved_config(capsys):
    code, out, _ = run_cli(["train", "--preset", "vae-mnist", "--set", "model.latent_dim=16", "--set",
                        "train.batch_size=256", "--dry-run"], capsys)
    cfg = json.loads(out)
    assert code == 0 and cfg["model"]["latent_dim"] == 16 and cfg["train"]["batch_size"] == 256
    assert cfg["data"]["name"] == "mnist"


def test_train_info_and_sample(trained, tmp_path, capsys):
    assert (trained / "config.json").is_file()
    code, out, _ = run_cli(["info", trained], capsys)
    assert code == 0 and "family:      vae" in out and "step:        4" in out
    code, out, _ = run_cli(["sample", trained, "--n", "6", "--labels", "3", "--out", tmp_path / "g.png"], capsys)
    with Image.open(tmp_path / "g.png") as grid:
        assert code == 0 and grid.size[0] > 16
    code, _, _ = run_cli(["sample", trained, "--n", "3", "--labels", "0,1,2", "--out-dir", tmp_path / "s",
                      "--temperature", "0.5"], capsys)
    assert code == 0 and sorted(p.relative_to(tmp_path / "s").as_posix() for p in (tmp_path / "s").rglob("*.png")) \
        == ["0/000000.png", "1/000001.png", "2/000002.png"]  # labelled samples: one sub-folder per class
    with Image.open(tmp_path / "s" / "0" / "000000.png") as first:
        assert first.size == (16, 16)
    # a balanced synthetic set, written as a class folder, reads back as a labelled dataset
    code, out, _ = run_cli(["sample", trained, "--n", "20", "--labels", "balanced", "--out-dir", tmp_path / "syn"],
                           capsys)
    assert code == 0 and "10 class sub-folders" in out
    ds = load_folder(tmp_path / "syn", "__no_split__", None, None)
    assert ds.images.shape[0] == 20 and ds.info.num_classes == 10
    assert sorted(ds.labels.tolist()) == sorted([i % 10 for i in range(20)])
    _write_images(torch.zeros(4, 1, 16, 16), None, tmp_path / "flat")  # no labels: one flat folder
    assert sorted(p.name for p in (tmp_path / "flat").iterdir()) == [f"{i:06d}.png" for i in range(4)]


def test_eval_nll(trained, tmp_path, capsys):
    code, out, _ = run_cli(["eval-nll", trained, "--split", "test", "--n", "10", "--out", tmp_path / "nll.json"],
                       capsys)
    assert code == 0 and "bits/dim" in out
    result = json.loads((tmp_path / "nll.json").read_text())
    assert result["n"] == 10 and result["nats"] > 0 and "IWAE" in result["bound"]
    assert result["conditioning"] == "marginal over uniform labels"
    code, out, _ = run_cli(["eval-nll", trained, "--n", "10", "--conditional", "--out", tmp_path / "c.json"], capsys)
    cond = json.loads((tmp_path / "c.json").read_text())
    assert code == 0 and cond["conditioning"].startswith("-log p(x|y)")
    # -log (1/K) sum_y p(x|y) <= -log p(x|y_true) + log K (up to the IWAE bounds' sampling noise)
    assert result["nats"] <= cond["nats"] + math.log(10) + 1.0
    # a result kept in the run directory shows in 'info' (a broken JSON file there is skipped)
    run = tmp_path / "copy"
    import shutil

    shutil.copytree(trained, run)
    shutil.copy(tmp_path / "nll.json", run / "nll-test-10.json")
    (run / "torn.json").write_text("{not json")
    code, out, err = run_cli(["info", run], capsys)
    assert code == 0, err
    assert f"nll-test-10.json: nll {result['nats']:.4g} nats" in out and "[split test, n 10, step 4]" in out
    assert "torn.json" not in out


def test_inpaint_complete_interpolate(trained, tmp_path, capsys):
    img = tmp_path / "x.png"
    Image.fromarray((np.random.default_rng(0).random((16, 16)) * 255).astype(np.uint8), "L").save(img)
    mask = tmp_path / "m.png"
    Image.fromarray(np.concatenate([np.full((8, 16), 255), np.zeros((8, 16))]).astype(np.uint8), "L").save(mask)
    code, _, err = run_cli(["inpaint", trained, "--image", img, "--mask", mask, "--labels", "1", "--out",
                        tmp_path / "f.png"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["complete", trained, "--image", img, "--keep", "top-half", "--n", "3", "--labels", "2",
                        "--out", tmp_path / "c.png"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["interpolate", trained, "--a", img, "--b", img, "--frames", "4", "--labels", "5",
                        "--out", tmp_path / "i.png"], capsys)
    assert code == 0, err
    assert (tmp_path / "i.png").is_file()


@pytest.mark.parametrize("argv,needle", [
    (["train", "vae", "--set", "model.bogus=1"], "unknown config key 'model.bogus'"),
    (["train", "gan-that-does-not-exist"], "unknown family"),
    (["train", "vae", "--data", "mnist", "--data-root", "/nonexistent", "--steps", "1",
      "--set", "data.download=false"], "--data-root"),
    (["sample", "/nonexistent/run", "--out", "x.png"], "does not exist"),
])
def test_errors_are_one_line(argv, needle, capsys):
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err


@pytest.mark.parametrize("argv,needle", [
    (["sample", "RUN", "--n", "0", "--out", "g.png"], "--n must be >= 1, got 0"),
    (["sample", "RUN", "--n", "2", "--out", "g.xyz"], "cannot write a '.xyz' file"),
    (["inpaint", "RUN", "--image", "x.png", "--keep", "top-half", "--n", "-2", "--out", "f.png"],
     "--n must be >= 1, got -2"),
    (["eval", "RUN", "--metrics", "fid", "--n", "0"], "--n must be >= 1, got 0"),
    (["eval", "RUN", "--metrics", "fid", "--n", "10", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["eval-nll", "RUN", "--n", "0"], "--n must be >= 1, got 0"),
    (["eval-nll", "RUN", "--n", "5", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
])
def test_bad_counts_and_outputs_fail_before_any_work(trained, tmp_path, argv, needle, capsys):
    argv = [str(trained) if a == "RUN" else str(tmp_path / a) if a.endswith((".png", ".xyz")) else a for a in argv]
    Image.new("L", (16, 16)).save(tmp_path / "x.png")
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and needle in err and "Traceback" not in err, err
    assert not (tmp_path / "g.png").exists() and not (tmp_path / "f.png").exists()


def test_an_image_of_another_size_is_resized_with_a_warning(trained, tmp_path, capsys):
    img = tmp_path / "big.png"
    Image.new("L", (40, 20)).save(img)
    with pytest.warns(UserWarning, match=r"big.png is 40x20; resized and centre-cropped to the model's 16x16"):
        code, _, err = run_cli(["complete", trained, "--image", img, "--keep", "top-half", "--labels", "1",
                                "--out", tmp_path / "c.png"], capsys)
    assert code == 0, err


@pytest.mark.parametrize("argv,needle", [
    (["train-classifier", "--data", "mnist", "--bogus"], "No such option: --bogus"),
    (["sample"], "Missing argument"),
    (["sample", "run", "--n", "many"], "Invalid value for '--n'"),
])
def test_usage_errors_are_messages_not_tracebacks(argv, needle, capsys):
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and needle in err and "Traceback" not in err, err


def test_ctrl_c_exits_130_not_0(tmp_path, monkeypatch, capsys):
    # typer >= 0.13 returns Ctrl-C's exit code instead of raising it when not standalone: a script's
    # `imagegen train ... && imagegen eval ...` must not go on after the user stopped training
    import imagegen.trainer

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(imagegen.trainer, "train", interrupted)
    code, _, err = run_cli(["train", "vae", "--data", "digits", "--steps", "1", "--out", tmp_path / "r"], capsys)
    assert code == 130 and "aborted" in err and "Traceback" not in err


def test_denoise_unsupported_is_clear(trained, tmp_path, capsys):
    img = tmp_path / "x.png"
    Image.new("L", (16, 16)).save(img)
    code, _, err = run_cli(["denoise", trained, "--image", img, "--out", tmp_path / "d.png"], capsys)
    assert code == 2 and "does not support 'denoise'" in err


def test_sampling_options_come_from_the_family_and_others_are_named(trained, tmp_path, capsys):
    # every option of a family's sample is a flag (the VAE's mode was unreachable when six were hard-coded)
    code, _, err = run_cli(["sample", trained, "--n", "4", "--labels", "1", "--mode", "sample", "--out",
                            tmp_path / "s.npz"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["sample", trained, "--n", "4", "--labels", "1", "--out", tmp_path / "m.npz"], capsys)
    drawn, mean = np.load(tmp_path / "s.npz")["x"], np.load(tmp_path / "m.npz")["x"]
    assert code == 0 and drawn.shape == mean.shape == (4, 16, 16) and not np.array_equal(drawn, mean)
    # an option of another family: one line naming what this one takes
    code, _, err = run_cli(["sample", trained, "--n", "2", "--labels", "1", "--steps", "5", "--out",
                            tmp_path / "g.png"], capsys)
    assert code == 2 and err.strip().count("\n") == 0
    assert "does not take option 'steps'" in err and "temperature, mode" in err
    code, _, err = run_cli(["sample", trained, "--n", "2", "--labels", "1", "--mode", "median", "--out",
                            tmp_path / "g.png"], capsys)
    assert code == 2 and "mode takes one of mean, sample" in err


def test_the_same_seed_gives_the_same_images_at_any_batch_size(trained, tmp_path, capsys):
    for bs in (5, 2):
        code, _, err = run_cli(["sample", trained, "--n", "5", "--labels", "3", "--mode", "sample", "--seed", "9",
                                "--batch-size", str(bs), "--out", tmp_path / f"b{bs}.npz"], capsys)
        assert code == 0, err
    assert np.array_equal(np.load(tmp_path / "b5.npz")["x"], np.load(tmp_path / "b2.npz")["x"])
