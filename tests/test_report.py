"""imagegen report: the HTML page of two tiny runs is well-formed, self-contained and shows their numbers."""

import base64
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

import imagegen
from helpers import run_cli
from imagegen import registry
from imagegen.report import KNOWN_FLOORS, _floor_for, _labels, fmt


def _train(family, out):
    ov = {"model": dict(registry.get_family(family).TEST_CONFIG), "data": {"limit": 64},
          "train": {"batch_size": 16, "log_every": 1, "eval_every": 3, "eval_metrics": "nll", "eval_n": 12}}
    return imagegen.train(family, data="digits", steps=6, out=out, overrides=ov, progress=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    vae, pix = _train("vae", root / "vae"), _train("pixelcnn", root / "pixelcnn")
    from imagegen.likelihood import evaluate_nll

    nll = evaluate_nll(vae, n=16, progress=False)
    (vae / "nll.json").write_text(json.dumps(nll))
    return vae, pix, nll


class _Page(HTMLParser):
    """Every tag with its attributes, the text, and the contents of <style> blocks."""

    def __init__(self):
        super().__init__()
        self.tags, self.text, self.styles, self._in_style = [], [], [], False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        (self.styles if self._in_style else self.text).append(data)


def _parse(path):
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def _assert_self_contained(page):
    for tag, attrs in page.tags:
        assert tag != "script" and tag != "link", f"<{tag}> in a self-contained page"
        for key in ("src", "href"):
            value = attrs.get(key)
            if value is not None:
                assert value.startswith(("data:", "#")), f"<{tag} {key}={value[:60]!r}> is not embedded"
                assert not re.match(r"\s*(https?:)?//", value)
        assert "url(" not in (attrs.get("style") or "")
    style = "".join(page.styles)
    assert "@import" not in style and not re.search(r"url\(\s*['\"]?(https?:)?//", style)


def _image(src):
    assert src.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))


def test_report_of_two_runs(runs, tmp_path):
    vae, pix, nll = runs
    out = imagegen.report([vae, pix], tmp_path / "r.html", metrics="nll", n=10, n_grid=6, n_complete=3,
                          progress=False)
    page = _parse(out)
    _assert_self_contained(page)
    imgs = {a.get("alt"): a["src"] for t, a in page.tags if t == "img"}
    for name in ("vae", "pixelcnn"):
        grid = _image(imgs[f"samples of {name}"])  # 6 digits 16x16 in a row of 6, 1 px padding
        assert grid.size == (6 * 17 + 1, 17 + 1)
        strip = _image(imgs[f"completions of {name}"])  # rows: original, input, completion of 3 test images
        assert strip.size == (3 * 17 + 1, 3 * 17 + 1)
        assert f"training loss of {name}" in imgs
    assert any(alt.startswith("NLL") and "during training" in alt for alt in imgs)  # evals.jsonl plotted
    text = " ".join(" ".join(page.text).split())
    # the numbers saved in the runs, each with its protocol: eval-nll's JSON and the last in-training evaluation
    assert fmt(nll["bits_per_dim"]) in text and "nll.json" in text and "16 real images, test split" in text
    for run in (vae, pix):
        last = [json.loads(x) for x in (run / "evals.jsonl").read_text().splitlines()][-1]
        assert fmt(last["bits_per_dim"]) in text and f"evals.jsonl (step {last['step']})" in text
    assert "computed now (--metrics nll --n 10)" in text
    # both runs scored at one protocol: the lower bits/dim is marked best, and the summary says so
    html = out.read_text()
    rows = re.findall(r"<tr>\s*<td><strong>bits/dim</strong>.*?</tr>", html, re.S)
    assert len(rows) == 3  # evals.jsonl (12 images), computed now (10), the VAE's nll.json (16)
    for r in rows:
        assert r.count('class="best"') == (0 if "16 real images" in r else 1)  # nothing to compare at 16
        if "10 real images" in r:  # the VAE's bound is far below PixelCNN's on these barely trained runs
            assert re.search(r'class="best">6\.\d+<', r)
    assert "What this shows" in text and "is best with" in text


def test_report_cli_marks_best_per_protocol_and_reads_outside_results(runs, tmp_path, capsys):
    vae, pix, _ = runs

    def result(run, fid, precision, n):  # what 'imagegen eval' writes, with a protocol per number
        proto = {"run": str(run), "dataset": "digits", "ref_split": "test", "n_gen": n, "n_ref": n,
                 "feature_net": "inception-v3-2015-12-05", "checkpoint_step": 6, "hardware": "a test machine"}
        return {"summary": {"fid": fid, "precision": precision, "recall": 0.5},
                "metrics": {"fid": {"value": fid, "protocol": proto},
                            "precision": {"value": precision, "protocol": proto},
                            "recall": {"value": 0.5, "protocol": proto}}, "protocol": proto}

    pix = Path(shutil.copytree(pix, tmp_path / "pixelcnn"))  # a compare result kept in (a copy of) the run
    (pix / "cmp.json").write_text(json.dumps({"rows": [], "results": [result(vae, 99.0, 0.1, 100),
                                                                      result(pix, 30.0, 0.6, 100)]}))
    (tmp_path / "a.json").write_text(json.dumps(result(vae, 40.0, 0.7, 100)))  # an eval result kept elsewhere
    ckpt = pix / "checkpoints" / "ckpt-00000006.safetensors"  # an evaluation of a checkpoint file
    (tmp_path / "b.json").write_text(json.dumps(result(ckpt, 25.0, 0.6, 200)))
    out = tmp_path / "r.html"
    code, stdout, _ = run_cli(["report", vae, pix, "--out", out, "--results", tmp_path / "a.json", "--results",
                               tmp_path / "b.json", "--n-grid", "2", "--no-complete"], capsys)
    assert code == 0 and f"wrote {out}" in stdout
    html = out.read_text()
    page = _parse(out)
    _assert_self_contained(page)
    fid_rows = re.findall(r"<tr>\s*<td><strong>FID \(Inception\)</strong>.*?</tr>", html, re.S)
    assert len(fid_rows) == 2  # N 100 and N 200 are separate rows: never compared with each other
    assert re.search(r'class="best">30<', fid_rows[0]) and "40" in fid_rows[0]  # lower FID is best
    assert ">99<" not in fid_rows[0]  # the compare file's row of the other run is not this run's
    assert 'class="best"' not in fid_rows[1]  # one run only at N 200: nothing to mark
    prec = re.findall(r"<tr>\s*<td><strong>precision</strong>.*?</tr>", html, re.S)[0]
    assert re.search(r'class="best">0.7<', prec)  # higher precision is best
    text = " ".join(" ".join(page.text).split())
    assert "FID (Inception) was measured at different N" in text and "a test machine" in text
    assert any(a.get("alt") == "Precision against recall" for t, a in page.tags if t == "img")
    assert "completion strips were turned off" in text


def test_known_floor_only_for_the_same_protocol():
    inception = next(f["feature_sha"] for f in KNOWN_FLOORS if f["metric"] == "fid")
    key = ("fid", 2000, 2000, "test", "inception-v3-2015-12-05")
    assert _floor_for(key, "mnist", inception, KNOWN_FLOORS)["value"] == 6.48
    assert _floor_for(key, "mnist", "another network", KNOWN_FLOORS) is None
    assert _floor_for(("fid", 2000, 2000, "train", None), "mnist", inception, KNOWN_FLOORS) is None
    assert _floor_for(("fid", 3000, 3000, "test", None), "mnist", inception, KNOWN_FLOORS) is None
    assert _floor_for(("fid", 50000, 10000, "test", None), "mnist", None, KNOWN_FLOORS)["value"] == 1.09


def test_report_bad_input_is_one_line(runs, tmp_path, capsys):
    vae, _, _ = runs
    out = tmp_path / "cli.html"
    (tmp_path / "empty").mkdir()
    for argv, words in (([tmp_path / "nope", "--out", out], "does not exist"),
                        ([tmp_path / "empty", "--out", out], "has no checkpoints"),
                        ([vae, "--out", tmp_path / "r.png"], "end the name in .html"),
                        ([vae, "--out", out, "--metrics", "nll"], "--metrics needs --n"),
                        ([vae, "--out", out, "--keep", "middle"], "--keep middle"),
                        ([vae, "--out", out, "--results", tmp_path / "none.json"], "does not exist")):
        code, _, err = run_cli(["report", *argv], capsys)
        assert code == 2 and err.startswith("error: ") and words in err and err.count("\n") == 1, err
    assert not out.exists()  # every mistake is caught before any sampling


def test_summary_says_when_a_gap_is_within_the_noise():
    from imagegen.report import _within_noise

    def row(spread_a, spread_b):
        return {"metric": "bits_per_dim", "best": "a",
                "cells": [{"value": 3.83, "spread": spread_a}, {"value": 4.27, "spread": spread_b}, None]}

    assert _within_noise(row(0.37, 0.04), ["a", "b", "c"]) == "b"  # 0.44 apart, 2 x 0.37 combined
    assert _within_noise(row(0.05, 0.04), ["a", "b", "c"]) is None
    assert _within_noise(row(None, 0.04), ["a", "b", "c"]) is None  # no standard error: nothing to say


def test_quality_against_sampling_steps_for_diffusion_runs():
    from imagegen.report import _entry, _steps_plots

    card = {"label": "diff", "family": "diffusion", "color": "#1f77b4"}
    proto = {"n_gen": 500, "n_ref": 500, "ref_split": "test", "feature_net": "classifier-mnist"}
    entries = [_entry("diff", "fid_clf", v, dict(proto, sampler="ddim", steps=s), f"q-{s}.json")
               for s, v in ((10, 80.0), (20, 60.0), (50, 55.0))]
    plots = _steps_plots([card], {"diff": entries})
    assert [p["title"] for p in plots] == ["classifier FD against sampling steps (diffusion)"]
    assert _image(plots[0]["src"]).size[0] > 300
    assert _steps_plots([dict(card, family="gan")], {"diff": entries}) == []  # diffusion runs only
    assert _steps_plots([card], {"diff": entries[:1]}) == []  # one step count is no curve


def test_run_labels_name_the_run_and_tell_apart_two_of_one_name(tmp_path):
    run = tmp_path / "exp" / "gan-a"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = run / "checkpoints" / "ckpt-00000100.safetensors"
    ckpt.touch()
    loose = tmp_path / "kept" / "best.safetensors"  # a checkpoint file outside a run's layout
    loose.parent.mkdir()
    loose.touch()
    other = tmp_path / "other" / "gan-a"
    other.mkdir(parents=True)
    assert _labels([run, ckpt, loose]) == ["gan-a", "gan-a/ckpt-00000100", "kept/best"]
    assert _labels([run, other]) == ["exp/gan-a", "other/gan-a"]
