"""Room impulse responses: simulation (shoebox image method) and normalisation.

Simulation is kept fast by capping the image-method reflection order
(``PreparationConfig.sim_max_order``) and completing the late reverberation with Gaussian noise
whose envelope decays at the room's RT60 (Sabine), level-matched to the end of the
image-method response. The result has the drawn RT60 at a cost of a few ms per RIR.
"""

from __future__ import annotations

import numpy as np
import pyroomacoustics as pra

from hifi_tse.config import PreparationConfig

# Energy decays by 60 dB over one RT60 by definition.
_RT60_DECAY_DB = 60.0
# Room/RT60 pairs that Sabine cannot realise are redrawn; this many tries is plenty for any
# sane range and keeps a bad config from looping forever.
_MAX_ROOM_DRAWS = 1000
# Source and microphone keep this far from the walls, m (at most a quarter of the room).
WALL_MARGIN_M = 0.5
# Window over which the appended noise tail is matched to the image method's level, ms.
TAIL_WINDOW_MS = 10.0
# Range of simulated shoebox rooms [x, y, z], m: from a small office to a large meeting room,
# with ordinary ceiling heights; sim_rt60 then sets how reverberant each one is.
SIM_ROOM_MIN_M = (3.0, 3.0, 2.4)
SIM_ROOM_MAX_M = (10.0, 8.0, 4.0)


def normalise_rir(h: np.ndarray) -> np.ndarray:
    """Scale ``h`` so its largest |sample| (the direct path) is 1 and trim leading silence.

    The trimmed lead keeps the direct path at sample 0 so the reverberant target stays
    time-aligned with the dry speech.
    """
    h = np.asarray(h, dtype=np.float32)
    if h.size == 0:
        return h
    peak_idx = int(np.argmax(np.abs(h)))
    peak = float(abs(h[peak_idx]))
    if peak <= 0.0:
        return h
    return (h[peak_idx:] / peak).astype(np.float32)


def simulate_rir(
    rng: np.random.Generator, sample_rate: int, cfg: PreparationConfig, max_seconds: float
) -> tuple[np.ndarray, dict]:
    """One random shoebox RIR ``(L_h,)`` float32 at ``sample_rate`` and its parameters.

    Room size, RT60, source and microphone positions are drawn from ``rng`` within
    ``SIM_ROOM_MIN_M``..``SIM_ROOM_MAX_M`` and the ``cfg.sim_*`` ranges. The response is cut
    at ``max_seconds`` (``mixing.max_rir_seconds``: the mixer uses no more of it).
    """
    lo, hi = np.asarray(SIM_ROOM_MIN_M, float), np.asarray(SIM_ROOM_MAX_M, float)
    for _ in range(_MAX_ROOM_DRAWS):
        room = rng.uniform(lo, hi)
        rt60 = float(rng.uniform(*cfg.sim_rt60))
        try:
            # Fails when even fully absorbing walls cannot make this room that dry: redraw.
            absorption, order = pra.inverse_sabine(rt60, room.tolist())
            break
        except ValueError:
            continue
    else:
        raise ValueError(
            f"no room within {list(SIM_ROOM_MIN_M)}..{list(SIM_ROOM_MAX_M)} m reaches RT60 "
            f"{cfg.sim_rt60} s (raise preparation.sim_rt60)"
        )
    margin = min(WALL_MARGIN_M, float(room.min()) / 4)
    src = rng.uniform(margin, room - margin)
    mic = rng.uniform(margin, room - margin)
    order = int(min(order, cfg.sim_max_order))
    shoebox = pra.ShoeBox(
        room.tolist(), fs=sample_rate, materials=pra.Material(absorption), max_order=order
    )
    shoebox.add_source(src.tolist())
    shoebox.add_microphone(mic.tolist())
    shoebox.compute_rir()
    h = normalise_rir(np.asarray(shoebox.rir[0][0], dtype=np.float32))
    h = _extend_tail(h, rt60, sample_rate, max_seconds, rng)
    max_len = int(round(max_seconds * sample_rate))
    info = {
        "rt60": rt60,
        "room": [float(v) for v in room],
        "source": [float(v) for v in src],
        "mic": [float(v) for v in mic],
        "max_order": order,
    }
    return h[:max_len].astype(np.float32), info


def _extend_tail(
    h: np.ndarray, rt60: float, sample_rate: int, max_seconds: float, rng: np.random.Generator
) -> np.ndarray:
    """Append a noise tail decaying at ``rt60`` when the capped image method stopped early."""
    full = int(round(min(rt60, max_seconds) * sample_rate))
    win = max(1, int(round(TAIL_WINDOW_MS * 1e-3 * sample_rate)))
    if len(h) >= full or len(h) <= 2 * win:
        return h
    # Amplitude decay per sample: 60 dB of energy over rt60 seconds.
    decay = 10.0 ** (-_RT60_DECAY_DB / 20.0 / (rt60 * sample_rate))
    # The capped image method thins out towards its end, so its level there underestimates
    # the room; measure it half-way (still dense) and extrapolate along the decay.
    mid = len(h) // 2
    level = float(np.sqrt(np.mean(np.square(h[mid - win // 2 : mid + win - win // 2]))))
    level *= decay ** (len(h) - mid)
    n_tail = full - len(h)
    env = level * decay ** np.arange(1, n_tail + 1)
    tail = (rng.standard_normal(n_tail) * env).astype(np.float32)
    return np.concatenate([h, tail])
