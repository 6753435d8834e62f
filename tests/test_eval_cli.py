"""The evaluation commands end to end on the embedded digits set, with a tiny stand-in feature network
(Inception on a CPU is far too slow for a unit test; its own pipeline is pinned in test_metrics.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import run_cli
from imagegen import evaluation as evaluate
from imagegen.cli import main
from imagegen.config import DataConfig
from imagegen.data import load_dataset, load_image_array, save_image_array
from imagegen.evaluation import reference  # feature_net: where the scorers look it up
from imagegen.metrics.fid import FeatureNet


class TinyNet(FeatureNet):
    """A seeded random feature net (avg-pool to 4x4, random projection, ReLU)."""

    sha256, dim, resizer = "tiny-sha", 16, "avg-pool 4x4"

    def __init__(self, seed=0):
        self.w = torch.randn(48, self.dim, generator=torch.Generator().manual_seed(seed)) / 7

    def _forward(self, u8):
        x = u8.float() / 127.5 - 1
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        return torch.relu(torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1) @ self.w)

TINY = ["--set", "model.latent_dim=4", "--set", "model.base_channels=8", "--set", "model.channel_mult=1,1",
        "--set", "train.batch_size=16", "--set", "data.limit=64", "--set", "model.nll_samples=4"]


@pytest.fixture(autouse=True)
def tiny_features(monkeypatch):
    built = []

    def fake(kind, dataset, opts, device):
        built.append(kind)
        net = TinyNet(seed=0 if kind == "inception" else 1)
        net.name = f"tiny-{kind}"
        return net

    monkeypatch.setattr(reference, "feature_net", fake)
    return built


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("evalrun") / "run"
    main(["train", "vae", "--data", "digits", "--steps", "3", "--out", str(out), *TINY,
          "--set", "model.class_cond=true", "--set", "train.log_every=1"])
    return out


PROTOCOL_FIELDS = ("dataset", "ref_split", "n_gen", "n_ref", "feature_net", "feature_net_sha256", "resizer",
                   "imagegen_version", "git_commit", "torch", "device", "hardware", "feature_runtime")


def test_eval_run_writes_every_number_with_its_protocol(trained, tmp_path, capsys):
    out = tmp_path / "eval.json"
    code, stdout, err = run_cli(["eval", trained, "--metrics", "fid,kid,pr,dc,nll", "--n", 40, "--ref", "test",
                             "--kid-subsets", 4, "--out", out, "--device", "cpu", "--batch-size", 16], capsys)
    assert code == 0, err
    res = json.loads(out.read_text())
    for key in ("fid", "kid", "precision", "recall", "density", "coverage"):
        assert key in res["summary"] and np.isfinite(res["summary"][key])
        proto = res["metrics"][key]["protocol"]
        for f in PROTOCOL_FIELDS:
            assert f in proto, (key, f)
        assert proto["n_gen"] == 40 and proto["n_ref"] == 40 and proto["dataset"] == "digits"
        assert proto["family"] == "vae" and proto["checkpoint_step"] == 3 and proto["seed"] == 0
        assert proto["labels"] == "balanced (i mod K)"  # the run is class-conditional
        assert proto["device"] == "cpu" and f"{torch.get_num_threads()} torch threads" in proto["hardware"]
    assert res["metrics"]["kid"]["protocol"]["kid_subset_size"] == 40
    assert res["summary"]["kid_std"] >= 0
    assert res["summary"]["bits_per_dim"] > 0 and res["metrics"]["bits_per_dim"]["protocol"]["n_ref"] == 40
    assert "fid" in stdout and f"wrote {out}" in stdout
    # the second evaluation reuses the cached reference features
    run_cli(["eval", trained, "--metrics", "fid", "--n", 40, "--out", out, "--device", "cpu"], capsys)
    assert json.loads(out.read_text())["metrics"]["fid"]["protocol"]["ref_cache_hit"] is True


def test_fid_of_the_reference_split_against_itself_is_zero():
    test = load_dataset(DataConfig(name="digits"), "test")
    opts = evaluate.EvalOptions(metrics=["fid", "pr"], features=["inception", "classifier"], progress=False,
                                device="cpu")
    res = evaluate.evaluate_images(test.images, test.labels, "digits", opts)
    assert res["summary"]["fid"] == pytest.approx(0, abs=1e-6)
    assert res["summary"]["fid_clf"] == pytest.approx(0, abs=1e-6)
    assert res["summary"]["precision"] == 1.0 and res["summary"]["recall"] == 1.0
    # different n_ref -> another reference subset, and a non-zero FID; its features are rows of the whole
    # split's cache entry that the first evaluation wrote, and equal the subset's own features
    opts.n_ref = 100
    res2 = evaluate.evaluate_images(test.images, test.labels, "digits", opts)
    proto = res2["metrics"]["fid"]["protocol"]
    assert proto["ref_subset"].startswith("random 100 of") and proto["ref_cache_hit"] is True
    assert proto["ref_features"] == "rows of the whole split's cached features"
    assert proto["ref_cache"] == res["metrics"]["fid"]["protocol"]["ref_cache"]
    assert res2["summary"]["fid"] > 0
    opts.refresh_cache = True  # computes the 100 images' features with the network, and caches them
    res3 = evaluate.evaluate_images(test.images, test.labels, "digits", opts)
    assert res3["metrics"]["fid"]["protocol"]["ref_cache_hit"] is False
    assert "ref_features" not in res3["metrics"]["fid"]["protocol"]
    assert res3["summary"]["fid"] == pytest.approx(res2["summary"]["fid"], rel=1e-6)
    assert res3["summary"]["fid_clf"] == pytest.approx(res2["summary"]["fid_clf"], rel=1e-6)


def test_a_reference_subset_without_a_cached_whole_split_is_computed_and_cached_on_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGEGEN_CACHE", str(tmp_path / "empty-cache"))
    test = load_dataset(DataConfig(name="digits"), "test")
    opts = evaluate.EvalOptions(metrics=["fid"], n_ref=50, progress=False, device="cpu")
    first = evaluate.evaluate_images(test.images[:60], None, "digits", opts)["metrics"]["fid"]["protocol"]
    again = evaluate.evaluate_images(test.images[:60], None, "digits", opts)["metrics"]["fid"]["protocol"]
    assert "ref_features" not in first and "ref_features" not in again
    assert again["ref_cache_hit"] is True and again["ref_cache"] == first["ref_cache"]


def test_eval_folder_with_class_subfolders(tmp_path, capsys):
    test = load_dataset(DataConfig(name="digits"), "test")
    for i in range(60):
        d = tmp_path / "gen" / str(int(test.labels[i]))
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(test.images[i, 0].numpy(), "L").save(d / f"{i:03d}.png")
    out = tmp_path / "f.json"
    code, _, err = run_cli(["eval-folder", tmp_path / "gen", "--data", "digits", "--metrics", "fid,kid",
                        "--kid-subsets", 2, "--out", out, "--device", "cpu"], capsys)
    assert code == 0, err
    res = json.loads(out.read_text())
    assert res["protocol"]["n_gen"] == 60 and res["protocol"]["labels"] == "from class sub-folders"
    assert res["summary"]["fid"] >= 0


def test_eval_folder_reads_image_arrays_in_every_layout(tmp_path, capsys):
    """The same 60 images as PNGs, as an (N, H, W, 1) .npz with labels and as an (N, C, H, W) .npy score the
    same; what `imagegen sample --out x.npz` writes is read back bit for bit."""
    test = load_dataset(DataConfig(name="digits"), "test")
    u8, y = test.images[:60], test.labels[:60]
    (tmp_path / "png").mkdir()
    for i in range(60):
        Image.fromarray(u8[i, 0].numpy(), "L").save(tmp_path / "png" / f"{i:03d}.png")
    np.savez(tmp_path / "nhwc.npz", arr_0=u8.permute(0, 2, 3, 1).numpy(), arr_1=y.numpy())
    np.save(tmp_path / "nchw.npy", u8.numpy())
    fids = {}
    for name in ("png", "nhwc.npz", "nchw.npy"):
        out = tmp_path / f"{name}.json"
        code, _, err = run_cli(["eval-folder", tmp_path / name, "--data", "digits", "--metrics", "fid",
                                "--out", out, "--device", "cpu"], capsys)
        assert code == 0, err
        res = json.loads(out.read_text())
        fids[name] = res["summary"]["fid"]
        assert res["protocol"]["n_gen"] == 60
    assert fids["nhwc.npz"] == fids["nchw.npy"] == fids["png"]
    assert res["protocol"]["generated_from"].startswith("array ")
    images, labels = load_image_array(tmp_path / "nhwc.npz")
    assert torch.equal(images, u8) and torch.equal(labels, y)
    save_image_array(tmp_path / "back.npz", u8, y)
    images, labels = load_image_array(tmp_path / "back.npz")
    assert torch.equal(images, u8) and torch.equal(labels, y)


def test_sample_writes_an_array_that_eval_folder_scores(trained, tmp_path, capsys):
    arr = tmp_path / "s.npz"
    code, out, err = run_cli(["sample", trained, "--n", 20, "--labels", 3, "--out", arr, "--device", "cpu"], capsys)
    assert code == 0, err
    assert f"wrote 20 images to {arr}" in out
    with np.load(arr) as f:
        assert f["x"].dtype == np.uint8 and f["x"].shape[0] == 20 and (f["y"] == 3).all()
    out_json = tmp_path / "e.json"
    code, _, err = run_cli(["eval-folder", arr, "--data", "digits", "--metrics", "fid", "--out", out_json,
                            "--device", "cpu"], capsys)
    assert code == 0, err
    assert json.loads(out_json.read_text())["protocol"]["labels"] == "stored with the images"


@pytest.mark.parametrize("make,needle", [
    (lambda p: np.save(p / "a.npy", np.zeros((4, 8, 8), np.float32)), "must be uint8"),
    (lambda p: np.save(p / "a.npy", np.array([{"x": 1}], dtype=object)), "cannot read"),
    (lambda p: np.save(p / "a.npy", np.zeros((4, 8, 8, 5), np.uint8)), "are not (N, H, W)"),
    (lambda p: np.savez(p / "a.npz", x=np.zeros((4, 8, 8), np.uint8), y=np.array([0, 1, 2, 12])), "run from 0 to 12"),
    (lambda p: np.savez(p / "a.npz", images=np.zeros((4, 8, 8), np.uint8), z=np.zeros(4)), "none is named 'x'"),
    (lambda p: (p / "a.npz").write_bytes(b"PK\x03\x04 torn"), "cannot read"),
    (lambda p: np.save(p / "a.npy", np.zeros((0, 8, 8), np.uint8)), "holds no images"),
])
def test_bad_image_arrays_are_one_line_errors(make, needle, tmp_path, capsys):
    make(tmp_path)
    path = next(tmp_path.glob("a.np*"))
    code, _, err = run_cli(["eval-folder", path, "--data", "digits", "--metrics", "fid", "--device", "cpu"], capsys)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err


def test_ref_stats_caches(capsys):
    argv = ["ref-stats", "--data", "digits", "--split", "test", "--n", 50, "--device", "cpu"]
    code, out1, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "computed" in out1
    code, out2, _ = run_cli(argv, capsys)
    assert "already cached" in out2


@pytest.mark.parametrize("argv,needle", [
    (["eval-folder", "/nonexistent", "--data", "digits"], "does not exist"),
    (["eval-folder", ".", "--data", "digits", "--metrics", "fid,bogus"], "unknown metric 'bogus'"),
    (["eval-folder", ".", "--data", "digits", "--metrics", "nll"], "nll needs a model"),
    (["eval-folder", ".", "--data", "digits", "--features", "vgg"], "unknown feature network 'vgg'"),
    (["train-classifier", "--data", "cifar10"], "supports mnist and fashion-mnist"),
    (["ref-stats", "--data", "digits", "--split", "test", "--n", 5000], "but digits 'test' has 297; lower --n-ref"),
])
def test_eval_errors_are_one_line(argv, needle, capsys):
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err


def test_cacc_on_unconditional_run_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "run"
    main(["train", "vae", "--data", "digits", "--steps", "1", "--out", str(out), *TINY])
    code, _, err = run_cli(["eval", out, "--metrics", "fid,cacc", "--n", 20, "--device", "cpu"], capsys)
    assert code == 2 and "class-conditional" in err


def test_generate_uint8_is_reproducible_and_quantised(trained):
    from imagegen import load

    model = load(trained, device="cpu")
    a = evaluate.generate_uint8(model, 10, evaluate.balanced_labels(10, 10), 0, 4, {}, progress=False)
    b = evaluate.generate_uint8(model, 10, evaluate.balanced_labels(10, 10), 0, 4, {}, progress=False)
    assert a.dtype == torch.uint8 and a.shape == (10, 1, 16, 16) and torch.equal(a, b)


def test_generated_images_do_not_depend_on_the_chunk_size_and_resume_at_another(trained, tmp_path):
    # per-image seeds (imagegen.rng): image i of seed s is the same whatever chunk it is drawn in, so images
    # kept by a stopped evaluation are resumed from with another --batch-size too
    from imagegen import load
    from imagegen.checkpoint import PartialRows

    model = load(trained, device="cpu")
    y = evaluate.balanced_labels(10, 10)
    opts = {"mode": "sample"}  # the VAE's random decoder draws too, not only its latents
    whole = evaluate.generate_uint8(model, 10, y, 3, 10, opts, progress=False)
    assert torch.equal(evaluate.generate_uint8(model, 10, y, 3, 4, opts, progress=False), whole)

    class StopsInChunkThree:
        def __init__(self):
            self.calls = 0

        def sample(self, *args, **kwargs):
            self.calls += 1
            if self.calls == 3:
                raise KeyboardInterrupt
            return model.sample(*args, **kwargs)

    keep = PartialRows(tmp_path / "p", "tag", every_s=0.0)
    with pytest.raises(KeyboardInterrupt):
        evaluate.generate_uint8(StopsInChunkThree(), 10, y, 3, 4, opts, progress=False, resume=keep)
    resumed = evaluate.generate_uint8(model, 10, y, 3, 3, opts, progress=False, resume=keep)
    assert keep.resumed_rows == 8 and torch.equal(resumed, whole)


def test_a_stopped_evaluation_resumes_its_samples_and_features(trained, monkeypatch, capfd):
    from imagegen.data import cache_dir

    calls = []

    class Stopping(TinyNet):
        name = "tiny-resume"  # its own reference cache entry: the reference is computed in this test

        def _forward(self, u8):
            calls.append(u8.shape[0])
            if len(calls) == stop_at[0]:
                raise KeyboardInterrupt  # Ctrl-C in the generated images' second batch (3 reference batches first)
            return super()._forward(u8)

    stop_at = [5]
    monkeypatch.setattr(reference, "feature_net", lambda kind, dataset, opts, device: Stopping())
    opts = dict(metrics="fid,kid", n=40, batch_size=16, device="cpu", progress=False, kid_subsets=4)
    with pytest.raises(KeyboardInterrupt):
        evaluate.evaluate_run(trained, evaluate.EvalOptions(**opts))
    assert "stopped by Ctrl-C: 16 of 40 feature rows kept" in capfd.readouterr().err
    calls.clear()
    stop_at[0] = None
    resumed = evaluate.evaluate_run(trained, evaluate.EvalOptions(**opts))
    err = capfd.readouterr().err
    assert "resuming: 40 of 40 generated images" in err and "resuming: 16 of 40 feature rows" in err
    assert calls == [16, 8]  # the reference was cached whole; of the generated images only batches 2 and 3
    assert resumed["metrics"]["fid"]["protocol"]["generation_resumed_rows"] == 40
    assert not list((cache_dir() / "partial").glob("*.safetensors"))  # finished: nothing left behind
    calls.clear()
    again = evaluate.evaluate_run(trained, evaluate.EvalOptions(**opts))  # from scratch (the reference cached)
    assert calls == [16, 16, 8] and "resuming" not in capfd.readouterr().err
    assert again["summary"] == pytest.approx(resumed["summary"], rel=1e-6)


def test_python_entry_points_take_keyword_options(trained):
    import imagegen
    from imagegen.errors import ImagegenError

    res = imagegen.evaluate_run(trained, metrics="fid", n=20, batch_size=10, device="cpu", progress=False)
    assert res["metrics"]["fid"]["protocol"]["n_gen"] == 20 and np.isfinite(res["summary"]["fid"])
    table = imagegen.compare_runs(str(trained), metrics=["fid"], n=20, device="cpu", progress=False)
    assert len(table["rows"]) == 1
    with pytest.raises(ImagegenError, match="unknown evaluation option.*n_gen.*valid: metrics, n, "):
        imagegen.evaluate_run(trained, n_gen=20)
    with pytest.raises(ImagegenError, match="not both"):
        imagegen.evaluate_run(trained, evaluate.EvalOptions(), n=20)


def test_compare_scores_runs_side_by_side_with_one_protocol(trained, tmp_path, capsys):
    gan = tmp_path / "gan"
    main(["train", "gan", "--data", "digits", "--steps", "2", "--out", str(gan), "--set", "model.g_channels=8",
          "--set", "model.d_channels=8", "--set", "train.sample_every=0"])
    out = tmp_path / "cmp.json"
    code, stdout, err = run_cli(["compare", trained, gan, "--metrics", "fid,kid,nll", "--n", 40, "--kid-subsets", 4,
                                 "--features", "inception,classifier", "--out", out, "--device", "cpu",
                                 "--batch-size", 16], capsys)
    assert code == 0, err
    res = json.loads(out.read_text())
    vae, g = res["rows"]
    assert (vae["family"], g["family"]) == ("vae", "gan") and vae["step"] == 3 and g["step"] == 2
    for row in (vae, g):
        assert np.isfinite(row["fid"]) and np.isfinite(row["fid_clf"]) and np.isfinite(row["kid_clf"])
        assert row["sample_img_per_s"] > 0 and row["params_m"] > 0
    assert vae["bits_per_dim"] > 0 and "nll_nats" not in g
    assert g["skipped"] == {"nll": "the gan family has no likelihood"}
    # one protocol: the same reference images and feature network for both runs
    protos = [r["metrics"]["fid"]["protocol"] for r in res["results"]]
    for f in ("n_gen", "n_ref", "ref_split", "feature_net_sha256", "ref_subset"):
        assert protos[0][f] == protos[1][f], f
    assert "| fid | kid | fid_clf | kid_clf | nll_nats | bits_per_dim |" in stdout
    assert f"| {gan} | gan | 2 |" in stdout and "nll left out (the gan family has no likelihood)" in stdout

    # runs of different data, and a sampling option no run takes, are refused before any sampling
    other = tmp_path / "other"
    main(["train", "gan", "--data", "digits", "--image-size", "8", "--steps", "1", "--out", str(other),
          "--set", "model.g_channels=8", "--set", "model.d_channels=8", "--set", "train.sample_every=0"])
    code, _, err = run_cli(["compare", trained, other, "--metrics", "fid", "--n", 10, "--device", "cpu"], capsys)
    assert code == 2 and "compare runs of one dataset and size" in err and "Traceback" not in err, err
    code, _, err = run_cli(["compare", trained, gan, "--metrics", "fid", "--n", 10, "--steps", 5], capsys)
    assert code == 2 and "--steps 5 is taken by none of these runs' families (gan, vae)" in err


def test_compare_routes_a_shared_sampling_option_by_the_families_choices():
    """--sampler dpmpp-2m goes to diffusion and not to PixelCNN, whose sample() also has a 'sampler' (naive,
    cached): a compare of the two used to fail on PixelCNN with 'must be one of naive, cached'."""
    from imagegen import registry
    from imagegen.evaluation import takes as _takes

    diffusion, pixelcnn, gan = (registry.get_family(n) for n in ("diffusion", "pixelcnn", "gan"))
    assert _takes(diffusion, "sampler", "dpmpp-2m") and not _takes(pixelcnn, "sampler", "dpmpp-2m")
    assert _takes(pixelcnn, "sampler", "cached") and not _takes(diffusion, "sampler", "cached")
    assert _takes(diffusion, "steps", 20) and not _takes(gan, "steps", 20) and _takes(gan, "truncation", 0.5)


def test_eval_nll_and_eval_metrics_nll_give_the_same_number(trained, tmp_path, capsys):
    """One NLL path (imagegen.likelihood.split_nll): the same first 12 test images, the same seed for the IWAE
    bound's importance samples, so 'eval-nll' and 'eval --metrics nll' agree to the last digit; and eval-nll's
    JSON also carries eval's summary keys, which 'imagegen info' reads."""
    code, _, err = run_cli(["eval-nll", trained, "--n", 12, "--device", "cpu", "--out", tmp_path / "a.json"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["eval", trained, "--metrics", "nll", "--n", 12, "--device", "cpu",
                            "--out", tmp_path / "b.json"], capsys)
    assert code == 0, err
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert a["nats"] == b["summary"]["nll_nats"] and a["bits_per_dim"] == b["summary"]["bits_per_dim"]
    assert a["summary"] == {k: b["summary"][k] for k in a["summary"]}
    proto = b["metrics"]["nll_nats"]["protocol"]
    assert proto["n_ref"] == a["n"] == 12 and proto["ref_subset"] == a["protocol"]["ref_subset"]
    assert proto["ref_subset"].startswith("first 12 of ")


def test_eval_compare_and_eval_folder_take_one_option_set():
    """The scoring options are written once (cli_eval.SCORING_OPTIONS) and every scoring command has them all;
    the two that sample a run also have every sampling option."""
    import typer.main

    from imagegen import cli_eval
    from imagegen.cli import app

    commands = typer.main.get_command(app).commands
    params = {name: {p.name for p in commands[name].params} for name in ("eval", "compare", "eval-folder")}
    scoring = {name for name, _, _ in cli_eval.SCORING_OPTIONS}
    sampling = {name for name, _, _ in cli_eval.SAMPLING_OPTIONS}
    assert all(scoring <= p for p in params.values())
    assert sampling <= params["eval"] and sampling <= params["compare"] and not sampling & params["eval-folder"]
    # read from the families' sample(): options no list in the CLI names (the VAE's mode, diffusion's schedule)
    assert {"mode", "schedule", "guidance", "temperature", "truncation", "sampler"} <= sampling
    folder_n = next(p for p in commands["eval-folder"].params if p.name == "n")
    assert folder_n.default == 0  # eval-folder's --n means "the first N images, 0: all"
