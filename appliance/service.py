"""Wiring: the one place that turns the configuration into the stages of the pipeline."""

from __future__ import annotations

from appliance.config import Config
from appliance.inference.captioner import CaptionerSettings
from appliance.inference.detector import DetectorSettings
from appliance.inference.loader import Models, load_models
from appliance.inference.manifest import default_models_dir
from appliance.inference.runtime import thread_count
from appliance.inference.settings import InferenceSettings


def inference_settings(config: Config) -> InferenceSettings:
    return InferenceSettings(
        threads=thread_count(config.threads),
        detector=DetectorSettings(
            labels=config.detect_labels, score_threshold=config.detect_score, iou_threshold=config.detect_iou
        ),
        captioner=CaptionerSettings(beam_width=config.caption_beam, length_penalty=config.caption_length_penalty),
    )


def load_configured_models(config: Config) -> Models:
    """Every model slot of the configured models folder, verified and loaded."""
    return load_models(config.models_dir or default_models_dir(), inference_settings(config))
