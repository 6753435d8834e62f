"""The peers of the speedrun (issue 20): the recipes a CPU user would otherwise copy, re-implemented here from
their published descriptions, each trained for a wall-clock budget on our data, sampled and scored as our rows.

    # train every peer for 5 minutes one after another on MNIST, then score 2,000 samples of each
    python benchmarks/speedrun_peers.py --peers hf-ddpm,pt-vae,pt-dcgan --data mnist --data-root ../shared/data \
        --budget 5m --n 2000 --threads 2 --inception-weights ../shared/weights/inception-2015-12-05-features.pt \
        --out runs/peers-5m

    # a smoke run (seconds): tiny budget, few samples, DDIM-10 for the DDPM, no scoring
    python benchmarks/speedrun_peers.py --budget 10s --n 64 --skip-score --ddpm-sampler ddim --ddpm-steps 10 \
        --data-root ../shared/data --out runs/peers-smoke

The peers (``PEERS``), written from their descriptions, not copied or imported from anywhere:
``hf-ddpm``  the Hugging Face Diffusion Models Course, unit 1, MNIST: diffusers ``UNet2DModel`` at sample_size 28
             (not padded to 32: the course feeds 28x28 MNIST), block_out_channels (32, 64, 64), DownBlock2D +
             2 AttnDownBlock2D / 2 AttnUpBlock2D + UpBlock2D, layers_per_block 2; ``DDPMScheduler(1000,
             "squaredcos_cap_v2")``, epsilon MSE, Adam 1e-3, batch 128, images in [-1, 1]. Sampled by default with
             the scheduler's own 1000-step DDPM loop, as the course samples (the recipe a user copies; about 1000x
             the cost of one forward per image, so --n 2000 takes a long time on a CPU); ``--ddpm-sampler ddim
             --ddpm-steps 50`` draws with a DDIMScheduler of the same betas instead.
``pt-vae``   pytorch/examples ``vae/main.py``: MLP 784-400-(20 mu, 20 logvar), 20-400-784 sigmoid, BCE summed + KL,
             Adam 1e-3, batch 128, MNIST as [0, 1] floats; a sample is the decoder's mean image for z ~ N(0, I).
``pt-dcgan`` pytorch/examples ``dcgan/main.py``: MNIST resized to 64x64 (bilinear), 1 channel, in [-1, 1]; nz 100,
             ngf = ndf = 64, BCE, Adam 2e-4 betas (0.5, 0.999), batch 64, conv weights N(0, 0.02), BN weights
             N(1, 0.02); samples drawn as the example draws them (G in train mode: BatchNorm on the statistics of
             each 64-image batch), then resized to 28x28 (bilinear, antialiased) for scoring.

The clock: ``run_peer`` times loading the training split through our loader (``imagegen.data``) and charges it to
the budget; the peer's ``train_<peer>`` counts everything from its first line (data conversion, building the
networks and optimiser, the loop) and stops before the first step that would start after the budget. So every
row is at most ``--budget`` plus one step of wall clock in all (``train_wall_s``); ``train_s`` is the loop alone.
Training runs one after another (never two at once); scoring comes after all training. Each row has the same
keys as benchmarks/latent_quality.py's rows (recipe, family, latent, step, kimg, train_s, sampling,
train_wall_s, sample64_s and the evaluator's summary: classifier FD ``fid_clf``, classifier score, Inception
FID when weights are given), so a later benchmarks/speedrun.py can put our families and the peers in one table.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import time
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from _bench import pick, run_main, save_row  # benchmarks/_bench.py, beside this script
from imagegen.evaluation import evaluate_folder  # the one line naming the evaluator
from imagegen.provenance import commit_label, hardware_label

# ----------------------------------------------------------------------------------------------- shared


@contextlib.contextmanager
def _threads(n: int | None):
    """torch's CPU thread count for one peer (``None``: leave it as it is), restored afterwards."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _batches(n: int, batch_size: int, gen: torch.Generator):
    """Index batches of a shuffled epoch after another, the last (smaller) batch of each epoch kept: what a
    ``DataLoader(shuffle=True, batch_size=B)`` yields, which is how all three peers read their data."""
    while True:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            yield perm[i:i + batch_size]


def _stats(steps: int, images: int, t_entry: float, t_loop: float) -> dict:
    now = time.perf_counter()
    return {"steps": steps, "images_seen": images, "train_wall_s": round(now - t_entry, 2),
            "loop_s": round(now - t_loop, 2)}


def _check_u8(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"the peers train on uint8 (N, 1, 28, 28) images, got {images.dtype} {tuple(images.shape)}")


def _u8_from_unit(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8, round half up (as imagegen.data.to_uint8 quantises [-1, 1] and torchvision's
    save_image quantises [0, 1])."""
    return (x.clamp(0, 1) * 255 + 0.5).floor().clamp(0, 255).to(torch.uint8)


# ----------------------------------------------------------------------------------------------- hf-ddpm
# Hugging Face Diffusion Models Course, unit 1 ("Diffusion Models from Scratch" for the MNIST UNet2DModel, batch
# 128 and Adam 1e-3; "Introduction to Diffusers" for the DDPM objective: DDPMScheduler(1000, squaredcos_cap_v2),
# add_noise at t ~ U{0..999}, MSE on the noise, and the sampling loop over scheduler.timesteps).


class DDPMPeer(NamedTuple):  # NamedTuple, not a dataclass: this script is also loaded by path (tests)
    unet: nn.Module
    scheduler_config: dict  # the training DDPMScheduler's config: the samplers are built from it


def build_hf_unet() -> nn.Module:
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=28, in_channels=1, out_channels=1, layers_per_block=2,
                       block_out_channels=(32, 64, 64),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"))


def train_hf_ddpm(train_images_u8: torch.Tensor, budget_s: float, seed: int = 0, threads: int | None = None, *,
                  batch_size: int = 128, max_steps: int | None = None) -> tuple[DDPMPeer, dict]:
    """Train the course's MNIST DDPM for ``budget_s`` seconds of wall clock (from this call on) or
    ``max_steps`` steps, whichever comes first. ``batch_size`` other than 128 only for tests."""
    from diffusers import DDPMScheduler

    t_entry = time.perf_counter()
    _check_u8(train_images_u8)
    with _threads(threads):
        torch.manual_seed(seed)
        x_all = train_images_u8.float() / 127.5 - 1.0  # (N, 1, 28, 28) in [-1, 1]
        sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
        unet = build_hf_unet()
        opt = torch.optim.Adam(unet.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(seed)
        unet.train()
        steps = images = 0
        t_loop = time.perf_counter()
        for idx in _batches(len(x_all), batch_size, gen):
            if time.perf_counter() - t_entry >= budget_s or (max_steps is not None and steps >= max_steps):
                break
            x0 = x_all[idx]
            eps = torch.randn(x0.shape, generator=gen)
            t = torch.randint(0, sched.config.num_train_timesteps, (x0.shape[0],), generator=gen)
            x_t = sched.add_noise(x0, eps, t)
            loss = F.mse_loss(unet(x_t, t).sample, eps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps, images = steps + 1, images + x0.shape[0]
        unet.eval()
        return DDPMPeer(unet, dict(sched.config)), dict(_stats(steps, images, t_entry, t_loop),
                                                       final_loss=round(float(loss.detach()), 4) if steps else None)


def sample_hf_ddpm(state: DDPMPeer, n: int, seed: int = 0, *, sampler: str = "ddpm", steps: int | None = None,
                   chunk: int = 250) -> torch.Tensor:
    """``n`` samples, uint8 (n, 1, 28, 28). ``sampler="ddpm"`` with 1000 steps is the course's loop (the
    default); ``"ddim"`` (deterministic, eta 0; default 50 steps) uses a DDIMScheduler of the same betas."""
    from diffusers import DDIMScheduler, DDPMScheduler

    if sampler not in ("ddpm", "ddim"):
        raise ValueError(f"sampler must be ddpm or ddim, not {sampler!r}")
    steps = steps or (1000 if sampler == "ddpm" else 50)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, n, chunk):
        sch = (DDPMScheduler if sampler == "ddpm" else DDIMScheduler).from_config(state.scheduler_config)
        sch.set_timesteps(steps)
        x = torch.randn(min(chunk, n - i), 1, 28, 28, generator=gen)
        with torch.no_grad():
            for t in sch.timesteps:
                eps = state.unet(x, t).sample
                x = sch.step(eps, t, x, generator=gen).prev_sample if sampler == "ddpm" else \
                    sch.step(eps, t, x).prev_sample
        out.append(_u8_from_unit((x + 1) / 2))
    return torch.cat(out)


# ----------------------------------------------------------------------------------------------- pt-vae
# pytorch/examples vae/main.py (Kingma & Welling 2014's MLP VAE).


class ExampleVAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)  # mu
        self.fc22 = nn.Linear(400, 20)  # logvar
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def decode(self, z):
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z))))

    def forward(self, x, eps):
        mu, logvar = self.encode(x)
        z = mu + eps * torch.exp(0.5 * logvar)  # the reparameterisation trick
        return self.decode(z), mu, logvar


def train_pt_vae(train_images_u8: torch.Tensor, budget_s: float, seed: int = 0, threads: int | None = None, *,
                 batch_size: int = 128, max_steps: int | None = None) -> tuple[ExampleVAE, dict]:
    """Train the example's VAE for ``budget_s`` seconds of wall clock (from this call on) or ``max_steps``."""
    t_entry = time.perf_counter()
    _check_u8(train_images_u8)
    with _threads(threads):
        torch.manual_seed(seed)
        x_all = train_images_u8.float().div(255).view(-1, 784)  # ToTensor(): [0, 1], flattened as x.view(-1, 784)
        model = ExampleVAE()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(seed)
        model.train()
        steps = images = 0
        t_loop = time.perf_counter()
        for idx in _batches(len(x_all), batch_size, gen):
            if time.perf_counter() - t_entry >= budget_s or (max_steps is not None and steps >= max_steps):
                break
            x = x_all[idx]
            recon, mu, logvar = model(x, torch.randn(x.shape[0], 20, generator=gen))
            bce = F.binary_cross_entropy(recon, x, reduction="sum")
            kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())  # Kingma & Welling 2014, appendix B
            loss = bce + kld
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps, images = steps + 1, images + x.shape[0]
        model.eval()
        # the example prints the summed loss per image
        return model, dict(_stats(steps, images, t_entry, t_loop),
                           final_loss_per_image=round(float(loss.detach()) / x.shape[0], 2) if steps else None)


def sample_pt_vae(state: ExampleVAE, n: int, seed: int = 0) -> torch.Tensor:
    """The decoder's mean image (Bernoulli probabilities, as the example saves them) for z ~ N(0, I)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        p = state.decode(torch.randn(n, 20, generator=gen))
    return _u8_from_unit(p.view(n, 1, 28, 28))


# ----------------------------------------------------------------------------------------------- pt-dcgan
# pytorch/examples dcgan/main.py (Radford et al. 2016), with --dataset mnist (nc = 1) at its default 64x64.

NZ, NGF, NDF = 100, 64, 64


class DCGANGenerator(nn.Module):
    def __init__(self, nz: int = NZ, ngf: int = NGF, nc: int = 1):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),  # 4x4
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),  # 8
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),  # 16
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),  # 32
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())  # (B, nc, 64, 64)

    def forward(self, z):  # z: (B, nz, 1, 1)
        return self.main(z)


class DCGANDiscriminator(nn.Module):
    def __init__(self, ndf: int = NDF, nc: int = 1):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),  # 32x32
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid())  # (B, 1, 1, 1)

    def forward(self, x):
        return self.main(x).view(-1)


def _dcgan_init(m: nn.Module) -> None:
    """The example's weights_init: conv weights N(0, 0.02), BatchNorm weights N(1, 0.02) and biases 0."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class DCGANPeer(NamedTuple):
    G: DCGANGenerator
    D: DCGANDiscriminator


def _to_64(u8: torch.Tensor) -> torch.Tensor:
    """The example's transform per batch: Resize(64) (bilinear on the 28x28 image, back to 8 bits as PIL keeps
    it), ToTensor, Normalize(0.5, 0.5): (B, 1, 64, 64) in [-1, 1]."""
    x = F.interpolate(u8.float(), size=64, mode="bilinear", align_corners=False, antialias=True)
    return x.round().clamp(0, 255) / 127.5 - 1.0


def train_pt_dcgan(train_images_u8: torch.Tensor, budget_s: float, seed: int = 0, threads: int | None = None, *,
                   batch_size: int = 64, max_steps: int | None = None) -> tuple[DCGANPeer, dict]:
    """Train the example's DCGAN for ``budget_s`` seconds of wall clock (from this call on) or ``max_steps``
    steps (one D step + one G step each)."""
    t_entry = time.perf_counter()
    _check_u8(train_images_u8)
    with _threads(threads):
        torch.manual_seed(seed)
        G, D = DCGANGenerator(), DCGANDiscriminator()
        G.apply(_dcgan_init)
        D.apply(_dcgan_init)
        criterion = nn.BCELoss()
        opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
        opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
        gen = torch.Generator().manual_seed(seed)
        G.train()
        D.train()
        steps = images = 0
        t_loop = time.perf_counter()
        for idx in _batches(len(train_images_u8), batch_size, gen):
            if time.perf_counter() - t_entry >= budget_s or (max_steps is not None and steps >= max_steps):
                break
            real = _to_64(train_images_u8[idx])
            b = real.shape[0]
            # (1) update D: maximise log D(x) + log(1 - D(G(z)))
            D.zero_grad()
            label = torch.ones(b)
            err_d_real = criterion(D(real), label)
            err_d_real.backward()
            fake = G(torch.randn(b, NZ, 1, 1, generator=gen))
            label.fill_(0.0)
            err_d_fake = criterion(D(fake.detach()), label)
            err_d_fake.backward()
            opt_d.step()
            # (2) update G: maximise log D(G(z)) (the non-saturating loss)
            G.zero_grad()
            label.fill_(1.0)
            err_g = criterion(D(fake), label)
            err_g.backward()
            opt_g.step()
            steps, images = steps + 1, images + b
        logs = {"loss_d": round(float(err_d_real.detach() + err_d_fake.detach()), 4),
                "loss_g": round(float(err_g.detach()), 4)} if steps else {}
        return DCGANPeer(G, D), dict(_stats(steps, images, t_entry, t_loop), **logs)


def sample_pt_dcgan(state: DCGANPeer, n: int, seed: int = 0, *, batch: int = 64) -> torch.Tensor:
    """Draw as the example draws its fake_samples: G left in train mode (it never calls eval()), so BatchNorm
    normalises with the statistics of each 64-image batch (a copy of G, so the running stats are untouched);
    then resized 64 -> 28 (bilinear, antialiased) for our 28x28 evaluator."""
    G = copy.deepcopy(state.G).train()
    gen = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for i in range(0, n, batch):
            x = G(torch.randn(batch, NZ, 1, 1, generator=gen))[: n - i]  # always a full batch: same BN statistics
            x = F.interpolate(x, size=28, mode="bilinear", align_corners=False, antialias=True)
            out.append(_u8_from_unit((x + 1) / 2))
    return torch.cat(out)


# ----------------------------------------------------------------------------------------------- the table


class Peer(NamedTuple):
    train: object  # train_<peer>(train_images_u8, budget_s, seed, threads) -> (state, stats)
    sample: object  # sample_<peer>(state, n, seed, **sampling) -> uint8 (n, 1, 28, 28)
    family: str  # the family of ours it is the peer of
    source: str


PEERS: dict[str, Peer] = {
    "hf-ddpm": Peer(train_hf_ddpm, sample_hf_ddpm, "diffusion",
                    "Hugging Face Diffusion Models Course, unit 1 (MNIST UNet2DModel, DDPMScheduler)"),
    "pt-vae": Peer(train_pt_vae, sample_pt_vae, "vae", "pytorch/examples vae/main.py"),
    "pt-dcgan": Peer(train_pt_dcgan, sample_pt_dcgan, "gan", "pytorch/examples dcgan/main.py (64x64)"),
}


def load_train_u8(data: str, data_root: str | Path | None) -> torch.Tensor:
    """The training split through our own loader, exactly the images our families train on: uint8 (N, 1, 28, 28)."""
    from imagegen.config import DataConfig
    from imagegen.data import load_dataset

    return load_dataset(DataConfig(name=data, root=str(data_root) if data_root else None), "train").images


def save_grid_png(images_u8: torch.Tensor, path: Path, nrow: int = 8, scale: int = 4) -> Path:
    """A uint8 (N, 1, H, W) grid, upscaled ``scale`` x with nearest neighbours so a person can see it."""
    from PIL import Image
    from torchvision.utils import make_grid

    grid = make_grid(images_u8, nrow=nrow, padding=2, pad_value=255)[0]  # (H', W') uint8
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(grid.numpy())
    im.resize((im.width * scale, im.height * scale), Image.NEAREST).save(path)
    return path


def train_and_sample_peer(name: str, out: Path, *, data: str = "mnist", data_root=None, budget_s: float = 300.0,
                          n: int = 2000, seed: int = 0, threads: int | None = None, sampling: dict | None = None,
                          train_images_u8: torch.Tensor | None = None) -> dict:
    """Train peer ``name`` for ``budget_s`` (the load of the training split included), draw and time a 64-image
    grid, draw ``n`` samples into ``out/<name>/samples-<n>.npz``; returns the row without scores."""
    from imagegen.data import save_image_array

    peer = PEERS[name]
    sampling = dict(sampling or {}) if name == "hf-ddpm" else {}
    run = out / name
    run.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if train_images_u8 is None:
        train_images_u8 = load_train_u8(data, data_root)
    load_s = time.perf_counter() - t0
    state, stats = peer.train(train_images_u8, budget_s - load_s, seed, threads)
    wall = time.perf_counter() - t0
    with _threads(threads):
        t1 = time.perf_counter()
        grid = peer.sample(state, 64, 0, **sampling)
        sample64_s = time.perf_counter() - t1
        save_grid_png(grid, out / "grids" / f"{name}.png")
        t1 = time.perf_counter()
        reuse = n == 64 and seed == 0  # the grid is these samples
        samples = grid if reuse else peer.sample(state, n, seed, **sampling)
        sample_n_s = sample64_s if reuse else time.perf_counter() - t1
    save_image_array(run / f"samples-{n}.npz", samples)
    timing = {"load_s": round(load_s, 2), "train_wall_s": round(wall, 1), "sample64_s": round(sample64_s, 2),
              f"sample{n}_s": round(sample_n_s, 1)}
    (run / "timing.json").write_text(json.dumps({**timing, "stats": stats}, indent=2))
    print(f"{name}: {stats['steps']} steps, {stats['images_seen'] / 1000:.1f} kimg in {wall:.0f} s wall clock "
          f"(load {load_s:.1f} s); 64 samples in {sample64_s:.1f} s, {n} in {sample_n_s:.0f} s", flush=True)
    return {"recipe": name, "family": peer.family, "latent": False, "peer": peer.source, "step": stats["steps"],
            "kimg": round(stats["images_seen"] / 1000, 1), "train_s": round(stats["loop_s"]),
            "sampling": json.dumps(_sampling_label(name, sampling)), **timing}


def _sampling_label(name: str, sampling: dict) -> dict:
    if name == "hf-ddpm":
        sampler = sampling.get("sampler", "ddpm")
        return {"sampler": sampler, "steps": sampling.get("steps") or (1000 if sampler == "ddpm" else 50)}
    return {"sampler": "decoder mean" if name == "pt-vae" else "G, train-mode BN, batch 64"}


def score_peer(row: dict, out: Path, *, data: str = "mnist", data_root=None, n: int = 2000, seed: int = 0,
               inception_weights: str | None = None, metrics: str | None = None) -> dict:
    """Score a peer's samples as latent_quality.py scores its rows: ``n`` samples against as many test images,
    classifier FD and score, plus Inception FID when ``inception_weights`` is given."""
    metrics = metrics or ("cfd,cscore,fid" if inception_weights else "cfd,cscore")
    run = out / row["recipe"]
    res = evaluate_folder(run / f"samples-{n}.npz", data, metrics=metrics, n=n, ref="test", data_root=data_root,
                          inception_weights=inception_weights, seed=seed, out=run / f"eval-{n}.json")
    return {**row, **{k: v for k, v in res["summary"].items() if isinstance(v, (int, float))}}


def run_peer(name: str, out: Path, *, skip_score: bool = False, inception_weights: str | None = None,
             metrics: str | None = None, **options) -> dict:
    """Train, sample and (unless ``skip_score``) score one peer; write and return its row. ``options``: those of
    ``train_and_sample_peer`` (data, data_root, budget_s, n, seed, threads, sampling, train_images_u8)."""
    pick(name, PEERS, "peer")  # a one-line error for an unknown one
    out = Path(out)
    row = train_and_sample_peer(name, out, **options)
    if not skip_score:
        keys = ("data", "data_root", "n", "seed")
        row = score_peer(row, out, inception_weights=inception_weights, metrics=metrics,
                         **{k: options[k] for k in keys if k in options})
    save_row(row, out / f"row-{name}.json")
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peers", default=",".join(PEERS), help=f"comma list of: {', '.join(PEERS)}")
    p.add_argument("--data", default="mnist", help="mnist or fashion-mnist (what the classifier metrics know)")
    p.add_argument("--data-root", type=Path, default=None)
    p.add_argument("--budget", default="5m", help="wall clock of each peer, loading the data included")
    p.add_argument("--n", type=int, default=2000, help="samples scored against as many test images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--ddpm-sampler", choices=["ddpm", "ddim"], default="ddpm",
                   help="hf-ddpm: the course's DDPM loop (default) or a DDIMScheduler of the same betas")
    p.add_argument("--ddpm-steps", type=int, default=None, help="hf-ddpm sampling steps (default 1000 ddpm, 50 ddim)")
    p.add_argument("--inception-weights", default=None, help="local Inception file: adds FID")
    p.add_argument("--metrics", default=None, help="what imagegen eval takes (default cfd,cscore[,fid])")
    p.add_argument("--skip-score", action="store_true", help="train and sample only")
    p.add_argument("--out", type=Path, default=Path("runs/peers"))
    args = p.parse_args()
    from imagegen.config import parse_budget

    names = pick(args.peers, PEERS, "peer")
    budget_s = parse_budget(args.budget) * 60
    commit = commit_label()  # before training: the code that ran
    sampling = {"sampler": args.ddpm_sampler, "steps": args.ddpm_steps}
    common = {"data": args.data, "data_root": args.data_root, "n": args.n, "seed": args.seed}
    # train every peer first (one after another), score after all training, as latent_quality.py does
    rows = [train_and_sample_peer(name, args.out, budget_s=budget_s, threads=args.threads, sampling=sampling,
                                  **common) for name in names]
    if not args.skip_score:
        rows = [score_peer(row, args.out, inception_weights=args.inception_weights, metrics=args.metrics, **common)
                for row in rows]
    with _threads(args.threads):
        hardware = hardware_label("cpu")
    header = {"command": "benchmarks/speedrun_peers.py", "data": args.data, "budget": args.budget, "n": args.n,
              "seed": args.seed, "threads": args.threads, "commit": commit, "hardware": hardware}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"header": header, "rows": rows}, indent=2))
    for row in rows:
        print()
        save_row(row, args.out / f"row-{row['recipe']}.json")
    print(json.dumps(header))


if __name__ == "__main__":
    run_main(main)
