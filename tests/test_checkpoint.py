import json

import pytest
import torch
from safetensors.torch import save_file

from imagegen import checkpoint
from imagegen.errors import ImagegenError


def _model(width=4):
    return torch.nn.Sequential(torch.nn.Linear(3, width), torch.nn.BatchNorm1d(width), torch.nn.Linear(width, 2))


def test_round_trip_weights_optimizer_and_rng(tmp_path):
    m = _model()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, betas=(0.5, 0.9))
    m(torch.randn(5, 3)).sum().backward()
    opt.step()
    torch.manual_seed(5)
    p = checkpoint.save(tmp_path / "checkpoints" / "ckpt-00000001.safetensors",
                        meta={"family": "toy", "step": 1}, model=m, optimizers={"main": opt})
    expected_next = torch.rand(3)
    torch.manual_seed(99)
    ck = checkpoint.load(tmp_path)  # a run directory -> its newest checkpoint
    assert ck.path == p and ck.meta["step"] == 1 and ck.family == "toy"
    assert checkpoint.read_meta(p) == ck.meta  # the header alone, for info and the best checkpoint
    m2 = _model()
    ck.load_module(m2)
    for a, b in zip(m.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    opt2 = torch.optim.AdamW(m2.parameters(), lr=5.0)
    ck.load_optimizers({"main": opt2})
    assert opt2.param_groups[0]["lr"] == 1e-3 and opt2.param_groups[0]["betas"] == (0.5, 0.9)
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert all(torch.equal(s1[i]["exp_avg"], s2[i]["exp_avg"]) for i in s1)
    checkpoint.set_rng_state(ck.tensors)
    assert torch.equal(torch.rand(3), expected_next)


def test_family_and_shape_mismatch_are_clear(tmp_path):
    checkpoint.save(tmp_path / "c.safetensors", meta={"family": "vae", "step": 0}, model=_model(4))
    with pytest.raises(ImagegenError, match="is a 'vae' checkpoint, not 'gan'"):
        checkpoint.load(tmp_path / "c.safetensors", family="gan")
    ck = checkpoint.load(tmp_path / "c.safetensors")
    with pytest.raises(ImagegenError, match="does not fit this model"):
        ck.load_module(_model(8))


@pytest.mark.parametrize("read", [checkpoint.load, checkpoint.read_meta], ids=["load", "read_meta"])
def test_foreign_and_torn_files(tmp_path, read):
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ImagegenError, match="not an imagegen checkpoint"):
        read(tmp_path / "other.safetensors")
    (tmp_path / "torn.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\"")
    with pytest.raises(ImagegenError, match="not a readable imagegen checkpoint"):
        read(tmp_path / "torn.safetensors")
    # a pickle (what torch.save writes) is refused, never unpickled
    torch.save({"x": 1}, tmp_path / "pickled.safetensors")
    with pytest.raises(ImagegenError):
        read(tmp_path / "pickled.safetensors")
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(ImagegenError, match="no checkpoint in"):
        read(tmp_path / "empty_run")
    with pytest.raises(ImagegenError, match="does not exist"):
        read(tmp_path / "missing.safetensors")


def test_atomic_write_leaves_no_temp_and_prune_keeps_last(tmp_path):
    m = _model()
    for step in (1, 2, 3, 4):
        checkpoint.save(checkpoint.checkpoint_path(tmp_path, step), meta={"family": "toy", "step": step}, model=m)
    checkpoint.prune(tmp_path, keep_last=2)
    assert [s for s, _ in checkpoint.list_checkpoints(tmp_path)] == [3, 4]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if ".tmp-" in p.name]
    meta = json.loads(json.dumps(checkpoint.load(tmp_path).meta))
    assert meta["format"] == checkpoint.FORMAT_VERSION
