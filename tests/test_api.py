"""The Python API: Extractor.from_checkpoint / from_onnx, enroll, extract."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from eval_fixtures import SR, tiny_ckpt, tiny_onnx, voice  # noqa: F401

import hifi_tse
from hifi_tse.cli import main
from hifi_tse.errors import UserError
from hifi_tse.infer.loading import load_generator


@pytest.fixture(scope="module")
def clips():
    rng = np.random.default_rng(0)
    target = voice(rng, 130.0, 3.0, 24000)
    other = voice(rng, 220.0, 3.0, 24000)
    ref = voice(rng, 130.0, 2.0, 24000)
    return (target + 0.7 * other).astype(np.float32), ref


def test_api_is_exported_from_the_package() -> None:
    assert set(hifi_tse.__all__) >= {"Extractor", "Enrollment", "ExtractionError"}
    assert hifi_tse.Extractor.__module__ == "hifi_tse.api"


def test_extract_keeps_rate_and_length_and_matches_the_cli(tiny_ckpt, clips, tmp_path):  # noqa: F811
    mix, ref = clips
    ex = hifi_tse.Extractor.from_checkpoint(tiny_ckpt, threads=1)
    enrollment = ex.enroll(ref, 24000)
    assert enrollment.sample_rate == ex.sample_rate == SR
    out = ex.extract(mix, 24000, enrollment)
    assert out.shape == mix.shape and out.dtype == np.float32
    # the same as `hifi-tse separate` on the same files
    sf.write(tmp_path / "m.wav", mix, 24000, subtype="FLOAT")
    sf.write(tmp_path / "r.wav", ref, 24000, subtype="FLOAT")
    args = ["separate", "--checkpoint", str(tiny_ckpt), "--mix", str(tmp_path / "m.wav"),
            "--ref", str(tmp_path / "r.wav"), "-o", str(tmp_path / "o.wav")]  # fmt: skip
    assert main(args) == 0
    cli, sr = sf.read(tmp_path / "o.wav", dtype="float32")
    assert sr == 24000 and np.abs(cli - out).max() < 1e-5
    # torch tensors, (L, C) and (C, L) multi-channel input: downmixed, same result
    stereo = np.stack([mix, mix], axis=1)
    for audio in (torch.from_numpy(mix), stereo, torch.from_numpy(stereo.T.copy())):
        assert np.abs(ex.extract(audio, 24000, enrollment) - out).max() < 1e-6
    # integer PCM is scaled by its full scale
    pcm = np.round(mix * 32767).astype(np.int16)
    assert np.abs(ex.extract(pcm, 24000, enrollment) - out).max() < 1e-3


def test_enrollment_is_encoded_once_and_equals_one_pass(tiny_ckpt, clips):  # noqa: F811
    mix, ref = clips
    ex = hifi_tse.Extractor.from_checkpoint(tiny_ckpt, threads=1, chunk_seconds=10.0)
    mix16 = soxr.resample(mix, 24000, SR).astype(np.float32)
    ref16 = soxr.resample(ref, 24000, SR).astype(np.float32)
    enrollment = ex.enroll(ref16, SR)
    model, _ = load_generator(tiny_ckpt)
    with torch.inference_mode():
        want = model(torch.from_numpy(mix16)[None], torch.from_numpy(ref16)[None])[0].numpy()
    assert np.abs(ex.extract(mix16, SR, enrollment) - want).max() < 1e-5
    # several clips are one enrollment (concatenated)
    two = ex.enroll([ref16[:SR], ref16[SR:]], SR)
    assert np.array_equal(two.waveform, enrollment.waveform)


def test_onnx_extractor_matches_pytorch(tiny_ckpt, tiny_onnx, clips):  # noqa: F811
    mix, ref = clips
    pt = hifi_tse.Extractor.from_checkpoint(tiny_ckpt, threads=1)
    ox = hifi_tse.Extractor.from_onnx(tiny_onnx, threads=1)
    a = pt.extract(mix, 24000, pt.enroll(ref, 24000))
    b = ox.extract(mix, 24000, ox.enroll(ref, 24000))
    assert np.abs(a - b).max() < 1e-3


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (np.zeros(0, np.float32), "empty"),
        (np.full(1000, np.nan, np.float32), "NaN"),
        (np.zeros((2, 3, 100), np.float32), "shape"),
        (np.zeros((200, 100), np.float32), "C <= 64"),
        (np.array(["a", "b"]), "dtype"),
    ],
)
def test_bad_input_raises_one_exception_type_with_one_line(tiny_ckpt, clips, bad, words):  # noqa: F811
    mix, ref = clips
    ex = hifi_tse.Extractor.from_checkpoint(tiny_ckpt, threads=1)
    enrollment = ex.enroll(ref, 24000)
    with pytest.raises(hifi_tse.ExtractionError, match=words) as err:
        ex.extract(bad, 24000, enrollment)
    assert "\n" not in str(err.value)
    with pytest.raises(hifi_tse.ExtractionError, match=words):
        ex.enroll(bad, 24000)


def test_enrollment_checks(tiny_ckpt, clips):  # noqa: F811
    mix, ref = clips
    ex = hifi_tse.Extractor.from_checkpoint(tiny_ckpt, threads=1)
    with pytest.warns(hifi_tse.EnrollmentWarning, match="active speech"):
        ex.enroll(ref[:8000], 24000)  # a third of a second
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ex.enroll(ref, 24000)  # 2 s of speech: no warning
    with pytest.raises(hifi_tse.ExtractionError, match="all zeros"):
        ex.enroll(np.zeros(24000, np.float32), 24000)
    with pytest.raises(hifi_tse.ExtractionError, match="sample_rate"):
        ex.extract(mix, 44.1, ex.enroll(ref, 24000))
    with pytest.raises(hifi_tse.ExtractionError, match="Extractor.enroll"):
        ex.extract(mix, 24000, ref)


def test_bf16_precision_follows_fp32_or_is_refused(tiny_ckpt, clips):  # noqa: F811
    from hifi_tse.devices import cpu_has_native_bf16

    mix, ref = clips
    if not cpu_has_native_bf16():
        with pytest.raises(UserError, match="native bf16"):
            hifi_tse.Extractor.from_checkpoint(tiny_ckpt, precision="bf16")
        return
    fp32 = hifi_tse.Extractor.from_checkpoint(tiny_ckpt, threads=1)
    bf16 = hifi_tse.Extractor.from_checkpoint(tiny_ckpt, threads=1, precision="bf16")
    a = fp32.extract(mix, 24000, fp32.enroll(ref, 24000))
    b = bf16.extract(mix, 24000, bf16.enroll(ref, 24000))
    snr = 10 * np.log10(np.sum(a**2) / np.sum((a - b) ** 2))
    assert 20 < snr < 200  # close, and really computed in another precision
    with pytest.raises(UserError, match="--precision"):
        hifi_tse.Extractor.from_checkpoint(tiny_ckpt, precision="fp16")


def test_extract_pairs_batches_each_mixture_with_its_own_enrollment(tiny_ckpt, clips):  # noqa: F811
    """Evaluation's entry point: every pair equals extract() with that pair's enrollment,
    whether it ran in a batch (equal lengths), alone, or chunked (longer than a chunk)."""
    mix, ref = clips
    rng = np.random.default_rng(4)
    other_ref = voice(rng, 220.0, 2.0, 24000)
    long_mix = np.concatenate([mix, mix, mix])
    mixes = [mix, mix.copy(), mix[:50000], long_mix]
    refs = [ref, other_ref, ref, other_ref]
    model, cfg = load_generator(tiny_ckpt)
    for ex in (
        hifi_tse.Extractor.from_checkpoint(tiny_ckpt, threads=1, chunk_seconds=4.0),
        hifi_tse.Extractor.from_generator(model, cfg, chunk_seconds=4.0),
    ):
        got = ex.extract_pairs(mixes, refs, 24000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = [ex.extract(m, 24000, ex.enroll(r, 24000)) for m, r in zip(mixes, refs)]
        assert [g.shape for g in got] == [m.shape for m in mixes]
        for g, w in zip(got, want):
            assert np.abs(g - w).max() < 1e-5
        assert np.abs(got[0] - got[1]).max() > 1e-3  # the enrollments do differ per pair
        one_by_one = ex.extract_pairs(mixes, refs, 24000, batch_size=1)
        assert all(np.abs(a - b).max() < 1e-5 for a, b in zip(one_by_one, got))
    # batch_size caps the rows of each model call: six equal-length pairs run as 4 + 2, or 6 x 1
    rows: list[int] = []
    inner = ex._backend.pairs_fn

    def counted(m: np.ndarray, r: np.ndarray) -> np.ndarray:
        rows.append(len(m))
        return inner(m, r)

    ex._backend = dataclasses.replace(ex._backend, pairs_fn=counted)
    ex.extract_pairs([mix] * 6, [ref] * 6, 24000)
    ex.extract_pairs([mix] * 6, [ref] * 6, 24000, batch_size=1)
    assert rows == [4, 2] + [1] * 6
    with pytest.raises(hifi_tse.ExtractionError, match="2 mixtures but 1 enrollments"):
        ex.extract_pairs(mixes[:2], refs[:1], 24000)
    with pytest.raises(hifi_tse.ExtractionError, match="batch_size must be >= 1, got 0"):
        ex.extract_pairs(mixes, refs, 24000, batch_size=0)
