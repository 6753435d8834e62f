"""Inception features, Gaussian statistics, FID and KID.

Feature extraction follows clean-fid's "clean" protocol (Parmar, Zhang & Zhu, "On Aliased Resizing and
Surprising Subtleties in GAN Evaluation", CVPR 2022), using clean-fid's own resizer and weight download:

* images are uint8 (generated images are quantised with :func:`imagegen.data.to_uint8`, exactly as the
  real ones were stored), grey images are repeated to 3 channels;
* each channel is resized to 299x299 by PIL's bicubic filter on float32 values (no re-quantisation);
* the Inception-v3 "2015-12-05" network (the TensorFlow FID graph, as ported by NVIDIA for StyleGAN2-ADA)
  sees ``(x - 128) / 128`` and returns the 2048-d pool features.

Statistics are float64. FID (Heusel et al. 2017, eq. 6) uses a symmetric eigen-decomposition for the
matrix square root; KID (Binkowski et al. 2018) is the unbiased MMD^2 estimate with the cubic polynomial
kernel, averaged over random subsets.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..cache import file_sha256
from ..checkpoint import PartialRows, compute_rows
from ..errors import ImagegenError

INCEPTION_NAME = "inception-v3-2015-12-05"
INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_DIM = 2048
RUNTIME_ENV = "IMAGEGEN_INCEPTION_RUNTIME"
RUNTIMES = ("auto", "torch", "onnxruntime")
CLEAN_RESIZER = "clean-fid 'clean': PIL bicubic to 299x299 on float32 per channel, no re-quantisation"


# ---------------------------------------------------------------------------------------------- feature nets


class FeatureNet:
    """A feature network for distribution metrics: uint8 images in, (B, D) float32 features out.

    Subclasses set ``name``, ``sha256`` (of the weights), ``dim``, ``resizer`` and implement
    ``_forward(u8) -> (B, D)``; ``features`` streams a whole set in batches with a progress bar.
    """

    name: str = "feature-net"
    sha256: str = ""
    dim: int = 0
    resizer: str = ""
    device: torch.device = torch.device("cpu")
    runtime: str = "torch"  # what runs the network; recorded beside each number, not part of the cache key

    def protocol(self) -> dict:
        return {"feature_net": self.name, "feature_net_sha256": self.sha256, "feature_dim": self.dim,
                "resizer": self.resizer}

    def _forward(self, u8: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) uint8 -> (B, D)
        raise NotImplementedError

    @torch.no_grad()
    def features(self, u8: torch.Tensor, batch_size: int = 64, desc: str | None = None,
                 progress: bool = True, resume: PartialRows | None = None) -> torch.Tensor:
        """(N, C, H, W) uint8 -> (N, D) float32 on the CPU, ``batch_size`` images at a time. With ``resume``
        the rows so far are kept in its file, and a call stopped part-way continues where it stopped."""
        if u8.dtype != torch.uint8:
            raise TypeError(f"feature nets take uint8 images (quantise with imagegen.data.to_uint8), got {u8.dtype}")
        feats = compute_rows(u8.shape[0], batch_size,
                             lambda start: self._forward(u8[start:start + batch_size]).float().cpu(), resume,
                             desc or f"features ({self.name})", progress, any_start=True)
        return torch.zeros(0, self.dim) if feats is None else feats


def _rgb_hwc(u8: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) uint8 with C in {1, 3} -> (B, H, W, 3) uint8 numpy; grey is repeated to 3 channels,
    as PIL's ``convert('RGB')`` does when clean-fid reads a grey file."""
    if u8.shape[1] == 1:
        u8 = u8.expand(-1, 3, -1, -1)
    elif u8.shape[1] != 3:
        raise ImagegenError(f"images must have 1 or 3 channels for Inception features, got {u8.shape[1]}")
    return u8.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def clean_resize(u8: torch.Tensor, size: int = 299) -> torch.Tensor:
    """(B, C, H, W) uint8 -> (B, 3, size, size) float32 in [0, 255] by clean-fid's own PIL-bicubic resizer."""
    import warnings

    with warnings.catch_warnings():  # Pillow >= 11 deprecates the 'mode' argument clean-fid passes
        warnings.simplefilter("ignore", DeprecationWarning)
        from cleanfid.resize import make_resizer

        resize = make_resizer("PIL", False, "bicubic", (size, size))
        hwc = _rgb_hwc(u8)
        out = np.stack([resize(img) for img in hwc])  # (B, size, size, 3) float32
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


class InceptionFeatures(FeatureNet):
    """The Inception-v3 2015-12-05 FID network (TorchScript) behind clean-fid's clean resize.

    Accepts both serialisations in circulation: NVIDIA's ``inception-2015-12-05.pt`` (what clean-fid
    downloads; its ``layers`` sub-module takes normalised 299x299 input) and a features-only archive whose
    ``forward`` takes the normalised input directly (e.g. the offline copy in /work/shared/weights).
    ``runtime`` (else ``$IMAGEGEN_INCEPTION_RUNTIME``, else "auto"): on a CPU, "auto" runs the network in ONNX
    Runtime when that is installed and agrees with torch, "torch" never does, "onnxruntime" must.
    """

    name = INCEPTION_NAME
    dim = INCEPTION_DIM
    resizer = CLEAN_RESIZER

    _ort = None  # an onnxruntime.InferenceSession when that runs the network (CPU), else None

    def __init__(self, weights: str | Path | None = None, device: str | torch.device | None = None,
                 download: bool = True, runtime: str | None = None):
        self.path = resolve_inception_weights(weights, download=download)
        self.sha256 = file_sha256(self.path)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        try:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated, still supported
                net = torch.jit.load(str(self.path), map_location=self.device)
        except Exception as e:  # torch raises RuntimeError/ValueError for a non-TorchScript file
            raise ImagegenError(f"{self.path} is not a loadable TorchScript Inception network ({e}); pass "
                                f"--inception-weights PATH to a valid file or unset IMAGEGEN_INCEPTION") from None
        self.net = net.eval()
        layers = getattr(net, "layers", None)
        self._plain = layers if layers is not None else self.net  # normalised 299x299 input -> features
        self._fast = _inference_module(self._plain) if self.device.type == "cpu" else self._plain
        self.runtime = f"torch {torch.__version__}"
        choice = runtime or os.environ.get(RUNTIME_ENV) or "auto"
        if choice not in RUNTIMES:
            raise ImagegenError(f"unknown Inception runtime {choice!r} (from {'runtime' if runtime else RUNTIME_ENV}); "
                                f"use one of {', '.join(RUNTIMES)}")
        if self.device.type == "cpu" and choice != "torch":
            self._use_onnxruntime(required=choice == "onnxruntime")

    def _use_onnxruntime(self, required: bool) -> None:
        """Run the network in ONNX Runtime: 1.8x the frozen torch graph's speed on a 2-core CPU
        (docs/evaluation.md). The export is checked against torch on fixed inputs; any failure or mismatch
        keeps torch (or, when onnxruntime was asked for by name, is an error)."""
        try:
            session = _onnxruntime_session(self._plain)
            x = torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 2 - 1
            with torch.no_grad():
                want = self._torch(x).reshape(2, -1)
            got = torch.from_numpy(session.run(None, {"x": x.numpy()})[0]).reshape(2, -1)
            gap = (got - want).abs().max().item() if got.shape == want.shape else float("inf")
            if not gap <= 1e-3 * max(1.0, want.abs().max().item()):
                raise RuntimeError(f"its features differ from torch's by {gap:.3g}")
        except Exception as e:
            if required:
                why = type(e).__name__ + (f": {str(e).splitlines()[0]}" if str(e).strip() else "")
                raise ImagegenError(f"cannot run the Inception network in ONNX Runtime ({why}); install it with "
                                    f"pip install 'imagegen[onnx]' or set {RUNTIME_ENV}=torch") from None
            return
        import onnxruntime

        self._ort = session
        self.runtime = f"onnxruntime {onnxruntime.__version__} (CPU)"

    def _torch(self, x: torch.Tensor, fast: bool = True) -> torch.Tensor:
        """Normalised 299x299 input through torch: the frozen graph (``fast``) or the archive as loaded."""
        # channels_last + a frozen oneDNN graph: 1.6x faster on a 2-core CPU, same features to ~1e-5
        return (self._fast if fast else self._plain)(x.contiguous(memory_format=torch.channels_last))

    def _forward(self, u8: torch.Tensor, fast: bool = True) -> torch.Tensor:
        x = clean_resize(u8).to(self.device)  # (B, 3, 299, 299) in [0, 255]
        x = (x - 128.0) / 128.0  # the TF graph's own normalisation
        if fast and self._ort is not None:
            feats = torch.from_numpy(self._ort.run(None, {"x": x.numpy()})[0])
        else:
            feats = self._torch(x, fast)
        feats = feats.reshape(x.shape[0], -1)
        if feats.shape[1] != self.dim:
            raise ImagegenError(f"{self.path} returns {feats.shape[1]}-d features, not the 2048-d Inception pool "
                                f"features; point --inception-weights at the FID Inception network")
        return feats


def _inference_module(module: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """Freeze a TorchScript module and fold it for CPU inference; the module itself when that fails."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # jit.freeze is deprecated, still supported
            return torch.jit.optimize_for_inference(torch.jit.freeze(module.eval()))
    except Exception:  # an archive layout freeze cannot handle: run it as it is
        return module


def _onnxruntime_session(module: torch.jit.ScriptModule):
    """An ONNX Runtime CPU session of a TorchScript network taking (B, 3, 299, 299) input named "x". The export
    goes to memory (about a second); ONNX Runtime uses as many threads as torch does."""
    import io
    import warnings

    import onnxruntime

    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter is the one that takes a ScriptModule
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, 3, 299, 299),), buf, dynamo=False, input_names=["x"],
                          output_names=["features"], dynamic_axes={"x": {0: "batch"}, "features": {0: "batch"}},
                          opset_version=17)
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only
    return onnxruntime.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])


def inception_cache_path() -> Path:
    from ..data import cache_dir

    return cache_dir() / "weights" / INCEPTION_FILE


def _download_inception(target: Path) -> None:
    """Fetch the network the way clean-fid does (its URL and downloader), into a temp file first so an
    interrupted download never leaves a torn file at ``target``."""
    from cleanfid.downloads_helper import check_download_inception

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".inception-", dir=target.parent))
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(60)  # an unreachable host fails in a minute instead of hanging
    try:
        got = check_download_inception(fpath=str(tmp))
        os.replace(got, target)
    finally:
        socket.setdefaulttimeout(old)
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_inception_weights(explicit: str | Path | None = None, download: bool = True) -> Path:
    """Where the Inception network comes from: an explicit path, $IMAGEGEN_INCEPTION, the cache, or
    clean-fid's download (networked machines)."""
    for source, value in (("--inception-weights", explicit), ("IMAGEGEN_INCEPTION", os.environ.get(
            "IMAGEGEN_INCEPTION"))):
        if value:
            p = Path(value).expanduser()
            if not p.is_file():
                raise ImagegenError(f"{source} points at {p}, which is not a file; give the path of the "
                                    f"Inception TorchScript file ({INCEPTION_FILE})")
            return p
    cached = inception_cache_path()
    if cached.is_file():
        return cached
    from cleanfid.downloads_helper import inception_url

    if download:
        try:
            _download_inception(cached)
            return cached
        except Exception as e:  # URLError, timeouts, HTTP errors, disk errors: all mean "not available"
            reason = f"download from {inception_url} failed ({type(e).__name__}: {e})"
    else:
        reason = "downloading is disabled"
    raise ImagegenError(f"the Inception FID network is not available: {reason}; pass --inception-weights PATH "
                        f"or set IMAGEGEN_INCEPTION=PATH to a local copy of {INCEPTION_FILE}")


# ---------------------------------------------------------------------------------------------- statistics


def feature_stats(feats: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features -> mean (D,) and unbiased covariance (D, D), both float64."""
    f = np.asarray(feats.cpu().numpy() if torch.is_tensor(feats) else feats, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ImagegenError(f"need at least 2 feature vectors for statistics, got shape {tuple(f.shape)}")
    mu = f.mean(0)
    sigma = np.cov(f, rowvar=False)
    return mu, np.atleast_2d(sigma)


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negative round-off eigenvalues -> 0)."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (Dowson & Landau 1982; FID eq. 6):

        d^2 = |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2)).

    sigma1 sigma2 is similar to the symmetric PSD matrix S = sigma1^(1/2) sigma2 sigma1^(1/2), so
    tr((sigma1 sigma2)^(1/2)) = sum_i sqrt(lambda_i(S)). Two symmetric eigen-decompositions are stable for
    singular covariances (N < D) where a general sqrtm needs an eps offset, and are faster."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ImagegenError(f"feature statistics differ in shape ({mu1.shape} vs {mu2.shape}); they come from "
                            f"different feature networks")
    diff = mu1 - mu2
    root1 = _psd_sqrt(sigma1)
    s = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh((s + s.T) / 2)
    tr_covmean = np.sqrt(np.clip(eig, 0, None)).sum()
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def fid_from_features(f1, f2) -> float:
    return frechet_distance(*feature_stats(f1), *feature_stats(f2))


def kid(f1, f2, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018, "Demystifying MMD GANs", eq. 4): the unbiased
    MMD^2 estimate with the kernel k(x, y) = (x.y / d + 1)^3, averaged over ``subsets`` random subsets of
    ``min(subset_size, N1, N2)`` samples drawn without replacement. Returns (mean, std over subsets)."""
    # float64 throughout: the three kernel sums are ~1e6 times larger than their difference, and with
    # large-magnitude features (e.g. a classifier's ReLU layer) float32 products leave visible noise
    x_all = torch.as_tensor(np.asarray(f1), dtype=torch.float64)
    y_all = torch.as_tensor(np.asarray(f2), dtype=torch.float64)
    m = min(subset_size, x_all.shape[0], y_all.shape[0])
    if m < 2:
        raise ImagegenError(f"KID needs at least 2 samples per set, got {x_all.shape[0]} and {y_all.shape[0]}")
    d = x_all.shape[1]
    g = torch.Generator().manual_seed(seed)
    mmds = np.zeros(subsets)
    for i in range(subsets):
        x = x_all[torch.randperm(x_all.shape[0], generator=g)[:m]]
        y = y_all[torch.randperm(y_all.shape[0], generator=g)[:m]]
        k_xx = (x @ x.T / d + 1) ** 3
        k_yy = (y @ y.T / d + 1) ** 3
        k_xy = (x @ y.T / d + 1) ** 3
        off_xx = k_xx.sum() - k_xx.diagonal().sum()
        off_yy = k_yy.sum() - k_yy.diagonal().sum()
        mmds[i] = float((off_xx + off_yy) / (m * (m - 1)) - 2 * k_xy.sum() / (m * m))
    return float(mmds.mean()), float(mmds.std())


# ---------------------------------------------------------------------------------------------- reference cache


def cache_key(fields: dict) -> str:
    """A file name derived from every protocol field, so changing any one of them misses the cache."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def reference_cache_path(fields: dict) -> Path:
    from ..data import cache_dir

    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", str(fields.get("dataset", "data")))[:40]
    return cache_dir() / "refstats" / f"{stem}-{cache_key(fields)}.safetensors"


def _fields_text(fields: dict) -> str:
    """The fields as stored in a cache file's metadata and compared on load (one serialisation for both)."""
    return json.dumps(fields, sort_keys=True, default=str)


def _read_reference(path: Path, fields: dict, want_stats: bool = True):
    """(features, mu, sigma) from a cache file whose recorded fields equal ``fields``, else None."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("fields") != _fields_text(fields):
                return None  # guards against a torn file or a hash collision
            feats = f.get_tensor("features")
            if not want_stats:
                return feats, None, None
            return feats, f.get_tensor("mu").numpy(), f.get_tensor("sigma").numpy()
    except Exception:
        return None  # unreadable cache: the caller recomputes (and overwrites)


def peek_reference(fields: dict) -> tuple[torch.Tensor, Path] | None:
    """The cached features for ``fields`` and their file, or None; never computes anything."""
    path = reference_cache_path(fields)
    got = _read_reference(path, fields, want_stats=False)
    return None if got is None else (got[0], path)


def cached_reference(fields: dict, compute: Callable[[PartialRows], torch.Tensor], refresh: bool = False
                     ) -> tuple[torch.Tensor, np.ndarray, np.ndarray, Path, bool]:
    """Reference features and their statistics, from the cache when every field matches, else computed
    with ``compute(partial) -> (N, D) features`` and stored. ``partial`` is where an interrupted computation
    keeps its rows (next to the cache file, tagged with the same fields; pass it to ``FeatureNet.features``);
    it is removed once the cache file is written. Returns (features, mu, sigma, path, was_cached)."""
    from ..checkpoint import atomic_save_tensors

    path = reference_cache_path(fields)
    got = None if refresh else _read_reference(path, fields)
    if got is not None:
        return (*got, path, True)
    partial = PartialRows(path.with_name(path.stem + ".partial"), _fields_text(fields), "feature rows")
    if refresh:
        partial.discard()
    feats = compute(partial).float().cpu()
    mu, sigma = feature_stats(feats)
    atomic_save_tensors({"features": feats, "mu": torch.from_numpy(mu), "sigma": torch.from_numpy(sigma)}, path,
                        metadata={"fields": _fields_text(fields)})
    partial.discard()
    return feats, mu, sigma, path, False


__all__ = ["CLEAN_RESIZER", "INCEPTION_NAME", "FeatureNet", "InceptionFeatures", "cache_key",
           "cached_reference", "clean_resize", "feature_stats", "fid_from_features", "file_sha256", "frechet_distance",
           "kid", "peek_reference", "resolve_inception_weights"]
