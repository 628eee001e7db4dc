"""Health monitor: spots the over-suppression pattern in the validation history.

The seed's collapse showed up as validation rms_ratio sliding from 1.33 to 0.63 while TA
output energy sank below the TA target. The monitor turns those signs into warnings (console
and TensorBoard text) instead of leaving them to be found in a table weeks later.

The whole set's level can hide a group's: a model returns the voices it is unsure of (real
recordings of a source it never heard) at two thirds of their level while the mostly familiar
whole set sits at 0.92. So the band is also checked per kind of enrolled voice (``real/``,
``synthetic/``), per speech source of the enrolled target (``source/<name>/``) and on the
targets that speak throughout (``continuous/``, ``<kind>/continuous/``: the pauses between a
talker's words, which suppression fills, cannot hide a voice turned down there), as
validation reports them, for groups with at least :data:`GROUP_MIN_TP_EXAMPLES` TP examples.
"""

from __future__ import annotations

import math

from hifi_tse.config import HealthConfig, ObjectiveConfig
from hifi_tse.data.store import VOICE_KINDS
from hifi_tse.train.validation import CONTINUOUS_GROUP, GROUP_MIN_TP_EXAMPLES, SOURCE_PREFIX


class HealthMonitor:
    """Checks a validation history (list of metric dicts, oldest first) against the band."""

    def __init__(self, health_cfg: HealthConfig, loss_cfg: ObjectiveConfig) -> None:
        self.cfg = health_cfg
        self.ta_target_db = loss_cfg.ta_target_db

    def check(self, history: list[dict[str, float]]) -> list[str]:
        """Warnings (one line each) about the newest validation; empty when healthy."""
        if not history:
            return []
        latest = history[-1]
        step = int(latest.get("step", -1))
        warnings: list[str] = []
        ratio = latest.get("rms_ratio", math.nan)
        if math.isfinite(ratio) and not (
            self.cfg.rms_ratio_low <= ratio <= self.cfg.rms_ratio_high
        ):
            warnings.append(
                f"step {step}: validation rms_ratio {ratio:.3f} is outside the healthy band "
                f"[{self.cfg.rms_ratio_low}, {self.cfg.rms_ratio_high}] (health.rms_ratio_*)"
            )
        window = [h.get("rms_ratio", math.nan) for h in history[-self.cfg.trend_window :]]
        if (
            len(window) == self.cfg.trend_window
            and all(math.isfinite(r) for r in window)
            and all(b < a for a, b in zip(window, window[1:]))
            and window[0] - window[-1] >= self.cfg.trend_min_drop
            # Falling from above the band towards it is recovery, not suppression.
            and window[-1] <= self.cfg.rms_ratio_high
        ):
            trail = " -> ".join(f"{r:.3f}" for r in window)
            warnings.append(
                f"step {step}: validation rms_ratio fell in each of the last "
                f"{self.cfg.trend_window} validations ({trail}): possible over-suppression"
            )
        ta_db = latest.get("ta_energy_db", math.nan)
        floor = self.ta_target_db - self.cfg.ta_energy_margin_db
        if math.isfinite(ta_db) and ta_db < floor:
            warnings.append(
                f"step {step}: validation TA energy {ta_db:.1f} dB is more than "
                f"{self.cfg.ta_energy_margin_db} dB below the TA target "
                f"{self.ta_target_db} dB: the model may be learning to suppress everything"
            )
        return warnings + self._group_warnings(latest, step)

    def _group_warnings(self, latest: dict[str, float], step: int) -> list[str]:
        """One warning per kind, source or continuous-speech group (with enough TP examples)
        whose rms_ratio is out of the band while the whole set's is inside it (else the whole
        set's warning says it)."""
        low, high = self.cfg.rms_ratio_low, self.cfg.rms_ratio_high
        whole = latest.get("rms_ratio", math.nan)
        if not (math.isfinite(whole) and low <= whole <= high):
            return []
        warnings = []
        for key, ratio in latest.items():
            group = key.removesuffix("/rms_ratio")
            continuous = group.split("/")[-1] == CONTINUOUS_GROUP
            if group == key or not (
                group in VOICE_KINDS or group.startswith(SOURCE_PREFIX) or continuous
            ):
                continue
            count = int(latest.get(f"{group}/tp_count", 0))
            if count < GROUP_MIN_TP_EXAMPLES or not math.isfinite(ratio) or low <= ratio <= high:
                continue
            if continuous:
                kind = group.removesuffix(CONTINUOUS_GROUP).rstrip("/")
                who = f"continuous speech of {kind or 'all'} voices"
            elif group in VOICE_KINDS:
                who = f"{group} voices"
            else:
                who = f"targets from source {group.removeprefix(SOURCE_PREFIX)!r}"
            why = "turned down: voices the model is unsure of?" if ratio < low else "too loud"
            se = latest.get(f"{group}/rms_ratio_se", math.nan)
            warnings.append(
                f"step {step}: validation rms_ratio of {who} is {ratio:.3f}±{se:.2g} "
                f"({count} TP examples), outside the healthy band [{low}, {high}] while the "
                f"whole set's {whole:.3f} is inside it ({why})"
            )
        return warnings
