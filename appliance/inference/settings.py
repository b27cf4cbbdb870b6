"""What the configuration tells the model families."""

from __future__ import annotations

from dataclasses import dataclass, field

from appliance.inference.captioner import CaptionerSettings
from appliance.inference.detector import DetectorSettings


@dataclass(frozen=True)
class InferenceSettings:
    threads: int = 1
    detector: DetectorSettings = field(default_factory=DetectorSettings)
    captioner: CaptionerSettings = field(default_factory=CaptionerSettings)
