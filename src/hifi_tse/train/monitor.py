"""Health monitor: spots the over-suppression pattern in the validation history.

The seed's collapse showed up as validation rms_ratio sliding from 1.33 to 0.63 while TA
output energy sank below the TA target. The monitor turns those signs into warnings (console
and TensorBoard text) instead of leaving them to be found in a table weeks later.
"""

from __future__ import annotations

import math

from hifi_tse.config import HealthConfig, ObjectiveConfig


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
        return warnings
