"""A deliberately broken family for the trainer's divergence test: its loss turns NaN at step 5."""

from dataclasses import dataclass

import torch

from imagegen.families.base import optimizer_step


@dataclass
class Config:
    width: int = 4


def build(cfg, info):
    return torch.nn.Linear(info.channels * info.size * info.size, cfg.width)


def train_step(model, batch, opts, step, accel, grad_clip=0.0):
    loss = model(batch.x.flatten(1)).pow(2).mean()
    if step >= 4:
        loss = loss * float("nan")
    accel.backward(loss)
    optimizer_step(accel, opts["main"], model.parameters(), grad_clip)
    return {"loss": loss.detach()}


def sample(model, n, labels=None, generator=None):
    return torch.zeros(n, 1, 16, 16)
