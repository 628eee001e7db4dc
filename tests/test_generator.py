"""Generator: shapes, pass-through at init, gradients, round trip, conditioning, attention,
checkpointing and conditioning dropout — all on the tiny config."""

import math
from pathlib import Path

import pytest
import torch

from hifi_tse.config import load_config
from hifi_tse.models.attention import CrossAttention, SelfAttention
from hifi_tse.models.generator import Generator, build_generator

# One torch thread (conftest): tiny tensors gain nothing from threads on a shared CPU.
pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _cfg(*overrides):
    return load_config(CONFIGS / "tiny.yaml", list(overrides))


def _inputs(batch=2, length=4001, ref_length=3001, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, length, generator=g), torch.randn(batch, ref_length, generator=g)


def _break_pass_through(model, seed=0):
    """Perturb the zero-initialised mask layer so the output depends on the features."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = model.decoder.out_weight
        w.copy_(torch.randn(w.shape, generator=g) * 0.1)


def _neg_si_sdr(est, tgt):
    est = est - est.mean(-1, keepdim=True)
    tgt = tgt - tgt.mean(-1, keepdim=True)
    proj = (est * tgt).sum(-1, keepdim=True) / tgt.square().sum(-1, keepdim=True) * tgt
    return -(10 * torch.log10(proj.square().sum(-1) / (est - proj).square().sum(-1))).mean()


def test_output_shape_for_odd_lengths():
    torch.manual_seed(0)
    model = build_generator(_cfg()).eval()
    mix, ref = _inputs(batch=2, length=16001, ref_length=12345)
    with torch.no_grad():
        out = model(mix, ref)
    assert out.shape == (2, 16001) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    with torch.no_grad():  # reference longer than the mixture, very short mixture
        assert model(mix[:1, :777], torch.randn(1, 20000)).shape == (1, 777)


def test_wrong_shapes_raise():
    model = build_generator(_cfg()).eval()
    with pytest.raises(ValueError, match="mix"):
        model(torch.randn(4000), torch.randn(1, 4000))
    with pytest.raises(ValueError, match="same B"):
        model(torch.randn(2, 4000), torch.randn(3, 4000))


def test_pass_through_at_initialisation():
    torch.manual_seed(0)
    model = build_generator(_cfg()).eval()
    mix, ref = _inputs(length=16001, ref_length=12345)
    with torch.no_grad():
        out = model(mix, ref)
    assert (out - mix).abs().max() / mix.abs().max() < 1e-4


def test_parameter_count_and_bands_of_full_config():
    model = Generator(load_config(CONFIGS / "hifi_tse.yaml"))
    n = sum(p.numel() for p in model.parameters())
    assert 11e6 <= n <= 13e6
    assert model.num_bands == 53
    tiny = sum(p.numel() for p in Generator(_cfg()).parameters())
    assert tiny < 0.5e6


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = build_generator(_cfg("model.ref_dropout_prob=0.0")).train()
    mix, ref = _inputs(length=4001)
    target = mix * 0.5 + 0.1 * torch.randn_like(mix)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    # Step 0: the zero-init mask layer receives gradient (it blocks upstream layers).
    _neg_si_sdr(model(mix, ref), target).backward()
    assert model.decoder.out_weight.grad.abs().sum() > 0
    opt.step()
    opt.zero_grad()
    # After one step every parameter gets a non-zero gradient.
    _neg_si_sdr(model(mix, ref), target).backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not dead, f"no gradient reaches {dead}"


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    cfg = _cfg()
    model = build_generator(cfg).eval()
    _break_pass_through(model)
    path = tmp_path / "gen.pt"
    torch.save(model.state_dict(), path)
    torch.manual_seed(123)  # a differently initialised instance
    other = build_generator(cfg).eval()
    other.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    mix, ref = _inputs(batch=1, length=5003, ref_length=2999)
    with torch.no_grad():
        torch.testing.assert_close(model(mix, ref), other(mix, ref), atol=0, rtol=0)


def test_reference_changes_the_output():
    torch.manual_seed(0)
    model = build_generator(_cfg()).eval()
    _break_pass_through(model)
    with torch.no_grad():  # FiLM starts as identity; make it active too
        model.film.proj.weight.normal_(std=0.1)
    mix, ref = _inputs(batch=1)
    _, ref2 = _inputs(batch=1, seed=1)
    with torch.no_grad():
        a, b = model(mix, ref), model(mix, ref2)
    assert (a - b).abs().max() > 1e-3 * a.abs().max()


def _plain_attention(q, k, v):
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return weights @ v


def test_self_attention_equals_plain_softmax():
    torch.manual_seed(0)
    attn = SelfAttention(16, 4)
    x = torch.randn(3, 11, 16)
    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    heads = [t.view(3, 11, 4, 4).transpose(1, 2) for t in (q, k, v)]
    plain = attn.out(_plain_attention(*heads).transpose(1, 2).reshape(3, 11, 16))
    torch.testing.assert_close(attn(x), plain, atol=1e-5, rtol=1e-5)


def test_windowed_self_attention_is_local_and_exact():
    torch.manual_seed(0)
    attn = SelfAttention(16, 4, window=3)
    x = torch.randn(2, 20, 16, requires_grad=True)
    y = attn(x)
    # frame 10 depends on frames 7..13 only
    (grad,) = torch.autograd.grad(y[:, 10].sum(), x)
    touched = grad.abs().sum(dim=(0, 2)) > 0
    assert touched.nonzero().flatten().tolist() == list(range(7, 14))
    # and equals plain attention with the out-of-window weights removed
    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    heads = [t.view(2, 20, 4, 4).transpose(1, 2) for t in (q, k, v)]
    scores = heads[0] @ heads[1].transpose(-1, -2) / 2.0
    pos = torch.arange(20)
    scores = scores.masked_fill((pos[:, None] - pos[None, :]).abs() > 3, float("-inf"))
    plain = attn.out((torch.softmax(scores, -1) @ heads[2]).transpose(1, 2).reshape(2, 20, 16))
    torch.testing.assert_close(y, plain, atol=1e-5, rtol=1e-5)


def test_attention_window_from_config():
    from hifi_tse.models.generator import attention_window_frames

    assert attention_window_frames(_cfg()) == 0  # tiny: global
    cfg = _cfg("model.attention_window_seconds=0.5")
    hop_s = cfg.stft.hop_length / cfg.audio.sample_rate
    assert attention_window_frames(cfg) == round(0.5 / hop_s)
    gen = build_generator(cfg)
    assert {b.block.attn.window for b in gen.backbone.stages} == {round(0.5 / hop_s)}
    assert attention_window_frames(_cfg("model.attention_window_seconds=1e-6")) == 1


def test_cross_attention_equals_plain_softmax():
    torch.manual_seed(0)
    attn = CrossAttention(16, 2)
    x, ctx = torch.randn(3, 11, 16), torch.randn(3, 7, 16)
    q = attn.q(x).view(3, 11, 2, 8).transpose(1, 2)
    k, v = (t.view(3, 7, 2, 8).transpose(1, 2) for t in attn.kv(ctx).chunk(2, dim=-1))
    plain = attn.out(_plain_attention(q, k, v).transpose(1, 2).reshape(3, 11, 16))
    torch.testing.assert_close(attn(x, ctx), plain, atol=1e-5, rtol=1e-5)


def test_grad_checkpointing_gives_same_outputs_and_grads():
    cfg_on = _cfg("model.grad_checkpoint=true", "model.ref_dropout_prob=0.0")
    cfg_off = _cfg("model.grad_checkpoint=false", "model.ref_dropout_prob=0.0")
    torch.manual_seed(0)
    on = build_generator(cfg_on).train()
    _break_pass_through(on)
    off = build_generator(cfg_off).train()
    off.load_state_dict(on.state_dict())
    mix, ref = _inputs(length=3001)
    outs, grads, calls = [], [], []
    for model in (on, off):
        count = [0]
        model.backbone.stages[0].block.intra.register_forward_pre_hook(
            lambda *_, c=count: c.__setitem__(0, c[0] + 1)
        )
        out = model(mix, ref)
        out.square().mean().backward()
        outs.append(out.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        calls.append(count[0])
    assert calls == [2, 1], "checkpointing must recompute the LSTM in backward"
    torch.testing.assert_close(outs[0], outs[1], atol=1e-6, rtol=1e-5)
    for name, g in grads[0].items():
        torch.testing.assert_close(g, grads[1][name], atol=1e-6, rtol=1e-4, msg=name)


def test_ref_dropout_only_in_training():
    torch.manual_seed(0)
    model = build_generator(_cfg("model.ref_dropout_prob=1.0"))
    _break_pass_through(model)
    with torch.no_grad():
        model.film.proj.weight.normal_(std=0.1)
    mix, ref = _inputs(batch=2)
    _, ref2 = _inputs(batch=2, seed=1)
    with torch.no_grad():
        model.train()
        torch.testing.assert_close(model(mix, ref), model(mix, ref2), atol=0, rtol=0)
        model.eval()
        a, b = model(mix, ref), model(mix, ref2)
    assert (a - b).abs().max() > 1e-3 * a.abs().max()


def test_ref_dropout_is_per_example():
    torch.manual_seed(0)
    model = build_generator(_cfg("model.ref_dropout_prob=0.5")).train()
    r = model.encode_reference(torch.randn(64, 2000))
    from hifi_tse.models.conditioning import drop_reference

    dropped = drop_reference(r, 0.5, training=True)
    zero = (dropped == 0).flatten(2).all(-1).all(0)  # (B,) whole example zeroed
    kept = (dropped == r).flatten(2).all(-1).all(0)
    assert bool((zero | kept).all()) and 10 < int(zero.sum()) < 54
