"""Loss functions: the seed's numbers, shape contracts, scale behaviour, GAN signs."""

import inspect
import math

import fast_bss_eval
import numpy as np
import pytest
import torch

from hifi_tse.losses.adversarial import (
    GANLoss,
    feature_matching_loss,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
)
from hifi_tse.losses.separation import (
    SilenceRewardWarning,
    amplitude_loss,
    energy_loss,
    legacy_energy_db,
    scene_aware_loss,
    si_sdr,
)
from hifi_tse.losses.spectral import (
    PhaseSensitiveLoss,
    scale_resolution,
)

EPS = 1e-8
RES_48K = [[512, 240, 50], [1024, 600, 120], [2048, 1200, 240]]


def _at_db(db: float, batch: int = 2, length: int = 4000) -> torch.Tensor:
    """Random-sign signal whose mean square is exactly 10**(db/10)."""
    gen = torch.Generator().manual_seed(1)
    sign = torch.randint(0, 2, (batch, length), generator=gen).float() * 2 - 1
    return sign * math.sqrt(10 ** (db / 10))


def _pair(batch: int = 3, length: int = 8000, noise: float = 0.5, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    target = torch.randn(batch, length, generator=gen)
    estimate = target + noise * torch.randn(batch, length, generator=gen)
    return estimate, target


# --------------------------------------------------------------------------- energy


def test_energy_loss_penalises_only_above_target():
    loss = energy_loss(_at_db(-20.0), target_db=-30.0, eps=EPS)
    assert loss.shape == (2,)
    assert torch.allclose(loss, torch.full((2,), 10.0), atol=1e-3)


@pytest.mark.parametrize("db", [-30.0, -40.0])
def test_energy_loss_is_zero_with_zero_gradient_below_target(db):
    x = (_at_db(db) * 0.999).requires_grad_(True)  # just below the threshold at -30
    loss = energy_loss(x, target_db=-30.0, eps=EPS)
    assert torch.all(loss == 0.0)
    loss.sum().backward()
    assert torch.count_nonzero(x.grad) == 0


def test_legacy_energy_db_is_raw_negative_db_and_warns():
    with pytest.warns(SilenceRewardWarning, match="legacy_db"):
        quiet = legacy_energy_db(_at_db(-30.0), eps=EPS)
        silent = legacy_energy_db(_at_db(-60.0), eps=EPS)
    assert torch.allclose(quiet, torch.full((2,), -30.0), atol=1e-3)
    assert torch.allclose(silent, torch.full((2,), -40.0))  # clamped at the floor
    # the bug: quieter output -> lower loss
    assert silent.mean() < quiet.mean()


# --------------------------------------------------------------------------- amplitude


def test_amplitude_loss_seed_value_at_ratio_0738():
    _, target = _pair()
    loss = amplitude_loss(0.738 * target, target, min_ratio=0.05, eps=EPS)
    assert loss.item() == pytest.approx(math.log(0.738) ** 2, rel=1e-4)
    assert loss.item() == pytest.approx(0.092, abs=1e-3)


def test_amplitude_loss_zero_gradient_at_right_level_and_log_symmetric():
    _, target = _pair()
    est = target.clone().requires_grad_(True)
    loss = amplitude_loss(est, target, min_ratio=0.05, eps=EPS)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-10)
    assert est.grad.abs().max().item() < 1e-6
    half = amplitude_loss(0.5 * target, target, min_ratio=0.05, eps=EPS)
    double = amplitude_loss(2.0 * target, target, min_ratio=0.05, eps=EPS)
    assert half.item() == pytest.approx(double.item(), rel=1e-5)
    assert half.item() > 0.4


def test_amplitude_loss_clamps_tiny_ratio_and_stays_finite_on_silence():
    _, target = _pair()
    est = torch.zeros_like(target, requires_grad=True)
    loss = amplitude_loss(est, target, min_ratio=0.05, eps=EPS)
    loss.backward()
    assert loss.item() == pytest.approx(math.log(0.05) ** 2, rel=1e-5)
    assert torch.isfinite(est.grad).all()


# --------------------------------------------------------------------------- SI-SDR


def test_si_sdr_is_scale_invariant():
    est, target = _pair()
    base = si_sdr(est, target, EPS)
    assert base.shape == (3,)
    assert torch.allclose(si_sdr(0.5 * est, target, EPS), base, atol=1e-4)
    assert torch.allclose(si_sdr(3.0 * est + 0.2, target, EPS), base, atol=1e-4)


def test_si_sdr_matches_fast_bss_eval():
    rng = np.random.default_rng(3)
    target = rng.standard_normal((4, 16000))
    noise_levels = np.array([0.1, 0.5, 1.0, 3.0])[:, None]
    est = target + noise_levels * rng.standard_normal((4, 16000))
    # fast_bss_eval does not remove the mean by default: zero-mean both ourselves
    target -= target.mean(axis=-1, keepdims=True)
    est -= est.mean(axis=-1, keepdims=True)
    ref = fast_bss_eval.si_sdr(target[:, None, :], est[:, None, :])[:, 0]
    ours = si_sdr(torch.tensor(est).float(), torch.tensor(target).float(), EPS).numpy()
    assert np.abs(ours - ref).max() < 1e-3
    assert ref.max() - ref.min() > 20  # the signals span a real SI-SDR range


def test_si_sdr_of_silence_is_worst_value():
    _, target = _pair()
    silent = si_sdr(torch.zeros_like(target), target, EPS)
    assert torch.allclose(silent, torch.full((3,), 10 * math.log10(EPS)))


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    "shapes", [((8000,), (8000,)), ((1, 1, 800), (1, 1, 800)), ((2, 800), (2, 700))]
)
def test_wrong_shapes_are_refused(shapes):
    a, b = torch.randn(*shapes[0]), torch.randn(*shapes[1])
    with pytest.raises(TypeError):
        si_sdr(a, b, EPS)
    with pytest.raises(TypeError):
        amplitude_loss(a, b, min_ratio=0.05, eps=EPS)
    with pytest.raises(TypeError):
        PhaseSensitiveLoss(RES_48K, 16000)(a, b)
    if a.ndim != 2:
        with pytest.raises(TypeError):
            energy_loss(a, target_db=-30.0, eps=EPS)
    with pytest.raises(TypeError):
        scene_aware_loss(
            a,
            b,
            torch.ones(a.shape[0], dtype=torch.bool),
            ta_weight=0.1,
            ta_target_db=-30.0,
            ta_loss="relu",
            eps=EPS,
        )


def test_mask_must_be_bool_of_batch_size():
    est, target = _pair()
    kw = dict(ta_weight=0.1, ta_target_db=-30.0, ta_loss="relu", eps=EPS)
    with pytest.raises(TypeError):
        scene_aware_loss(est, target, torch.ones(3), **kw)
    with pytest.raises(TypeError):
        scene_aware_loss(est, target, torch.ones(2, dtype=torch.bool), **kw)


# --------------------------------------------------------------------------- scene-aware


def test_scene_aware_has_no_weight_defaults():
    params = inspect.signature(scene_aware_loss).parameters
    for name in ("ta_weight", "ta_target_db", "ta_loss", "eps"):
        assert params[name].default is inspect.Parameter.empty


def test_scene_aware_combines_and_skips_empty_parts():
    est, target = _pair(batch=4)
    loud_ta = _at_db(-20.0, batch=4, length=est.shape[1])
    est = torch.where(torch.tensor([True, True, False, False])[:, None], est, loud_ta)
    kw = dict(ta_target_db=-30.0, ta_loss="relu", eps=EPS)
    tp_only = torch.ones(4, dtype=torch.bool)
    ta_only = torch.zeros(4, dtype=torch.bool)
    mixed = torch.tensor([True, True, False, False])

    neg_sdr = -si_sdr(est, target, EPS)
    energy = energy_loss(est, -30.0, EPS)
    # no TA: only the TP part, weighted by (1 - ta_weight)
    got = scene_aware_loss(est, target, tp_only, ta_weight=0.25, **kw)
    assert got.item() == pytest.approx(0.75 * neg_sdr.mean().item(), rel=1e-5)
    # no TP: only the TA part
    got = scene_aware_loss(est, torch.zeros_like(target), ta_only, ta_weight=0.25, **kw)
    assert got.item() == pytest.approx(0.25 * energy.mean().item(), rel=1e-5)
    # both
    got = scene_aware_loss(est, target, mixed, ta_weight=0.1, **kw)
    want = 0.9 * neg_sdr[:2].mean() + 0.1 * energy[2:].mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    assert energy[2:].mean().item() == pytest.approx(10.0, abs=1e-3)


def test_scene_aware_gradient_finite_with_empty_subset():
    est, target = _pair()
    est.requires_grad_(True)
    loss = scene_aware_loss(
        est,
        target,
        torch.ones(3, dtype=torch.bool),
        ta_weight=0.1,
        ta_target_db=-30.0,
        ta_loss="relu",
        eps=EPS,
    )
    loss.backward()
    assert torch.isfinite(est.grad).all() and est.grad.abs().sum() > 0


# --------------------------------------------------------------------------- spectral


def test_resolutions_scale_with_sample_rate():
    assert [scale_resolution(r, 48000) for r in RES_48K] == [tuple(r) for r in RES_48K]
    assert [scale_resolution(r, 16000) for r in RES_48K] == [
        (256, 80, 17),
        (512, 200, 40),
        (1024, 400, 80),
    ]
    loss = PhaseSensitiveLoss(RES_48K, 24000)
    assert loss.resolutions == [(256, 120, 25), (512, 300, 60), (1024, 600, 120)]
    for n_fft, win, _ in loss.resolutions:
        assert n_fft >= win and n_fft & (n_fft - 1) == 0


def test_phase_loss_value_comparable_across_sample_rates():
    # white noise of the same std against silence: energy-normalised STFTs make the loss
    # depend on the waveform's scale, not on the rate / window length
    gen = torch.Generator().manual_seed(0)
    values = []
    for sr in (16000, 48000):
        noise = 0.1 * torch.randn(2, sr, generator=gen)
        values.append(PhaseSensitiveLoss(RES_48K, sr)(noise, torch.zeros_like(noise)).item())
    assert values[0] == pytest.approx(values[1], rel=0.1)
    assert values[0] == pytest.approx(2 * 0.1 / math.sqrt(math.pi), rel=0.15)


def test_phase_loss_is_scale_sensitive_and_masked():
    _, target = _pair(length=4000)
    loss = PhaseSensitiveLoss(RES_48K, 16000)
    assert loss(target, target).item() == pytest.approx(0.0, abs=1e-6)
    v = {g: loss(g * target, target).item() for g in (0.5, 0.9, 1.1, 2.0)}
    assert v[0.5] > v[0.9] > 0 and v[2.0] > v[1.1] > 0
    assert v[0.5] == pytest.approx(v[2.0] / 2, rel=1e-4)  # |g - 1| * const
    mask = torch.tensor([False, True, False])
    est = target * torch.tensor([[0.0], [0.5], [3.0]])
    assert loss(est, target, mask).item() == pytest.approx(
        loss.per_example(est[1:2], target[1:2]).item(), rel=1e-5
    )
    empty = loss(est, target, torch.zeros(3, dtype=torch.bool))
    assert empty.item() == 0.0


def _disc_outputs(value: float, grad: bool = False):
    logits = torch.full((2, 10), value, requires_grad=grad)
    feats = [torch.full((2, 4, 5), value, requires_grad=grad) for _ in range(3)]
    return [(logits, feats), (logits * 1.0, [f * 1.0 for f in feats])]


def test_lsgan_signs_real_to_one_fake_to_zero():
    real = torch.ones(4, requires_grad=True)
    fake = torch.zeros(4, requires_grad=True)
    r, f = lsgan_discriminator_loss(real, fake)
    assert r.item() == 0.0 and f.item() == 0.0
    real2 = torch.full((4,), 0.2, requires_grad=True)
    fake2 = torch.full((4,), 0.7, requires_grad=True)
    r, f = lsgan_discriminator_loss(real2, fake2)
    (r + f).backward()
    assert (real2.grad < 0).all()  # descent raises D(real) toward 1
    assert (fake2.grad > 0).all()  # descent lowers D(fake) toward 0
    g_fake = torch.full((4,), 0.3, requires_grad=True)
    lsgan_generator_loss(g_fake).backward()
    assert (g_fake.grad < 0).all()  # the generator pushes D(fake) toward 1
    assert lsgan_generator_loss(torch.ones(3)).item() == 0.0


def test_gan_loss_object_and_feature_matching():
    gan = GANLoss()
    loss, terms = gan.discriminator_loss(_disc_outputs(1.0), _disc_outputs(0.0))
    assert loss.item() == 0.0 and set(terms) == {"disc", "disc_real", "disc_fake"}
    loss, _ = gan.discriminator_loss(_disc_outputs(0.0), _disc_outputs(1.0))
    assert loss.item() == pytest.approx(4.0)  # 2 sub-discriminators x (1 + 1)
    real, fake = _disc_outputs(0.5, grad=True), _disc_outputs(0.5, grad=True)
    adv, fm = gan.generator_terms(real, fake)
    assert adv.item() == pytest.approx(0.5) and fm.item() == 0.0
    fake = _disc_outputs(0.0, grad=True)
    real = _disc_outputs(1.0, grad=True)
    _, fm = gan.generator_terms(real, fake)
    assert fm.item() == pytest.approx(6.0)  # 2 discs x 3 layers x |1 - 0|
    fm.backward()
    assert real[0][1][0].grad is None  # real features are detached
    with pytest.raises(TypeError):
        feature_matching_loss([torch.zeros(1)], [])
    with pytest.raises(TypeError):
        gan.generator_terms(real, fake[:1])
