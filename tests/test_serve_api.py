"""``imagegen serve``'s JSON API through FastAPI's TestClient, on tiny trained runs of every family: each
endpoint, the family options read from the contract, known pixels kept by completion, progress and
cancellation, the busy answer, and bad input (each answered 4xx in one line, the server serving after it)."""

from __future__ import annotations

import base64
import inspect
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")  # TestClient

from fastapi.testclient import TestClient  # noqa: E402

from helpers import run_cli  # noqa: E402
from imagegen import registry  # noqa: E402
from imagegen.server import Limits, create_app, load_runs  # noqa: E402
from imagegen.server import tasks as server_tasks  # noqa: E402
from serve_fixtures import tiny_runs  # noqa: E402

LIMITS = Limits(max_images=16, max_steps=1000, max_upload_bytes=20_000, max_upload_pixels=64 * 64, max_queue=3)
FAST = {"diffusion": {"steps": 3}, "gan": {}, "pixelcnn": {}, "vae": {}}
FAST_COMPLETE = {"diffusion": {"steps": 3, "resample": 1}, "gan": {"steps": 3, "restarts": 1},
                 "pixelcnn": {}, "vae": {"iterations": 2}}


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory):
    return tiny_runs(tmp_path_factory)


@pytest.fixture(scope="module")
def client(run_dirs):
    app = create_app(load_runs(run_dirs, device="cpu"), LIMITS)
    with TestClient(app) as c:
        c.ids = {r["family"]: r["id"] for r in c.get("/api/runs").json()}
        yield c


def png_b64(arr: np.ndarray, mode: str = "L", fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def decode_url(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as im:
        return np.array(im)


def finish(c, answer, timeout=120) -> dict:
    assert answer.status_code == 202, answer.text
    job = answer.json()
    while job["status"] in ("queued", "running"):
        job = c.get(f"/api/jobs/{job['id']}", params={"wait": 5}).json()
        timeout -= 5
        assert timeout > 0, job
    return job


def still_serving(c) -> None:
    r = c.get("/api/health")
    assert r.status_code == 200 and r.json()["ok"] is True


def test_runs_list_every_family_and_options_from_the_contract(client):
    runs = client.get("/api/runs").json()
    assert sorted(r["family"] for r in runs) == ["diffusion", "gan", "pixelcnn", "vae"]
    assert [r["id"] for r in runs] == list(range(4))
    for r in runs:
        fam = registry.get_family(r["family"])
        assert r["step"] == 1 and r["images_seen"] == 16 and r["size"] == 16 and r["channels"] == 1
        assert set(r["ops"]) == {"sample", *[op for op in ("complete", "denoise", "interpolate", "restore")
                                             if hasattr(fam, op)]}
        names = [o["name"] for o in r["ops"]["sample"]["options"]]
        sig = inspect.signature(fam.sample).parameters
        assert names == [k for k, p in sig.items() if p.default is not inspect.Parameter.empty
                         and k not in ("labels", "generator") and p.default is not None]
        for o in r["ops"]["sample"]["options"]:
            assert o["default"] == sig[o["name"]].default
            if o["name"] in getattr(fam, "SAMPLE_CHOICES", {}):
                assert o["choices"] == list(fam.SAMPLE_CHOICES[o["name"]])
    by = {r["family"]: r for r in runs}
    assert [o["name"] for o in by["gan"]["ops"]["sample"]["options"]] == ["truncation"]
    assert by["vae"]["class_conditional"] and not by["diffusion"]["class_conditional"]
    assert by["vae"]["interpolate_modes"] == ["images"] and by["gan"]["interpolate_modes"] == ["seeds", "images"]


def test_capabilities_list_restore_tasks_from_the_table(client, monkeypatch):
    caps = client.get("/api/capabilities").json()
    assert caps["limits"]["max_images"] == LIMITS.max_images
    assert "erase-centre-square" in caps["mask_presets"]
    by_name = {t["name"]: t for t in caps["restore_tasks"]}
    assert {"denoise", "sr2", "sr4", "colourise"} <= set(by_name)
    assert not any(by_name["colourise"]["runs"])  # the digits runs are grey: no colour to restore
    denoise = by_name["denoise"]
    assert denoise["runs"] == [client.ids["diffusion"]]
    assert [p["name"] for p in denoise["params"]] == ["noise_level", "strength"]
    assert "sampler" in [o["name"] for o in denoise["options"][str(client.ids["diffusion"])]]
    # a new task is one table entry: it is listed (with the runs whose family has its op) without other changes
    extra = server_tasks.RestoreTask(name="smooth", label="Smooth", op="reconstruct", help="h", params=(),
                                     degrade=lambda x, p, g: x, restore=lambda m, x, p, y, s, o: m.reconstruct(x))
    monkeypatch.setitem(server_tasks.RESTORE_TASKS, "smooth", extra)
    caps = client.get("/api/capabilities").json()
    smooth = next(t for t in caps["restore_tasks"] if t["name"] == "smooth")
    assert sorted(smooth["runs"]) == sorted(client.ids[f] for f in ("gan", "vae"))


def test_saved_metrics_show_for_compare(client, run_dirs):
    gan_dir = next(p for p in run_dirs if p.name.startswith("gan"))
    (gan_dir / "eval-serve-test.json").write_text(json.dumps({"summary": {"fid": 12.5, "fid_std": 0.3, "kid": 0.01}}))
    (gan_dir / "nll-serve-test.json").write_text(json.dumps({"nats": 90.0, "bits_per_dim": 0.5, "n": 10}))
    (gan_dir / "broken-serve-test.json").write_text("{not json")
    try:
        metrics = client.get("/api/runs").json()[client.ids["gan"]]["metrics"]
    finally:
        for name in ("eval", "nll", "broken"):
            (gan_dir / f"{name}-serve-test.json").unlink()
    assert metrics["eval-serve-test.json"] == {"fid": 12.5, "kid": 0.01}
    assert metrics["nll-serve-test.json"] == {"nats": 90.0, "bits_per_dim": 0.5}
    assert "broken-serve-test.json" not in metrics


def test_run_detail_grids_and_test_images(client):
    d = client.get(f"/api/runs/{client.ids['vae']}").json()
    assert d["config"]["family"] == "vae" and d["checkpoint"].endswith(".safetensors")
    assert d["sample_grids"] == ["step-00000001.png"]
    assert d["test_images"] == {"available": True, "count": 297}  # the digits test split
    g = client.get(f"/api/runs/{d['id']}/samples/step-00000001.png")
    assert g.status_code == 200 and g.headers["content-type"] == "image/png"
    for name in ("config.json", "..%2Fconfig.json", "step-00000009.png", "%2Fetc%2Fpasswd"):
        r = client.get(f"/api/runs/{d['id']}/samples/{name}")
        assert r.status_code == 404, name
    t = client.get(f"/api/runs/{d['id']}/test-images/5")
    with Image.open(io.BytesIO(t.content)) as im:
        assert im.size == (16, 16) and im.mode == "L"
    assert 0 <= int(t.headers["X-Label"]) <= 9
    assert client.get(f"/api/runs/{d['id']}/test-images/297").status_code == 404
    still_serving(client)


@pytest.mark.parametrize("family", ["diffusion", "gan", "pixelcnn", "vae"])
def test_sample_every_family_with_downloads(client, family):
    from imagegen.data import load_image_array

    rid = client.ids[family]
    req = {"run": rid, "n": 4, "seed": 3, "options": FAST[family], "labels": [1, 2, 3, 4] if family == "vae" else None}
    job = finish(client, client.post("/api/sample", json=req))
    assert job["status"] == "done", job
    res = job["result"]
    assert res["count"] == 4 and res["shape"] == [1, 16, 16] and len(res["images"]) == 4
    assert job["seconds"] > 0 and job["calls"] > 0  # progress counted the network's operations
    ims = [decode_url(u) for u in res["images"]]
    assert all(im.shape == (16, 16) for im in ims)
    grid = client.get(f"/api/jobs/{job['id']}/grid.png")
    with Image.open(io.BytesIO(grid.content)) as im:
        assert im.size == (2 * 17 + 1, 2 * 17 + 1)  # 2x2 images, 1 px padding
    npz = client.get(f"/api/jobs/{job['id']}/images.npz")
    path = io.BytesIO(npz.content)
    arrs = np.load(path)
    assert arrs["x"].shape == (4, 16, 16) and np.array_equal(arrs["x"][0], ims[0])
    if family == "vae":
        assert arrs["y"].tolist() == [1, 2, 3, 4] and res["labels"] == [1, 2, 3, 4]
    assert callable(load_image_array)
    again = finish(client, client.post("/api/sample", json=req))  # the same seed: the same images
    assert again["result"]["images"] == res["images"]
    assert again["expected_calls"] == job["calls"]  # the second time, progress knows the total


@pytest.mark.parametrize("family", ["diffusion", "gan", "pixelcnn", "vae"])
def test_complete_keeps_known_pixels_exactly(client, family):
    rid = client.ids[family]
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    keep = np.full((16, 16), 255, np.uint8)
    keep[4:11, 3:9] = 0  # a drawn hole
    req = {"run": rid, "image": {"data": png_b64(image)}, "mask": png_b64(keep), "n": 2, "seed": 1,
           "options": FAST_COMPLETE[family], "labels": [3] if family == "vae" else None}
    job = finish(client, client.post("/api/complete", json=req))
    assert job["status"] == "done", job
    res = job["result"]
    assert np.array_equal(decode_url(res["inputs"]["image"]), image)
    known = keep == 255
    for url in res["images"]:
        out = decode_url(url)
        assert np.array_equal(out[known], image[known])
    # a preset mask and a test image of the run, referred to by index
    req.update(mask=None, preset="erase-centre-square", image={"test_index": 0}, n=1)
    job = finish(client, client.post("/api/complete", json=req))
    test0 = np.array(Image.open(io.BytesIO(client.get(f"/api/runs/{rid}/test-images/0").content)))
    out = decode_url(job["result"]["images"][0])
    known = np.ones((16, 16), bool)
    known[4:12, 4:12] = False
    assert np.array_equal(out[known], test0[known])


def test_an_image_of_another_size_is_resized_when_asked(client):
    image = np.zeros((20, 30), np.uint8)
    image[:, 7:23] = 255  # a white centre 16 wide: centre-cropped to 20 x 20, then resized to 16 x 16
    req = {"run": client.ids["pixelcnn"], "image": {"data": png_b64(image)}, "preset": "keep-top-half",
           "resize": True}
    job = finish(client, client.post("/api/complete", json=req))
    given = decode_url(job["result"]["inputs"]["image"])
    assert given.shape == (16, 16) and given[:, 5:11].min() > 200 and given[:, :1].max() < 60
    colour = np.stack([image] * 3, -1)  # an RGB upload for a grey model is converted
    req["image"] = {"data": "data:image/png;base64," + png_b64(colour, "RGB")}
    assert finish(client, client.post("/api/complete", json=req))["status"] == "done"


def test_restore_denoise_and_its_checks(client):
    rid = client.ids["diffusion"]
    req = {"run": rid, "task": "denoise", "image": {"test_index": 1}, "params": {"noise_level": 0.4, "strength": 0.3},
           "options": {"steps": 4}, "seed": 2}
    job = finish(client, client.post("/api/restore", json=req))
    assert job["status"] == "done", job
    res = job["result"]
    original, degraded = decode_url(res["inputs"]["original"]), decode_url(res["inputs"]["degraded"])
    assert np.abs(original.astype(int) - degraded).mean() > 5  # the noise was added
    assert decode_url(res["images"][0]).shape == (16, 16)
    r = client.post("/api/restore", json={**req, "run": client.ids["vae"]})
    assert r.status_code == 400 and "does not offer 'denoise'" in r.json()["error"]
    r = client.post("/api/restore", json={**req, "task": "colourise"})  # a known task this run does not offer
    assert r.status_code == 400 and "does not offer 'colourise'" in r.json()["error"]
    r = client.post("/api/restore", json={**req, "task": "deblur-magic"})
    assert r.status_code == 400 and "unknown restoration task" in r.json()["error"]
    r = client.post("/api/restore", json={**req, "params": {"strength": 2.0}})
    assert r.status_code == 400 and "strength" in r.json()["error"]
    r = client.post("/api/restore", json={**req, "params": {"sharpness": 1.0}})
    assert r.status_code == 400 and "sharpness" in r.json()["error"]
    still_serving(client)


def test_interpolate_seeds_and_images(client):
    job = finish(client, client.post("/api/interpolate", json={"run": client.ids["gan"], "mode": "seeds",
                                                               "seeds": [1, 2], "frames": 5}))
    assert job["status"] == "done" and job["result"]["count"] == 5 and job["result"]["nrow"] == 5
    job = finish(client, client.post("/api/interpolate", json={
        "run": client.ids["vae"], "mode": "images", "a": {"test_index": 0}, "b": {"test_index": 1}, "frames": 3,
        "labels": [2]}))
    assert job["status"] == "done", job
    assert job["result"]["count"] == 3 and set(job["result"]["inputs"]) == {"a", "b"}
    r = client.post("/api/interpolate", json={"run": client.ids["vae"], "mode": "seeds"})
    assert r.status_code == 400 and "images" in r.json()["error"]
    r = client.post("/api/interpolate", json={"run": client.ids["gan"], "mode": "seeds", "seeds": [1, -2]})
    assert r.status_code == 422
    r = client.post("/api/interpolate", json={"run": client.ids["pixelcnn"]})
    assert r.status_code == 400 and "does not offer interpolation" in r.json()["error"]
    still_serving(client)


def test_a_running_job_can_be_cancelled_and_the_next_one_runs(client):
    rid = client.ids["diffusion"]
    job = client.post("/api/sample", json={"run": rid, "n": 16, "options": {"steps": 1000}}).json()
    for _ in range(200):
        state = client.get(f"/api/jobs/{job['id']}", params={"wait": 0.05}).json()
        if state["status"] == "running" and state["calls"] > 0:
            break
    assert state["status"] == "running", state
    client.delete(f"/api/jobs/{job['id']}")
    state = client.get(f"/api/jobs/{job['id']}", params={"wait": 20}).json()
    assert state["status"] == "cancelled" and state["calls"] < 16 * 1000
    assert client.get(f"/api/jobs/{job['id']}/grid.png").status_code == 409
    nxt = finish(client, client.post("/api/sample", json={"run": rid, "n": 2, "options": {"steps": 2}}))
    assert nxt["status"] == "done"


def test_a_full_queue_answers_busy_in_one_line(client):
    rid = client.ids["diffusion"]
    slow = {"run": rid, "n": 16, "options": {"steps": 1000}}
    first = client.post("/api/sample", json=slow).json()
    for _ in range(200):  # the worker has taken the first job: the queue holds the next max_queue
        if client.get(f"/api/jobs/{first['id']}", params={"wait": 0.05}).json()["status"] == "running":
            break
    waiting = [client.post("/api/sample", json=slow) for _ in range(LIMITS.max_queue)]
    assert all(r.status_code == 202 for r in waiting)
    assert waiting[-1].json()["queue_position"] == LIMITS.max_queue
    busy = client.post("/api/sample", json=slow)
    assert busy.status_code == 429 and busy.headers["Retry-After"] == "1"
    assert busy.json()["error"].startswith("busy:") and "\n" not in busy.json()["error"]
    other = finish(client, client.post("/api/sample", json={"run": client.ids["gan"], "n": 2}))
    assert other["status"] == "done"  # one run's queue does not hold up another's
    for r in waiting:  # still queued (the first job runs for minutes): dropped at once
        assert client.delete(f"/api/jobs/{r.json()['id']}").json()["status"] == "cancelled"
    client.delete(f"/api/jobs/{first['id']}")
    assert client.get(f"/api/jobs/{first['id']}", params={"wait": 20}).json()["status"] == "cancelled"
    still_serving(client)


def test_a_failing_job_reports_one_line_and_the_server_goes_on(client):
    job = finish(client, client.post("/api/sample", json={"run": client.ids["vae"], "n": 2}))  # no labels
    assert job["status"] == "error" and "class-conditional" in job["error"] and "\n" not in job["error"]
    still_serving(client)


def _text_as_png():
    return base64.b64encode(b"this is a text file, named like a picture\n" * 4).decode()


def _truncated_png():
    raw = base64.b64decode(png_b64(np.random.default_rng(0).integers(0, 256, (16, 16), dtype=np.uint8)))
    return base64.b64encode(raw[: len(raw) // 2]).decode()


def _cmyk_jpeg():
    buf = io.BytesIO()
    Image.new("CMYK", (16, 16), (0, 50, 100, 0)).save(buf, format="JPEG")
    return base64.b64encode(buf.getvalue()).decode()


def _noise(size):
    return png_b64(np.random.default_rng(1).integers(0, 256, (size, size), dtype=np.uint8))


def _complete(**kw):
    req = {"run": VAE, "image": {"data": _noise(16)}, "preset": "keep-top-half", "labels": [1],
           "options": {"iterations": 1}}
    req.update(kw)
    return ("post", "/api/complete", req)


VAE, GAN, DIFFUSION = 0, 1, 3  # the order tiny_runs trains them in (checked in the test)
BAD = {
    "oversized upload": (_complete(image={"data": _noise(200)}), 413, "limit of 20000"),
    "request body too large": (("post", "/api/complete", {"run": VAE, "image": {"data": "A" * 200_000}}), 413,
                               "request body"),
    "text file named .png": (_complete(image={"data": _text_as_png()}), 400, "not an image"),
    "truncated png": (_complete(image={"data": _truncated_png()}), 400, "truncated"),
    "wrong-size image": (_complete(image={"data": _noise(20)}), 400, "16x16"),
    "too many pixels": (_complete(image={"data": _noise(80)}, resize=True), 413, "pixels"),
    "cmyk jpeg": (_complete(image={"data": _cmyk_jpeg()}), 400, "mode CMYK"),
    "not base64": (_complete(image={"data": "%%%"}), 400, "base64"),
    "wrong-size mask": (_complete(preset=None, mask=_noise(8)), 400, "mask is 8x8"),
    "mask and preset": (_complete(mask=_noise(16)), 400, "exactly one of mask"),
    "unknown preset": (_complete(preset="keep-everything"), 400, "unknown mask preset"),
    "no image": (_complete(image={}), 400, "exactly one of data"),
    "test image out of range": (_complete(image={"test_index": 10_000}), 400, "does not exist"),
    "unknown run": (("post", "/api/sample", {"run": 99, "n": 2}), 404, "unknown run 99"),
    "negative seed": (("post", "/api/sample", {"run": GAN, "n": 2, "seed": -1}), 422, "seed"),
    "too many images": (("post", "/api/sample", {"run": GAN, "n": 17}), 400, "limit of 16"),
    "zero images": (("post", "/api/sample", {"run": GAN, "n": 0}), 422, "n"),
    "option the family does not take": (("post", "/api/sample", {"run": GAN, "options": {"steps": 5}}), 400,
                                        "does not take option 'steps'; it takes: truncation"),
    "option of the wrong type": (("post", "/api/sample", {"run": DIFFUSION, "options": {"steps": "many"}}), 400,
                                 "must be an int"),
    "sampler not offered": (("post", "/api/sample", {"run": DIFFUSION, "options": {"sampler": "magic"}}), 400,
                            "must be one of"),
    "too many steps": (("post", "/api/sample", {"run": DIFFUSION, "options": {"steps": 100_000}}), 400,
                       "limit of 1000"),
    "label out of range": (("post", "/api/sample", {"run": VAE, "n": 2, "labels": [12]}), 400, "0..9"),
    "labels for an unconditional model": (("post", "/api/sample", {"run": DIFFUSION, "labels": [1]}), 400,
                                          "not class-conditional"),
    "unknown field": (("post", "/api/sample", {"run": GAN, "steps": 5}), 422, "steps"),
    "too many frames": (("post", "/api/interpolate", {"run": GAN, "frames": 50}), 400, "frames = 50"),
    "unknown job": (("get", "/api/jobs/nope", None), 404, "unknown job"),
    "unknown test image run": (("get", "/api/runs/7/test-images/0", None), 404, "unknown run 7"),
    "unknown route": (("get", "/api/nothing", None), 404, "Not Found"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_input_gets_a_one_line_4xx_and_the_server_keeps_serving(client, case):
    assert (client.ids["vae"], client.ids["gan"], client.ids["diffusion"]) == (VAE, GAN, DIFFUSION)
    (method, path, body), status, words = BAD[case]
    r = client.post(path, json=body) if method == "post" else client.get(path)
    assert r.status_code == status, r.text
    msg = r.json()["error"]
    assert words in msg and "\n" not in msg and len(msg) < 400, msg
    still_serving(client)


def test_a_body_that_is_not_json_and_a_foreign_host(client):
    r = client.post("/api/sample", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "\n" not in r.json()["error"]
    r = client.get("/api/runs", headers={"Host": "attacker.example"})  # DNS rebinding from a web page
    assert r.status_code == 421 and "127.0.0.1" in r.json()["error"]
    still_serving(client)


def test_page_openapi_and_static_files_stay_on_the_machine(client):
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp
    schema = client.get("/openapi.json").json()
    for p in ("/api/sample", "/api/complete", "/api/restore", "/api/interpolate", "/api/jobs/{job_id}",
              "/api/runs", "/api/capabilities", "/api/jobs/{job_id}/grid.png", "/api/runs/{run_id}/samples/{name}"):
        assert p in schema["paths"], p
    assert client.get("/docs").status_code == 404  # FastAPI's docs page would load scripts from a CDN
    from imagegen.server.app import STATIC

    for f in STATIC.iterdir():  # nothing the page loads names another host
        text = f.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, f.name
        assert client.get(f"/static/{f.name}").status_code == 200


def test_cli_serve_checks_runs_and_warns_off_loopback(run_dirs, tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(["serve", tmp_path / "nothing-here"], capsys)
    assert code == 2 and "does not exist" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(["serve", empty], capsys)
    assert code == 2 and "no checkpoint" in err
    import uvicorn

    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.update(kw, app=app))  # do not block the test
    code, out, err = run_cli(["serve", run_dirs[0], run_dirs[0], "--device", "cpu"], capsys)
    assert code == 0 and started["host"] == "127.0.0.1" and started["port"] == 7860 and "warning" not in err
    assert out.count("run ") == 1 and "http://127.0.0.1:7860/" in out  # the same run given twice is served once
    code, out, err = run_cli(["serve", run_dirs[0], "--host", "0.0.0.0", "--port", "8123"], capsys)
    assert code == 0 and started["host"] == "0.0.0.0" and "warning: binding 0.0.0.0" in err
    code, _, err = run_cli(["serve", run_dirs[0], "--max-images", "0"], capsys)
    assert code == 2 and "--max-images" in err


def test_job_results_are_json_serialisable_and_forgotten_in_time(run_dirs):
    app = create_app(load_runs(run_dirs[1:2], device="cpu"), Limits(max_queue=64))
    with TestClient(app) as c:
        ids = [finish(c, c.post("/api/sample", json={"run": 0, "n": 1}))["id"] for _ in range(3)]
        app.state.jobs.keep_finished = 2
        finish(c, c.post("/api/sample", json={"run": 0, "n": 1}))
        assert c.get(f"/api/jobs/{ids[0]}").status_code == 404  # the oldest finished job was let go
        assert c.get(f"/api/jobs/{ids[2]}").status_code == 200
        json.dumps(c.get("/api/runs").json())
        assert torch.is_tensor(app.state.jobs.get(ids[2]).result["images"])
