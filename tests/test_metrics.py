"""Metrics pinned against independent computations: scipy, clean-fid, brute-force numpy, exact values."""

from __future__ import annotations

import math
import os
import sys
import urllib.error
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from imagegen.checkpoint import PartialRows, compute_rows
from imagegen.errors import ImagegenError
from imagegen.likelihood import summarize
from imagegen.metrics import cas as casm
from imagegen.metrics import classifier as clf
from imagegen.metrics import fid as fidm
from imagegen.metrics import prdc

SHARED_INCEPTION = Path("/work/shared/weights/inception-2015-12-05-features.pt")
SHARED_DATA = Path("/work/shared/data")


def gauss(n, d, seed, shift=0.0, scale=1.0):
    g = np.random.default_rng(seed)
    return g.normal(size=(n, d)) * scale + shift


class TinyNet(fidm.FeatureNet):
    """A seeded random feature net (avg-pool to 4x4, random projection, ReLU) for fast tests."""

    name, sha256, dim, resizer = "tiny", "tiny-sha", 16, "avg-pool 4x4"

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn(48, self.dim, generator=g) / 7

    def _forward(self, u8):
        x = u8.float() / 127.5 - 1
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return torch.relu(torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1) @ self.w)


# ---------------------------------------------------------------------------------------------- FID


def test_fid_of_a_set_with_itself_is_zero_and_fid_is_symmetric():
    a, b = gauss(400, 12, 0), gauss(300, 12, 1, shift=0.3, scale=1.2)
    assert abs(fidm.fid_from_features(a, a)) < 1e-9
    assert fidm.fid_from_features(a, b) == pytest.approx(fidm.fid_from_features(b, a), rel=1e-10)
    assert fidm.fid_from_features(a, b) > 0.5


def test_fid_equals_independent_scipy_sqrtm_computation():
    a, b = gauss(500, 10, 2), gauss(400, 10, 3, shift=0.5, scale=0.8)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert fidm.fid_from_features(a, b) == pytest.approx(expected, rel=1e-8)
    # closed form for diagonal Gaussians: |dmu|^2 + sum (sqrt(s1) - sqrt(s2))^2
    d1, d2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    got = fidm.frechet_distance(np.zeros(3), np.diag(d1), np.ones(3), np.diag(d2))
    assert got == pytest.approx(3 + ((np.sqrt(d1) - np.sqrt(d2)) ** 2).sum(), abs=1e-12)


def test_fid_matches_clean_fid_on_features_including_singular_covariances():
    from cleanfid.fid import fid_from_feats

    for n, d in ((300, 20), (30, 48)):  # the second has N < D: singular covariances
        a, b = gauss(n, d, 4).astype(np.float32), gauss(n, d, 5, shift=0.2).astype(np.float32)
        assert fidm.fid_from_features(a, b) == pytest.approx(fid_from_feats(a, b), abs=1e-3)


def test_pipeline_matches_clean_fid_on_image_folders(tmp_path):
    """Same PNG images, same (tiny) network: our uint8 -> clean resize -> (x-128)/128 path equals clean-fid's
    folder pipeline, grey images included, and so does the FID."""
    from cleanfid.fid import fid_from_feats, get_folder_features

    g = torch.Generator().manual_seed(0)
    proj = torch.randn(3 * 8 * 8, 6, generator=g) / 5  # 6-d: 10 images give full-rank covariances

    class TinyNormalised(torch.nn.Module):  # stands in for Inception: normalised 299x299 in, features out
        def forward(self, x):
            return torch.nn.functional.adaptive_avg_pool2d(x, 8).flatten(1) @ proj

    ours = fidm.InceptionFeatures.__new__(fidm.InceptionFeatures)
    ours.net, ours.device, ours.path = TinyNormalised(), torch.device("cpu"), "tiny"
    ours._plain = ours._fast = ours.net
    ours.dim = 6
    sets = []
    for k, (shape, mode) in enumerate((((10, 1, 12, 12), "L"), ((10, 3, 12, 12), "RGB"))):
        u8 = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
        folder = tmp_path / f"set{k}"
        folder.mkdir()
        for i, img in enumerate(u8):
            arr = img[0].numpy() if mode == "L" else img.permute(1, 2, 0).numpy()
            Image.fromarray(arr, mode).save(folder / f"{i:03d}.png")
        theirs = get_folder_features(str(folder), model=lambda x: TinyNormalised()((x - 128) / 128),
                                     num_workers=0, batch_size=4, device=torch.device("cpu"), mode="clean",
                                     verbose=False)
        mine = ours.features(u8, batch_size=3, progress=False).numpy()
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-5)
        sets.append((mine, theirs))
    assert fidm.fid_from_features(sets[0][0], sets[1][0]) == pytest.approx(fid_from_feats(sets[0][1], sets[1][1]),
                                                                           abs=1e-3)


# ---------------------------------------------------------------------------------------------- KID


def test_kid_matches_clean_fid_when_the_subset_is_the_whole_set():
    from cleanfid.fid import kernel_distance

    a, b = gauss(60, 8, 6), gauss(60, 8, 7, shift=0.4)
    mean, std = fidm.kid(a, b, subsets=3, subset_size=1000)
    assert std == pytest.approx(0, abs=1e-12)  # every subset is a permutation of the full sets
    assert mean == pytest.approx(kernel_distance(a, b, num_subsets=1), rel=1e-6)


def test_kid_is_unbiased_on_two_samples_of_one_gaussian():
    # the unbiased MMD^2 averages to 0 over independent small samples; the biased one would sit near
    # 2 (E k(x,x) - E k(x,y)) / m > 0
    vals = [fidm.kid(gauss(40, 6, 100 + i), gauss(40, 6, 500 + i), subsets=1)[0] for i in range(150)]
    mean, se = np.mean(vals), np.std(vals) / math.sqrt(len(vals))
    assert abs(mean) < 3 * se
    shifted = fidm.kid(gauss(200, 6, 1), gauss(200, 6, 2, shift=1.0), subsets=5, subset_size=100)[0]
    assert shifted > 20 * se


# ---------------------------------------------------------------------------------------------- PR / DC


def _brute_prdc(real, fake, k):
    d_rr = np.linalg.norm(real[:, None] - real[None], axis=2)
    d_ff = np.linalg.norm(fake[:, None] - fake[None], axis=2)
    d_rf = np.linalg.norm(real[:, None] - fake[None], axis=2)  # (N, M)
    r_real = np.sort(d_rr, axis=1)[:, k]  # column 0 is the point itself
    r_fake = np.sort(d_ff, axis=1)[:, k]
    precision = (d_rf <= r_real[:, None]).any(0).mean()
    recall = (d_rf <= r_fake[None, :]).any(1).mean()
    density = (d_rf <= r_real[:, None]).sum(0).mean() / k
    coverage = (d_rf.min(1) <= r_real).mean()
    return precision, recall, density, coverage


def test_precision_recall_density_coverage_equal_brute_force():
    real = gauss(150, 5, 8).astype(np.float32)
    fake = gauss(120, 5, 9, shift=0.5, scale=0.7).astype(np.float32)
    p, r = prdc.precision_recall(real, fake, k=3)
    d, c = prdc.density_coverage(real, fake, k=5)
    bp, br, _, _ = _brute_prdc(real, fake, 3)
    _, _, bd, bc = _brute_prdc(real, fake, 5)
    assert (p, r) == pytest.approx((bp, br), abs=1e-6)
    assert (d, c) == pytest.approx((bd, bc), abs=1e-6)
    assert 0 < p < 1 and 0 < r < 1


def test_precision_recall_of_a_set_against_itself_are_one_and_disjoint_sets_zero():
    a = gauss(200, 8, 10)
    assert prdc.precision_recall(a, a) == (1.0, 1.0)
    assert prdc.density_coverage(a, a)[1] == 1.0
    far = gauss(200, 8, 11, shift=100.0)
    assert prdc.precision_recall(a, far) == (0.0, 0.0)
    assert prdc.density_coverage(a, far) == (0.0, 0.0)


# ---------------------------------------------------------------------------------------------- cache


FIELDS = {"format": 1, "dataset": "mnist", "split": "test", "n": 100, "feature_net": "tiny",
          "feature_net_sha256": "abc", "resizer": "r", "image_size": 28, "channels": 1}


def test_reference_cache_hits_on_equal_fields_and_misses_when_any_field_changes():
    calls = []

    def compute(partial):
        calls.append(1)
        return torch.from_numpy(gauss(30, 4, len(calls))).float()

    f1, mu1, _, path, hit = fidm.cached_reference(FIELDS, compute)
    assert not hit and path.is_file() and len(calls) == 1
    f2, mu2, _, _, hit = fidm.cached_reference(dict(FIELDS), compute)
    assert hit and len(calls) == 1 and torch.equal(f1, f2) and np.array_equal(mu1, mu2)
    keys = {fidm.cache_key(FIELDS)}
    for field, new in (("dataset", "fashion-mnist"), ("split", "train"), ("n", 101),
                       ("feature_net_sha256", "abd"), ("resizer", "other"), ("image_size", 32)):
        changed = dict(FIELDS, **{field: new})
        keys.add(fidm.cache_key(changed))
        before = len(calls)
        _, _, _, _, hit = fidm.cached_reference(changed, compute)
        assert not hit and len(calls) == before + 1, field
    assert len(keys) == 7
    # a refresh recomputes even when cached
    _, _, _, _, hit = fidm.cached_reference(FIELDS, compute, refresh=True)
    assert not hit


def test_torn_cache_file_is_recomputed():
    path = fidm.reference_cache_path(FIELDS)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a safetensors file")
    _, _, _, _, hit = fidm.cached_reference(FIELDS, lambda partial: torch.randn(10, 4))
    assert not hit


def test_interrupted_reference_features_continue_where_they_stopped(capfd):
    fields = dict(FIELDS, split="resume-test", n=50)
    u8 = torch.randint(0, 256, (50, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    whole = TinyNet().features(u8, batch_size=8, progress=False)
    seen = []

    class Counting(TinyNet):
        def __init__(self, stop_at=None):
            super().__init__()
            self.stop_at = stop_at

        def _forward(self, x):
            if len(seen) == self.stop_at:
                raise KeyboardInterrupt  # Ctrl-C (or a killed job) after three batches
            seen.append(x.shape[0])
            return super()._forward(x)

    with pytest.raises(KeyboardInterrupt):
        fidm.cached_reference(fields, lambda p: Counting(3).features(u8, 8, progress=False, resume=p))
    partial = fidm.reference_cache_path(fields).with_name(fidm.reference_cache_path(fields).stem + ".partial")
    assert partial.is_dir() and "stopped by Ctrl-C: 24 of 50 feature rows kept" in capfd.readouterr().err
    seen.clear()
    feats, _, _, path, hit = fidm.cached_reference(fields, lambda p: Counting().features(u8, 5, progress=False,
                                                                                        resume=p))
    assert not hit and sum(seen) == 26  # only the rows the first call had not computed (with a new batch size)
    assert "resuming: 24 of 50 feature rows" in capfd.readouterr().err
    torch.testing.assert_close(feats, whole)
    assert path.is_file() and not partial.exists()  # the finished cache replaces the partial rows


def test_partial_rows_are_shards_of_new_rows_that_resume_only_whole_and_same_tagged(tmp_path):
    rows = torch.arange(40.0).view(20, 2)
    keep = PartialRows(tmp_path / "p", "tag-a", every_s=0.0)  # saved after every chunk
    compute_rows(20, 8, lambda start: rows[start:start + 8], keep, progress=False)
    assert sorted(p.name for p in keep.path.iterdir()) == ["rows-000000000.safetensors", "rows-000000008.safetensors",
                                                           "rows-000000016.safetensors"]  # each row written once
    torch.testing.assert_close(keep.load(20, 8), rows)
    assert keep.resumed_rows == 20
    assert PartialRows(tmp_path / "p", "tag-b").load(20) is None  # rows of other images or another network
    assert keep.load(19) is None  # more rows than asked for
    keep.save(rows[:5], 0)  # a new start removes the later shards: they belonged to another computation
    assert keep.load(20, 8) is None and keep.load(20, 5).shape == (5, 2)  # part of a seeded chunk: no resume
    (keep.path / "rows-000000005.safetensors").write_bytes(b"torn")
    assert keep.load(20).shape == (5, 2)  # a torn shard ends what is resumed

    def fails(start):
        if start == 10:
            raise RuntimeError("CUDA out of memory")
        return rows[start:start + 5]

    keep.discard()
    with pytest.raises(RuntimeError, match="out of memory"):
        compute_rows(20, 5, fails, PartialRows(tmp_path / "p", "tag-a", every_s=1e9), progress=False)
    torch.testing.assert_close(keep.load(20), rows[:10])  # an error keeps what was made before it


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_signal_stops_row_computation_after_the_batch_and_keeps_the_rows(signame, tmp_path, capfd,
                                                                          interactive_signals):
    import os
    import signal

    sig = getattr(signal, signame)
    rows = torch.arange(40.0).view(20, 2)

    def make(start):  # a scheduler's SIGTERM (or Ctrl-C) arrives while the third batch is computed
        if start == 10:
            os.kill(os.getpid(), sig)
        return rows[start:start + 5]

    before = signal.getsignal(sig)
    keep = PartialRows(tmp_path / "p", "tag", every_s=1e9)
    with pytest.raises(KeyboardInterrupt):
        compute_rows(20, 5, make, keep, progress=False)
    assert signal.getsignal(sig) is before  # the handler is gone again
    assert f"stopped by {signame}: 15 of 20 rows kept" in capfd.readouterr().err  # the batch in progress too
    torch.testing.assert_close(keep.load(20), rows[:15])
    resumed = compute_rows(20, 5, lambda start: rows[start:start + 5], keep, progress=False)
    torch.testing.assert_close(resumed, rows)


def test_a_signal_the_process_ignores_stays_ignored():
    import signal

    from imagegen.interrupt import StopRequest

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a job started with '&' by a script
    try:
        with StopRequest("stopping"):
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # still handled
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_partial_files_nobody_resumed_for_weeks_are_pruned():
    import os
    import time

    from imagegen.checkpoint import PARTIAL_MAX_AGE_DAYS, partial_rows

    stale, fresh = partial_rows("stale run"), partial_rows("fresh run")
    for p in (stale, fresh):
        p.save(torch.zeros(2, 3), 0)
    old = time.time() - (PARTIAL_MAX_AGE_DAYS + 1) * 86400
    os.utime(stale.path, (old, old))
    partial_rows("a third run")
    assert not stale.path.exists() and fresh.path.is_dir()


# ---------------------------------------------------------------------------------------------- Inception weights


def test_missing_inception_network_offline_is_one_clear_error(monkeypatch):
    monkeypatch.delenv("IMAGEGEN_INCEPTION", raising=False)

    def offline(target):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(fidm, "_download_inception", offline)
    with pytest.raises(ImagegenError) as e:
        fidm.resolve_inception_weights(None)
    msg = str(e.value)
    assert "--inception-weights" in msg and "IMAGEGEN_INCEPTION" in msg and "\n" not in msg
    with pytest.raises(ImagegenError, match="not a file"):
        fidm.resolve_inception_weights("/nonexistent/inception.pt")
    monkeypatch.setenv("IMAGEGEN_INCEPTION", "/nonexistent/x.pt")
    with pytest.raises(ImagegenError, match="IMAGEGEN_INCEPTION"):
        fidm.resolve_inception_weights(None)


def test_real_inception_features_are_finite_2048(monkeypatch):
    path = os.environ.get("IMAGEGEN_INCEPTION") or (str(SHARED_INCEPTION) if SHARED_INCEPTION.is_file() else None)
    if path is None or not Path(path).is_file():
        pytest.skip("no Inception weights: set IMAGEGEN_INCEPTION or provide " + str(SHARED_INCEPTION))
    net = fidm.InceptionFeatures(path)
    assert len(net.sha256) == 64
    u8 = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    f = net.features(u8, progress=False)
    assert f.shape == (3, 2048) and torch.isfinite(f).all() and (f >= 0).all()  # pool after ReLU
    plain = net._forward(u8, fast=False)  # the frozen CPU graph computes the archive's own features
    torch.testing.assert_close(f, plain, rtol=1e-4, atol=1e-4)
    assert net.protocol()["feature_net_sha256"] == fidm.file_sha256(path)


def _tiny_inception_archive(path: Path, seed: int) -> Path:
    """A TorchScript file with the Inception archive's contract ((B, 3, 299, 299) normalised in, (B, 2048) out),
    small enough to export and run in a second."""
    torch.manual_seed(seed)
    body = torch.nn.Sequential(torch.nn.AvgPool2d(13), torch.nn.Conv2d(3, 16, 3, stride=2), torch.nn.ReLU(),
                               torch.nn.Conv2d(16, 2048, 1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.* are deprecated, still what these archives are
        torch.jit.save(torch.jit.script(body.eval()), str(path))
    return path


def test_onnxruntime_runs_the_inception_archive_as_torch_does(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'imagegen[onnx]')")
    monkeypatch.delenv(fidm.RUNTIME_ENV, raising=False)
    path = _tiny_inception_archive(tmp_path / "tiny.pt", seed=0)
    u8 = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    by_torch = fidm.InceptionFeatures(path, runtime="torch")
    by_ort = fidm.InceptionFeatures(path)  # auto: onnxruntime on a CPU
    assert by_torch.runtime.startswith("torch") and by_ort.runtime.startswith("onnxruntime")
    want = by_torch.features(u8, batch_size=2, progress=False)
    got = by_ort.features(u8, batch_size=2, progress=False)
    assert want.abs().max() > 0
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    monkeypatch.setenv(fidm.RUNTIME_ENV, "torch")  # the environment picks the runtime too
    assert fidm.InceptionFeatures(path).runtime.startswith("torch")

    # a session whose features disagree with torch's (another network's) is refused at load
    other = fidm._onnxruntime_session(fidm.InceptionFeatures(_tiny_inception_archive(tmp_path / "other.pt", seed=1),
                                                             runtime="torch")._plain)
    monkeypatch.setattr(fidm, "_onnxruntime_session", lambda module: other)
    monkeypatch.delenv(fidm.RUNTIME_ENV)
    assert fidm.InceptionFeatures(path).runtime.startswith("torch")  # auto keeps torch
    with pytest.raises(ImagegenError, match="differ from torch"):
        fidm.InceptionFeatures(path, runtime="onnxruntime")


def test_inception_runtime_choice_errors_are_one_clear_line(tmp_path, monkeypatch):
    path = _tiny_inception_archive(tmp_path / "tiny.pt", seed=0)
    monkeypatch.setenv(fidm.RUNTIME_ENV, "tensorrt")
    with pytest.raises(ImagegenError) as e:
        fidm.InceptionFeatures(path)
    assert fidm.RUNTIME_ENV in str(e.value) and "auto, torch, onnxruntime" in str(e.value)
    monkeypatch.delenv(fidm.RUNTIME_ENV)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # not installed: import raises ImportError
    assert fidm.InceptionFeatures(path).runtime.startswith("torch")  # auto falls back
    with pytest.raises(ImagegenError) as e:
        fidm.InceptionFeatures(path, runtime="onnxruntime")
    msg = str(e.value)
    assert "imagegen[onnx]" in msg and f"{fidm.RUNTIME_ENV}=torch" in msg and "\n" not in msg


# ---------------------------------------------------------------------------------------------- classifier


def test_classifier_score_extremes_and_class_accuracy():
    k = 10
    assert clf.classifier_score(torch.zeros(50, k)) == pytest.approx(1.0)
    confident = torch.full((100, k), -30.0)
    confident[torch.arange(100), torch.arange(100) % k] = 30.0
    assert clf.classifier_score(confident) == pytest.approx(k, rel=1e-6)
    one_class = torch.full((100, k), -30.0)
    one_class[:, 3] = 30.0
    assert clf.classifier_score(one_class) == pytest.approx(1.0, abs=1e-6)
    assert clf.class_accuracy(confident, torch.arange(100) % k) == 1.0
    assert clf.class_accuracy(confident, (torch.arange(100) + 1) % k) == 0.0


def _two_class_images(n, seed):
    """Class 0: bright top half; class 1: bright bottom half; noisy. (N, 1, 14, 14) uint8 + labels."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.rand(n, 1, 14, 14, generator=g) * 60
    x[y == 0, :, :7] += 150
    x[y == 1, :, 7:] += 150
    return x.clamp(0, 255).to(torch.uint8), y


@pytest.mark.parametrize("batch_norm", [False, True])
def test_classifier_fit_save_load_roundtrip(tmp_path, batch_norm):
    x, y = _two_class_images(96, 0)
    cfg = clf.ClassifierTrainConfig(epochs=2, batch_size=32, width=8, seed=0, batch_norm=batch_norm)
    model = clf.fit(x, y, 2, cfg, progress=False)
    xt, yt = _two_class_images(64, 1)
    assert clf.accuracy(model, xt, yt) > 0.9
    # save as train_classifier does and load through load_classifier
    from imagegen.checkpoint import atomic_save_tensors

    meta = {"dataset": "mnist", "num_classes": 2, "width": 8, "test_accuracy": 1.0, "batch_norm": batch_norm}
    path = tmp_path / "c.safetensors"
    atomic_save_tensors(model.state_dict(), path, metadata={"imagegen_classifier": __import__("json").dumps(meta)})
    net = clf.load_classifier("mnist", path)
    feats, logits = net.features_and_logits(xt)
    assert feats.shape == (64, clf.FEATURE_DIM) and logits.shape == (64, 2)
    with torch.no_grad():  # the loaded net (eval mode, BN running statistics) computes the trained model's features
        torch.testing.assert_close(feats, model.eval().features(clf.to_classifier_input(xt)))
    assert clf.class_accuracy(logits, yt) > 0.9
    assert net.protocol()["feature_net_sha256"] == fidm.file_sha256(path)
    with pytest.raises(ImagegenError, match="no classifier"):
        clf.load_classifier("cifar10")


def test_cas_and_augmentation_gain_on_synthetic_data():
    x_real, y_real = _two_class_images(200, 2)
    x_test, y_test = _two_class_images(100, 3)
    good_x, good_y = _two_class_images(64, 4)
    cfg = clf.ClassifierTrainConfig(epochs=2, batch_size=32, width=8)
    res = casm.classification_accuracy_score(good_x, good_y, x_real, y_real, x_test, y_test, 2, cfg,
                                             progress=False)
    assert res["cas"] > 0.9 and res["cas_real_baseline"] > 0.9
    # generated labels swapped: a classifier trained on them is wrong on real data
    bad = casm.classification_accuracy_score(good_x, 1 - good_y, x_real, y_real, x_test, y_test, 2, cfg,
                                             progress=False)
    assert bad["cas"] < 0.1
    aug = casm.augmentation_gain(good_x, good_y, x_real, y_real, x_test, y_test, 2, n_real=16, cfg=cfg,
                                 progress=False)
    assert aug["aug_real_images"] == 16 and aug["aug_generated_images"] == 64
    assert aug["aug_gain"] == pytest.approx(aug["aug_real_plus_generated"] - aug["aug_real_only"])


# the shipped weights meet the targets (docs/evaluation.md gives the measured accuracies)
@pytest.mark.parametrize("dataset,minimum", [("mnist", 0.993), ("fashion-mnist", 0.93)])  # the targets
def test_packaged_classifier_accuracy(dataset, minimum):
    path = clf.packaged_weights(dataset)
    if not path.is_file():
        pytest.skip(f"{path} not trained yet (imagegen train-classifier --data {dataset})")
    import json

    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["imagegen_classifier"])
    assert meta["test_accuracy"] >= minimum
    folder = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}[dataset]
    if not (SHARED_DATA / folder / "raw").is_dir():
        pytest.skip(f"{SHARED_DATA / folder} absent: cannot re-check the accuracy")
    from imagegen.config import DataConfig
    from imagegen.data import load_dataset

    test = load_dataset(DataConfig(name=dataset, root=str(SHARED_DATA)), "test")
    net = clf.load_classifier(dataset)
    acc = clf.accuracy(net.model, test.images[:1000], test.labels[:1000])
    assert acc >= minimum - 0.01  # 1,000 images: a little noise around the full-set number


# ---------------------------------------------------------------------------------------------- NLL


def test_uniform_model_has_8_bits_per_dim():
    dims = 16
    res = summarize(torch.full((10,), dims * math.log(256.0), dtype=torch.float64), dims)
    assert res["bits_per_dim"] == pytest.approx(8.0, abs=1e-12) and res["n"] == 10
    assert res["nats_sem"] == pytest.approx(0.0)

