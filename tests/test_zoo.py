"""The model zoo that ships in the package (imagegen.zoo, docs/zoo.md): every model loads and samples, every entry
says how it was trained and what it measured, a changed file is refused, and ``zoo:NAME`` works where runs do."""

import json
import shutil

import pytest
import torch

import imagegen
from helpers import run_cli
from imagegen import zoo
from imagegen.cache import file_sha256
from imagegen.errors import ImagegenError
from imagegen.evaluation.generation import sample_options_protocol
from imagegen.model import write_sample_defaults

MODELS = zoo.entries()
SAMPLERS = sorted(n for n, e in MODELS.items() if e.get("draws_samples", True))
pytestmark = pytest.mark.skipif(not MODELS, reason="this checkout ships no zoo (benchmarks/zoo_build.py builds it)")


def _smallest(family: str) -> str:
    return min((n for n in SAMPLERS if MODELS[n]["family"] == family), key=lambda n: MODELS[n]["bytes"])


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_zoo_model_loads_and_samples(name):
    m = imagegen.load(f"zoo:{name}", device="cpu")
    y = torch.arange(3) % m.info.num_classes if m.class_conditional else None
    x = m.sample(3, labels=y, seed=0)
    assert tuple(x.shape) == (3, m.info.channels, m.info.size, m.info.size)
    assert torch.isfinite(x).all() and x.min() >= -1 and x.max() <= 1
    assert x.std() > 0.1  # images, not a constant
    assert m.info.name == MODELS[name]["data"] and m.family == MODELS[name]["family"]
    assert m.sample_defaults == MODELS[name]["sampling"]  # drawn the way it was measured
    if MODELS[name].get("first_stage"):
        assert m.first_stage is not None and m.first_stage.sha256 == MODELS[MODELS[name]["first_stage"]]["sha256"]


def test_every_entry_has_its_training_command_metrics_and_checksum():
    total = 0
    for name, e in MODELS.items():
        t = e["trained"]
        assert "benchmarks/speedrun.py" in t["command"] and "benchmarks/zoo_build.py" in t["command"], name
        assert t["commit"] and t["hardware"] and t["budget"], name
        assert isinstance(e["metrics"].get("cfd"), float) and e["metrics"]["protocol"], name
        file = zoo.ZOO_DIR / e["checkpoint"]
        assert file_sha256(file) == e["sha256"] and file.stat().st_size == e["bytes"], name
        assert e["params"] > 0
        if e.get("first_stage"):
            assert e["first_stage"] in MODELS and not MODELS[e["first_stage"]]["draws_samples"]
        total += e["bytes"]
    assert total < 40e6  # the bound on the whole zoo


def test_changed_checkpoint_is_refused_in_one_line(tmp_path, monkeypatch):
    name = _smallest("gan")
    shutil.copytree(zoo.ZOO_DIR / name, tmp_path / name)
    (tmp_path / zoo.INDEX).write_text(json.dumps({"format": zoo.FORMAT, "models": {name: MODELS[name]}}))
    assert zoo.resolve(f"zoo:{name}", zoo_dir=tmp_path) == tmp_path / name
    file = tmp_path / MODELS[name]["checkpoint"]
    data = bytearray(file.read_bytes())
    data[-1] ^= 0xFF
    file.write_bytes(bytes(data))
    with pytest.raises(ImagegenError, match="has changed") as e:
        zoo.resolve(f"zoo:{name}", zoo_dir=tmp_path)
    assert "\n" not in str(e.value)
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path)  # what imagegen.load resolves against
    with pytest.raises(ImagegenError, match="has changed"):
        imagegen.load(f"zoo:{name}", device="cpu")


def test_unknown_names_and_patterns():
    with pytest.raises(ImagegenError, match="no zoo model 'nope'; the zoo has: .*" + SAMPLERS[0]):
        zoo.resolve("zoo:nope")
    with pytest.raises(ImagegenError, match="matches no zoo model"):
        zoo.expand(["zoo:*-cifar10"])
    assert zoo.expand(["zoo:*"]) == [f"zoo:{n}" for n in SAMPLERS]  # the first stages only by name
    data = MODELS[SAMPLERS[0]]["data"]
    assert zoo.expand([f"zoo:*-{data}", "runs/x"]) == [f"zoo:{n}" for n in SAMPLERS
                                                       if n.endswith(f"-{data}")] + ["runs/x"]
    assert zoo.run_paths(["zoo:" + SAMPLERS[0]]) == [zoo.ZOO_DIR / SAMPLERS[0]]


def test_run_sampling_defaults_apply_and_are_checked(tmp_path):
    name = _smallest("vae")
    run = tmp_path / name
    shutil.copytree(zoo.ZOO_DIR / name, run)
    m = imagegen.load(run, device="cpu")
    y = torch.arange(4) % m.info.num_classes if m.class_conditional else None
    write_sample_defaults(run, {"temperature": 0.3})
    m3 = imagegen.load(run, device="cpu")
    assert m3.sample_defaults == {"temperature": 0.3}
    assert torch.equal(m3.sample(4, labels=y, seed=1), m.sample(4, labels=y, seed=1, temperature=0.3))
    assert torch.equal(m3.sample(4, labels=y, seed=1, temperature=1.0), m.sample(4, labels=y, seed=1, temperature=1.0))
    assert sample_options_protocol(m3, {})["temperature"] == 0.3  # what eval records
    assert sample_options_protocol(m3, {"temperature": 0.9})["temperature"] == 0.9
    (run / "sampling.json").write_text('{"sample": {"warmth": 2}}')
    with pytest.raises(ImagegenError, match="sampling.json: vae.sample does not take option 'warmth'"):
        imagegen.load(run, device="cpu")
    (run / "sampling.json").write_text("{not json")
    with pytest.raises(ImagegenError, match="not readable JSON"):
        imagegen.load(run, device="cpu")


def test_cli_lists_samples_and_describes_zoo_models(tmp_path, capsys):
    code, out, _ = run_cli(["zoo"], capsys)
    assert code == 0 and all(f"zoo:{n}" in out for n in MODELS) and "benchmarks/speedrun.py" in out
    name = _smallest("gan")
    code, out, _ = run_cli(["sample", f"zoo:{name}", "--n", "4", "--out", str(tmp_path / "g.png")], capsys)
    assert code == 0 and (tmp_path / "g.png").stat().st_size > 0
    code, out, _ = run_cli(["info", f"zoo:{name}"], capsys)
    assert code == 0 and f"zoo:{name}" in out and "eval-" in out and "step:" in out
    code, _, err = run_cli(["sample", "zoo:nope", "--n", "1", "--out", str(tmp_path / "n.png")], capsys)
    assert code != 0 and "no zoo model 'nope'" in err and len(err.strip().splitlines()) == 1


def test_report_and_server_take_zoo_models(tmp_path, capsys):
    from imagegen.server.runs import load_runs

    gan, pixelcnn = _smallest("gan"), _smallest("pixelcnn")
    code, _, err = run_cli(["report", f"zoo:{gan}", "--out", tmp_path / "r.html", "--n-grid", "4", "--no-complete",
                            "--device", "cpu", "--truncation", "0.9"], capsys)
    assert code == 0, err
    html = (tmp_path / "r.html").read_text()
    assert gan in html and "data:image/png;base64" in html and "truncation" in html  # a contract option reached it
    assert f"{MODELS[gan]['metrics']['cfd']:.4g}"[:4] in html  # the measured number, from the entry's eval JSON
    runs = load_runs([f"zoo:{pixelcnn}", f"zoo:{gan}"], device="cpu")
    opts = {o["name"]: o["default"] for o in runs[0].summary()["ops"]["sample"]["options"]}
    assert opts["temperature"] == MODELS[pixelcnn]["sampling"]["temperature"]  # the page starts from the run's
    from imagegen.server.tasks import restore_tasks_for

    # a latent model is offered no pixel-operator task (it would refuse it); the pixel GAN is
    assert "sr2" not in restore_tasks_for(runs[0].model) and "sr2" in restore_tasks_for(runs[1].model)


@pytest.mark.skipif("autoencoder-mnist" not in MODELS, reason="no MNIST first stage in this zoo")
def test_a_new_latent_model_trains_on_the_zoo_first_stage(tmp_path):
    from helpers import make_mnist
    from imagegen import api, checkpoint, registry

    make_mnist(tmp_path / "data")
    tiny = [f"model.{k}={v}".replace(" ", "") for k, v in registry.get_family("pixelcnn").TEST_CONFIG.items()]
    run = api.train("pixelcnn", data="mnist", data_root=str(tmp_path / "data"), steps=2, out=tmp_path / "v",
                    latent="zoo:autoencoder-mnist", progress=False,
                    overrides=tiny + ["train.batch_size=8", "train.sample_every=0"])
    rec = checkpoint.read_meta(checkpoint.resolve(run))["latent"]["first_stage"]
    assert rec["sha256"] == MODELS["autoencoder-mnist"]["sha256"]
    x = imagegen.load(run, device="cpu").sample(2, seed=0)
    assert tuple(x.shape) == (2, 1, 28, 28) and torch.isfinite(x).all()


def test_report_completes_with_a_class_conditional_zoo_model(tmp_path, capsys):
    from helpers import make_mnist

    name = _smallest("vae")
    assert imagegen.load(f"zoo:{name}", device="cpu").class_conditional
    make_mnist(tmp_path / "data", folder="FashionMNIST" if "fashion" in name else "MNIST")
    code, _, err = run_cli(["report", f"zoo:{name}", "--out", tmp_path / "r.html", "--n-grid", "4", "--n-complete",
                            "3", "--device", "cpu", "--data-root", tmp_path / "data"], capsys)
    assert code == 0, err
    html = (tmp_path / "r.html").read_text()
    assert f"completions of {name}" in html and "each completed given its true class" in html


def test_sampling_options_for_a_first_stage_are_refused_in_one_line(tmp_path):
    ae = next(n for n, e in MODELS.items() if not e.get("draws_samples", True))
    shutil.copytree(zoo.ZOO_DIR / ae, tmp_path / ae)
    write_sample_defaults(tmp_path / ae, {"temperature": 0.5})
    with pytest.raises(ImagegenError, match="the autoencoder family draws no samples; delete it"):
        imagegen.load(tmp_path / ae, device="cpu")


def test_the_restoration_benchmark_scores_zoo_models_and_skips_pixel_tasks_for_a_latent_one(tmp_path, monkeypatch,
                                                                                             capsys):
    import importlib.util
    import sys
    from pathlib import Path

    from helpers import make_mnist

    make_mnist(tmp_path / "data", n_test=4)
    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(bench))
    spec = importlib.util.spec_from_file_location("bench_restoration_quality", bench / "restoration_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "rows.json"
    monkeypatch.setattr(sys, "argv", [
        "restoration_quality.py", "zoo:gan-mnist", "zoo:diffusion-mnist", "--tasks", "sr2,inpaint:box", "--n", "4",
        "--batch", "4", "--data-root", str(tmp_path / "data"), "--options", "zoo:gan-mnist:steps=3,restarts=1",
        "--options", "zoo:diffusion-mnist:steps=3,resample=1",
        "--grid-dir", str(tmp_path / "grids"), "--out", str(out)])
    module.main()
    rows = {(r["run"], r["task"]): r for r in json.loads(out.read_text())}
    gan = rows[("zoo:gan-mnist", "sr2")]
    assert gan["options"] == {"steps": 3, "restarts": 1} and gan["consistent"] < 1e-5 and 0 < gan["psnr"] < 100
    assert "latent model inpaints only" in rows[("zoo:diffusion-mnist", "sr2")]["skipped"]
    assert rows[("zoo:diffusion-mnist", "inpaint:box")]["consistent"] == 0
    assert "psnr" in rows[("baseline:bicubic", "sr2")]
    assert (tmp_path / "grids" / "zoo-gan-mnist-sr2.png").is_file()
    capsys.readouterr()
