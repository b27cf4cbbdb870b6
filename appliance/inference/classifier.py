"""The classifier slot: what a person in a box is doing."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

from appliance.inference.imaging import Box, Image
from appliance.inference.model import TFLiteModel


@dataclass(frozen=True)
class Classification:
    scores: dict[str, float]  # label -> probability, in the labels file's order

    @property
    def top(self) -> tuple[str, float]:
        label = max(self.scores, key=self.scores.__getitem__)
        return label, self.scores[label]


class Classifier(ABC):
    """Scores each label for the person in a box. One subclass per model family."""

    labels: tuple[str, ...]

    @property
    @abstractmethod
    def models(self) -> Mapping[str, TFLiteModel]:
        """The interpreters this classifier runs, by role."""

    @abstractmethod
    def classify(self, frame: Image, box: Box) -> Classification:
        """Label probabilities for the person in ``box`` (frame pixels) of ``frame`` (BGR)."""
