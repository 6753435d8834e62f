"""PixelCNN / Gated PixelCNN: causality of the masks, exact likelihoods, cached = naive sampling, completion."""

import itertools
import math

import pytest
import torch

from imagegen.data import DataInfo
from imagegen.errors import ImagegenError
from imagegen.families import pixelcnn as pc
from imagegen.families.base import bits_per_dim

GREY_BIN = DataInfo(channels=1, size=6, num_classes=10, bits=1, name="bin")
GREY_8 = DataInfo(channels=1, size=6, num_classes=0, bits=8, name="grey")
COLOUR_8 = DataInfo(channels=3, size=5, num_classes=0, bits=8, name="rgb")

# (info, likelihood): every output distribution, grey and colour
SETUPS = [(GREY_BIN, "auto"), (GREY_8, "auto"), (COLOUR_8, "auto"), (COLOUR_8, "softmax")]
SETUP_IDS = ["bernoulli", "softmax-grey", "logmix-colour", "softmax-colour"]


def _model(info, arch="gated", likelihood="auto", seed=0, **kw):
    torch.manual_seed(seed)
    cfg = pc.Config(**{**pc.TEST_CONFIG, "arch": arch, "likelihood": likelihood, **kw})
    model = pc.build(cfg, info).eval()
    with torch.no_grad():  # non-zero biases everywhere, so no path is silently zero
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.uniform_(-0.5, 0.5)
    return model


def _images(info, n, seed=1):
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(0, 256, (n, info.channels, info.size, info.size), generator=g)
    x = k.float() / 127.5 - 1
    return torch.where(x > 0, 1.0, -1.0) if info.bits == 1 else x


def _out_groups(model):
    """Group (= the channel it predicts) of every output parameter; None: the whole pixel."""
    if model.likelihood == "logistic_mixture":
        return None
    per = 1 if model.likelihood == "bernoulli" else 256
    return torch.arange(model.channels * per) // per


# ---------------------------------------------------------------------------------------------- masks


@pytest.mark.parametrize("arch", pc.ARCHS)
@pytest.mark.parametrize("info,likelihood", SETUPS, ids=SETUP_IDS)
def test_masks_are_causal_in_raster_and_channel_order(arch, info, likelihood):
    # wider than TEST_CONFIG so that no ReLU unit of a channel group is dead for every test input
    model = _model(info, arch, likelihood, hidden_channels=12, head_channels=48).double()
    s, c = info.size, info.channels
    groups = _out_groups(model)
    y = torch.zeros(2, dtype=torch.long) if model.num_classes else None
    for i, j in [(0, 0), (0, s - 1), (2, 3), (s - 1, 0), (s - 1, s - 1)]:
        for ci in range(c if groups is not None else 1):
            x = _images(info, 2).double().requires_grad_(True)
            params = model.net(x, y)[:, :, i, j]  # (B, P)
            sel = params if groups is None else params[:, groups == ci]
            (grad,) = torch.autograd.grad(sel.sum(), x)
            g = grad.abs().sum(0)  # (C, H, W)
            after = torch.zeros(s, s, dtype=torch.bool)
            after.view(-1)[i * s + j + 1:] = True
            assert not g[:, after].any(), f"output ({i},{j}) sees a later pixel"
            own = g[:, i, j]
            if groups is None:
                assert own.max() == 0, "the mixture's output sees its own pixel"
            else:
                assert own[ci:].max() == 0, f"channel {ci} at ({i},{j}) sees channel >= {ci} of its pixel"
                if ci > 0:
                    assert own[:ci].min() > 0, f"channel {ci} does not see the earlier channels of its pixel"
            if j > 0:
                assert g[:, i, j - 1].max() > 0, "the left neighbour must be visible"


def test_gated_stacks_have_no_blind_spot_and_pixelcnn_has_one():
    info = DataInfo(channels=1, size=8, bits=8)
    i, j = 5, 4
    seen = {}
    for arch in pc.ARCHS:
        model = _model(info, arch, "softmax", layers=2).double()
        x = _images(info, 1).double().requires_grad_(True)
        (grad,) = torch.autograd.grad(model.net(x)[:, :, i, j].sum(), x)
        seen[arch] = grad[0, 0].abs() > 0  # (H, W)
    g = seen["gated"]
    # every pixel above (two rows, +-2 columns) and to the left (two columns) is in the receptive field
    assert g[i - 2:i, j - 2:j + 3].all(), g.int()
    assert g[i, j - 2:j].all(), g.int()
    # the original PixelCNN's blind spot: above-right pixels its stack of masked 3x3 kernels cannot reach
    assert not seen["pixelcnn"][i - 1, j + 2]
    assert g[i - 1, j + 2]


# ---------------------------------------------------------------------------------------------- likelihood


@pytest.mark.parametrize("arch", pc.ARCHS)
@pytest.mark.parametrize("info,bits", [(GREY_8, 8.0), (GREY_BIN, 1.0), (COLOUR_8, 8.0)])
def test_uniform_model_scores_exactly_the_bit_depth(arch, info, bits):
    likelihood = "softmax" if info.bits == 8 else "auto"
    model = _model(info, arch, likelihood)
    with torch.no_grad():  # zero output layer: all logits equal, every value equally likely
        model.net.head.conv2.weight.zero_()
        model.net.head.conv2.bias.zero_()
    x = _images(info, 4)
    y = torch.arange(4) % 10 if model.num_classes else None
    bpd = bits_per_dim(pc.nll(model, x, y), info.num_dims)
    torch.testing.assert_close(bpd, torch.full((4,), bits), rtol=1e-6, atol=1e-6)


def _all_levels(n_channels):
    return torch.arange(256, dtype=torch.float64) / 127.5 - 1


@pytest.mark.parametrize("scale", [-7.0, -4.0, -1.0, 1.5])
@pytest.mark.parametrize("mean", [-1.3, -0.2, 0.9])
def test_discretized_logistic_probabilities_sum_to_one(mean, scale):
    x = _all_levels(1)
    lp = pc.discretized_logistic_log_prob(x, torch.tensor(mean, dtype=torch.float64),
                                          torch.tensor(scale, dtype=torch.float64))
    assert torch.isfinite(lp).all()
    torch.testing.assert_close(lp.exp().sum(), torch.tensor(1.0, dtype=torch.float64), rtol=0, atol=1e-9)


def test_logistic_mixture_sums_to_one_over_all_colours():
    """The PixelCNN++ mixture with its R -> G -> B dependence is normalised: sum over all 256^2 (r, g) of a
    two-channel pixel = 1, and summing the three-channel model over b gives the two-channel marginal
    (checked at 64 random (r, g)), so the 256^3 joint sums to 1 as well."""
    m = 2
    g = torch.Generator().manual_seed(0)
    p3 = torch.randn(1, m * 10, 1, 1, generator=g, dtype=torch.float64)  # logits, means, log s, coeffs
    p3[:, m + 3 * m:m + 6 * m] -= 2.5  # log scales around -2.5: peaked but not degenerate
    logits, means, log_s, coeffs = p3[:, :m], p3[:, m:4 * m], p3[:, 4 * m:7 * m], p3[:, 7 * m:]
    # the same components restricted to (r, g): first two means and scales, the coefficient of g on r
    p2 = torch.cat([logits, means[:, :2 * m], log_s[:, :2 * m], coeffs[:, :m]], 1)
    levels = _all_levels(1)
    rg = torch.stack(torch.meshgrid(levels, levels, indexing="ij"), 0).reshape(2, -1).t()  # (65536, 2)
    lp2 = pc.logistic_mixture_log_prob(p2.expand(rg.shape[0], -1, -1, -1), rg.view(-1, 2, 1, 1), m)
    torch.testing.assert_close(lp2.exp().sum(), torch.tensor(1.0, dtype=torch.float64), rtol=0, atol=1e-9)
    pick = torch.randint(0, rg.shape[0], (64,), generator=g)
    x = torch.cat([rg[pick].repeat_interleave(256, 0), levels.repeat(64)[:, None]], 1)  # (64*256, 3)
    lp3 = pc.logistic_mixture_log_prob(p3.expand(x.shape[0], -1, -1, -1), x.view(-1, 3, 1, 1), m)
    marginal = lp3.view(64, 256).exp().sum(1)
    torch.testing.assert_close(marginal, lp2.view(-1)[pick].exp(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("arch", pc.ARCHS)
@pytest.mark.parametrize("info", [DataInfo(channels=1, size=2, num_classes=3, bits=1),
                                  DataInfo(channels=3, size=2, bits=1)], ids=["grey-cond", "colour"])
def test_exact_likelihood_sums_to_one_over_every_image(arch, info):
    """2x2 binary images (16 grey, 4096 colour): sum_x p(x) = 1, so nll is a normalised exact likelihood
    (class-conditional: the marginal over labels, and p(x | y) for a fixed y)."""
    model = _model(info, arch, class_cond=info.num_classes > 0)
    d = info.num_dims
    bits = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=d)))
    x = bits.view(-1, info.channels, 2, 2)
    total = pc.nll(model, x).neg().exp().sum()
    torch.testing.assert_close(total, torch.tensor(1.0), rtol=0, atol=1e-5)
    if info.num_classes:
        total_y = pc.nll(model, x, labels=2).neg().exp().sum()
        torch.testing.assert_close(total_y, torch.tensor(1.0), rtol=0, atol=1e-5)


def test_softmax_sums_to_one_over_all_grey_levels():
    info = DataInfo(channels=1, size=1, bits=8)
    for arch in pc.ARCHS:
        model = _model(info, arch, "softmax")
        x = _all_levels(1).float().view(256, 1, 1, 1)
        torch.testing.assert_close(pc.nll(model, x).neg().exp().sum(), torch.tensor(1.0), rtol=0, atol=1e-5)


def test_class_conditional_nll_marginal():
    model = _model(GREY_BIN, "gated", class_cond=True)
    x = _images(GREY_BIN, 3)
    per_class = torch.stack([pc.nll(model, x, labels=k) for k in range(10)])  # (K, B)
    expected = -(torch.logsumexp(-per_class, 0) - math.log(10))
    torch.testing.assert_close(pc.nll(model, x), expected)
    torch.testing.assert_close(pc.nll(model, x, labels=torch.arange(3), marginal=True), expected)
    assert not torch.allclose(per_class[0], per_class[1])  # the labels do condition the model


# ---------------------------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("arch", pc.ARCHS)
@pytest.mark.parametrize("info,likelihood", SETUPS, ids=SETUP_IDS)
def test_cached_evaluation_equals_the_full_network(arch, info, likelihood):
    model = _model(info, arch, likelihood, class_cond=info.num_classes > 0)
    x = _images(info, 3)
    y = torch.tensor([1, 4, 7]) if model.num_classes else None
    net, s, p = model.net, info.size, model.net.pad
    with torch.no_grad():
        full = net(x, y)
        cache = net.init_cache(x.new_zeros(3, s + p, s + 2 * p, info.channels), y, s, s)
        for i in range(s):
            for j in range(s):
                cache["x"][:, i + p, j + p] = x[:, :, i, j]
                torch.testing.assert_close(net.at(cache, i, j), full[:, :, i, j], rtol=1e-5, atol=1e-5)
            net.row_done(cache, i, s)


@pytest.mark.parametrize("arch", pc.ARCHS)
@pytest.mark.parametrize("info,likelihood", SETUPS, ids=SETUP_IDS)
def test_cached_and_naive_sampling_give_identical_samples(arch, info, likelihood):
    model = _model(info, arch, likelihood, class_cond=info.num_classes > 0)
    labels = [3, 3, 8] if model.num_classes else None
    for temperature in (1.0, 0.7):
        out = {s: pc.sample(model, 3, labels=labels, generator=torch.Generator().manual_seed(5),
                            temperature=temperature, sampler=s) for s in pc.SAMPLERS}
        assert torch.equal(out["naive"], out["cached"])
        x = out["cached"]
        assert x.shape == (3, info.channels, info.size, info.size)
        if info.bits == 1:
            assert set(x.unique().tolist()) <= {-1.0, 1.0}
        else:  # on the 256-level grid
            torch.testing.assert_close(pc.from_levels(pc.to_levels(x)), x)
    other = pc.sample(model, 3, labels=labels, generator=torch.Generator().manual_seed(6))
    assert not torch.equal(other, out["cached"])


def test_class_conditional_sampling_without_labels_draws_them():
    model = _model(GREY_BIN, "gated", class_cond=True)
    a = pc.sample(model, 4, generator=torch.Generator().manual_seed(0), sampler="naive")
    b = pc.sample(model, 4, generator=torch.Generator().manual_seed(0), sampler="cached")
    assert torch.equal(a, b)


def test_bad_options_are_user_errors():
    model = _model(GREY_8, "gated")
    with pytest.raises(ImagegenError, match="sampler"):
        pc.sample(model, 1, sampler="fast")
    with pytest.raises(ImagegenError, match="temperature"):
        pc.sample(model, 1, temperature=0.0)
    with pytest.raises(ImagegenError, match="not class-conditional"):
        pc.sample(model, 1, labels=3)
    with pytest.raises(ImagegenError, match="keep"):
        pc.make_mask("middle", GREY_8)
    with pytest.raises(ImagegenError, match="class_cond"):
        pc.build(pc.Config(class_cond=True), GREY_8)
    with pytest.raises(ImagegenError, match="arch"):
        pc.build(pc.Config(arch="pixelrnn"), GREY_8)
    with pytest.raises(ImagegenError, match="odd"):
        pc.build(pc.Config(kernel_size=4), GREY_8)


# ---------------------------------------------------------------------------------------------- completion


@pytest.mark.parametrize("arch", pc.ARCHS)
@pytest.mark.parametrize("info,likelihood", SETUPS, ids=SETUP_IDS)
@pytest.mark.parametrize("keep", ["top-half", "left-half", "random"])
def test_completion_never_changes_given_pixels(arch, info, likelihood, keep):
    model = _model(info, arch, likelihood, class_cond=info.num_classes > 0)
    x = _images(info, 1).expand(4, -1, -1, -1).clone()  # four completions of one image, as the CLI does
    if keep == "random":
        mask = (torch.rand(4, info.channels, info.size, info.size,
                           generator=torch.Generator().manual_seed(2)) < 0.5).float()
    else:
        mask = pc.make_mask(keep, info)
    known = mask.expand_as(x) > 0.5
    out = {s: pc.complete(model, x, mask, generator=torch.Generator().manual_seed(3), sampler=s)
           for s in pc.SAMPLERS}
    assert torch.equal(out["naive"], out["cached"])
    y = out["cached"]
    assert torch.equal(y[known], x[known])
    assert not torch.equal(y[~known], x[~known])
    assert len({tuple(row.tolist()) for row in y.flatten(1)}) > 1, "the four completions are all the same"


def test_make_mask_halves():
    top, left = pc.make_mask("top-half", GREY_8), pc.make_mask("left-half", GREY_8)
    assert top.shape == (1, 1, 6, 6) and top[0, 0, :3].all() and not top[0, 0, 3:].any()
    assert left[0, 0, :, :3].all() and not left[0, 0, :, 3:].any()
    assert pc.make_mask("bottom-half", GREY_8).sum() == 18 and pc.make_mask("right-half", GREY_8).sum() == 18


def test_completion_labels_follow_the_known_prefix():
    """A class-conditional model given no labels draws y from p(y | known prefix). Wire a model where
    class 0 makes every pixel black with certainty and the other classes are fair coins: a black top half
    makes class 0 about 2^18 times likelier than each other class, so every completion is all black."""
    model = _model(GREY_BIN, "gated", class_cond=True)
    net, ch = model.net, pc.TEST_CONFIG["hidden_channels"]
    with torch.no_grad():
        for layer in net.layers:  # the horizontal stack carries nothing but the last layer's class bias
            layer.h_out.weight.zero_()
            layer.h_out.bias.zero_()
        last = net.layers[-1]
        for p in (last.h_conv.weight, last.h_conv.bias, last.v_to_h.weight, last.v_to_h.bias):
            p.zero_()
        last.cond_h.weight.fill_(10.0)  # class 0: gate = tanh(10) * sigmoid(10) = +1
        last.cond_h.weight[1:, :ch] = -10.0  # other classes: gate = -1
        last.h_out.weight[:, :, 0, 0] = 10.0 * torch.eye(ch)  # h = +10 (class 0) or -10
        net.head.conv1.weight.zero_()
        net.head.conv1.weight[:ch, :, 0, 0] = torch.eye(ch)
        net.head.conv1.bias.zero_()
        net.head.conv2.weight.fill_(-1.0)  # logit = -80 (class 0) or 0 (the others)
        net.head.conv2.bias.zero_()
    x = -torch.ones(6, 1, 6, 6)
    mask = pc.make_mask("top-half", GREY_BIN)
    assert torch.equal(pc.complete(model, x, mask, generator=torch.Generator().manual_seed(0)), x)
    coin = pc.complete(model, x, mask, labels=3, generator=torch.Generator().manual_seed(0))
    assert (coin > 0).any()  # with a fair-coin class the bottom half is not all black


def test_prefix_log_prob_is_the_likelihood_of_the_prefix():
    model = _model(COLOUR_8, "gated", "softmax")
    x = _images(COLOUR_8, 2)
    everything = torch.ones_like(x, dtype=torch.bool)
    torch.testing.assert_close(pc._prefix_log_prob(model, x, everything, None), -pc.nll(model, x))
    known = pc.make_mask("top-half", COLOUR_8).expand_as(x) > 0.5
    # the known rows' log-likelihood does not depend on what the unknown rows hold
    x2 = torch.where(known, x, _images(COLOUR_8, 2, seed=9))
    a, b = pc._prefix_log_prob(model, x, known, None), pc._prefix_log_prob(model, x2, known, None)
    torch.testing.assert_close(a, b)


# ---------------------------------------------------------------------------------------------- PixelSNAIL


def _grads_at(fn, inputs, i, sel=None):
    """d(sum of fn(*inputs)[:, sel, position i]) / d(inputs), each summed over the batch -> [(C, N), ...]."""
    out = fn(*inputs)  # (B, P, H, W)
    flat = out.flatten(2)[:, :, i]
    grads = torch.autograd.grad((flat if sel is None else flat[:, sel]).sum(), inputs)
    return [g.abs().sum(0).flatten(1) for g in grads]


@pytest.mark.parametrize("groups", [1, 3])
def test_pixelsnail_attention_is_strictly_causal_per_channel_group(groups):
    """The attention layer alone: its output at pixel p depends on the image and the features of every pixel
    before p and of none at or after p, except that query group g reads the features of its own pixel in
    groups <= g (which carry only channels < g of that pixel); the first pixel's output is exactly zero."""
    from imagegen.families.pixelsnail_net import CausalAttention, positions

    torch.manual_seed(0)
    ch, dv, s = 6, 4, 4
    att = CausalAttention(ch, groups, key_ch=3, value_ch=dv, groups=groups).double()
    feat_groups = pc.group_ids(ch, groups)
    out_groups = pc.group_ids(groups * dv, groups)
    h = torch.randn(2, ch, s, s, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, groups, s, s, dtype=torch.float64, requires_grad=True)
    pos = positions(s, s, h)
    n = s * s
    with torch.no_grad():
        assert att(h, x, pos)[:, :, 0, 0].abs().max() == 0
    for p in [1, 5, n - 1]:
        for g in range(groups):
            gh, gx = _grads_at(lambda a, b: att(a, b, pos), (h, x), p, out_groups == g)
            assert not gx[:, p:].any() and not gh[:, p + 1:].any(), f"pixel {p} sees a later pixel"
            assert gx[:, :p].min() > 0 and gh[:, :p].min() > 0, f"pixel {p} does not see every earlier pixel"
            assert not gh[feat_groups > g, p].any(), f"query group {g} reads a later feature group"
            assert gh[feat_groups <= g, p].min() > 0


@pytest.mark.parametrize("info,likelihood", SETUPS, ids=SETUP_IDS)
def test_pixelsnail_sees_the_whole_past_through_attention(info, likelihood):
    """With attention, the output at a pixel depends on every sub-pixel before it (far above-right too, where
    the down-right-shifted convolutions cannot reach); with no attention blocks it does not."""
    s = info.size
    i, j = s - 1, 0  # first pixel of the last row: (0, s-1) is out of every convolution's reach
    for blocks, whole in [(2, True), (0, False)]:
        model = _model(info, "pixelsnail", likelihood, blocks=blocks, layers=1, hidden_channels=12,
                       head_channels=48).double()
        x = _images(info, 2).double().requires_grad_(True)
        (grad,) = torch.autograd.grad(model.net(x)[:, :, i, j].sum(), x)
        seen = grad.abs().sum(0).flatten(1)[:, :i * s + j]  # (C, earlier pixels)
        assert bool(seen.min() > 0) == whole, (blocks, seen)


def test_pixelsnail_kv_cache_holds_every_finished_pixel():
    """After sampling, each attention layer's KV cache holds exactly the keys of pixels 0..N-2 (slot s = pixel
    s-1, slot 0 zero), the ones the full network computes."""
    from imagegen.families.pixelsnail_net import positions

    model = _model(COLOUR_8, "pixelsnail", "softmax")
    net, s, p = model.net, COLOUR_8.size, model.net.pad
    x = _images(COLOUR_8, 2)
    with torch.no_grad():
        cache = net.init_cache(x.new_zeros(2, s + p, s + 2 * p, 3), None, s, s)
        for i in range(s):
            for j in range(s):
                cache["x"][:, i + p, j + p] = x[:, :, i, j]
                net.at(cache, i, j)
        assert cache["kv_slots"] == s * s
        h = net.first(x)
        block = net.blocks[0]
        for layer in block.residual:
            h = layer(h, None)
        kv_in = torch.cat([x, h, positions(s, s, h).expand(2, -1, -1, -1)], 1)
        keys = block.attention.key(kv_in).flatten(2).transpose(1, 2)  # (B, N, dk)
        cached = cache["attn"][0]["k"]
        assert cached[:, 0].abs().max() == 0
        torch.testing.assert_close(cached[:, 1:], keys[:, :-1], rtol=1e-5, atol=1e-5)


@pytest.fixture
def pixelsnail_test_config(monkeypatch):
    monkeypatch.setattr(pc, "TEST_CONFIG", {**pc.TEST_CONFIG, "arch": "pixelsnail"})


def _contract_tests():
    import test_contract  # tests/test_contract.py: the checks every registered family passes

    for name, fn in vars(test_contract).items():
        marks = [m for m in getattr(fn, "pytestmark", []) if m.name == "parametrize" and m.args[0] == "name"]
        if name.startswith("test_") and marks and "pixelcnn" in marks[0].args[1]:
            yield pytest.param(fn, id=name)


@pytest.mark.parametrize("contract_test", list(_contract_tests()))
def test_pixelsnail_passes_the_family_contract(contract_test, pixelsnail_test_config, accel, tmp_path):
    """The shared contract test (train step, sample shape and seed, checkpoint round trip, nll, complete,
    class conditioning, binary data) with model.arch=pixelsnail instead of the family's default arch."""
    import inspect

    fixtures = {"name": "pixelcnn", "accel": accel, "tmp_path": tmp_path}
    contract_test(**{k: fixtures[k] for k in inspect.signature(contract_test).parameters})
    assert pc.Config(**pc.TEST_CONFIG).arch == "pixelsnail"


def test_a_run_saved_before_the_pixelsnail_settings_still_resumes():
    """model.blocks / key_channels / value_channels are new: a run saved without them (at their defaults) is the
    same setup, so resuming it is not refused; a non-default value is still a different setup."""
    import copy

    from imagegen import config, trainer

    cfg = config.resolve("pixelcnn")
    saved = copy.deepcopy(cfg.to_dict())
    for key in ("blocks", "key_channels", "value_channels"):
        del saved["model"][key]
    assert trainer._same_setup(saved, cfg) is None
    other = config.resolve("pixelcnn", overrides={"model": {"blocks": 3}})
    assert trainer._same_setup(saved, other).startswith("model.blocks")


GREY_8_COND = DataInfo(channels=1, size=6, num_classes=10, bits=8, name="grey-cond")


@pytest.mark.parametrize("arch", pc.ARCHS)
def test_guidance_mixes_the_logits_and_cached_equals_naive(arch):
    """Classifier-free guidance: the null class is one more embedding row; g = 1 is the plain conditional draw,
    g != 1 draws from l_null + g (l_y - l_null) for cached and naive samplers alike."""
    model = _model(GREY_8_COND, arch, class_cond=True, label_dropout=0.1)
    assert model.null_label == 10
    labels = [3, 3, 8]

    def draw(**kw):
        return pc.sample(model, 3, labels=labels, generator=torch.Generator().manual_seed(5), **kw)

    guided = {s: draw(sampler=s, guidance=2.5) for s in pc.SAMPLERS}
    assert torch.equal(guided["naive"], guided["cached"])
    assert not torch.equal(guided["cached"], draw(guidance=1.0))
    # the first pixel by hand: softmax of the mixed logits at (0, 0) decides its level exactly as the sampler does
    x0 = torch.zeros(3, 1, 6, 6)
    y = torch.tensor(labels)
    lc = model.net(x0, y)[:, :, 0, 0]
    lu = model.net(x0, torch.full_like(y, 10))[:, :, 0, 0]
    u = pc.rng.rand(3, 6, 6, 1, generator=pc.rng.ImageGenerators([5, 6, 7]))[:, 0, 0]  # what the sampler draws
    want = pc.from_levels(pc._categorical(lu + 2.5 * (lc - lu), u[:, 0]))
    got = pc.sample(model, 3, labels=labels, generator=pc.rng.ImageGenerators([5, 6, 7]), guidance=2.5)
    assert torch.equal(got[:, 0, 0, 0], want)


def test_guidance_needs_label_dropout_and_logits():
    with pytest.raises(ImagegenError, match="label_dropout"):
        pc.sample(_model(GREY_8_COND, class_cond=True), 2, labels=[1, 2], guidance=2.0)
    rgb = DataInfo(channels=3, size=4, num_classes=10, bits=8, name="rgb-cond")
    with pytest.raises(ImagegenError, match="logistic_mixture"):
        pc.sample(_model(rgb, class_cond=True, label_dropout=0.1), 2, labels=[1, 2], guidance=2.0)


def test_label_dropout_trains_the_null_class(accel):
    from types import SimpleNamespace

    model = _model(GREY_8_COND, class_cond=True, label_dropout=0.5).train()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = _images(GREY_8_COND, 16)
    batch = SimpleNamespace(x=x, y=torch.randint(0, 10, (16,)))
    null_rows = [e.weight[10].clone() for e in model.modules() if isinstance(e, torch.nn.Embedding)]
    assert null_rows and all(e.num_embeddings == 11 for e in model.modules() if isinstance(e, torch.nn.Embedding))
    torch.manual_seed(0)  # half the labels become the null class
    pc.train_step(model, batch, {"main": opt}, 0, accel)
    after = [e.weight[10] for e in model.modules() if isinstance(e, torch.nn.Embedding)]
    assert any(not torch.equal(a, b) for a, b in zip(after, null_rows))  # the null class was trained
