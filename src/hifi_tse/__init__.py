"""hifi-tse: 48 kHz target speaker extraction toolkit (HiFi-TSE).

The Python API (:mod:`hifi_tse.api`)::

    from hifi_tse import Extractor
    extractor = Extractor.from_checkpoint("models/demo_model.pt")
    enrollment = extractor.enroll(clip, sample_rate=16000)
    target = extractor.extract(mixture, sample_rate=16000, enrollment=enrollment)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "Activity",
    "Enrollment",
    "EnrollmentWarning",
    "ExtractionError",
    "Extractor",
    "__version__",
]

if TYPE_CHECKING:
    from hifi_tse.api import Enrollment, EnrollmentWarning, ExtractionError, Extractor
    from hifi_tse.infer.activity import Activity


def __getattr__(name: str) -> Any:
    # Lazy: `import hifi_tse` stays light (the CLI imports torch only where needed).
    if name in ("Enrollment", "EnrollmentWarning", "ExtractionError", "Extractor"):
        from hifi_tse import api

        return getattr(api, name)
    if name == "Activity":
        from hifi_tse.infer.activity import Activity

        return Activity
    raise AttributeError(f"module 'hifi_tse' has no attribute {name!r}")
