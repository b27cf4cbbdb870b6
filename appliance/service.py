"""Wiring: the one place that turns the configuration into the stages of the pipeline and runs them.

The main loop owns the detector, the scheduler and the event manager: each tick it asks the
scheduler for a frame, detects, and feeds the events stage. Grabbers (one thread per camera), the
describer (classifier and captioner) and the MQTT publisher run in threads of their own and talk
to the loop through bounded slots. A failing camera is reopened by its grabber; a failing
describer or publisher ends the run with status 1, for systemd to restart the service.
"""

from __future__ import annotations

import logging
import os
import resource
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from appliance.cameras.grabber import Grabber, GrabberStats
from appliance.cameras.registry import open_source
from appliance.cameras.source import CameraError, SourceSettings
from appliance.cameras.uri import CameraUri
from appliance.config import Config
from appliance.errors import ApplianceError, ConfigError, ModelError
from appliance.events.describer import Describer
from appliance.events.facts import AlertSettings
from appliance.events.journal import EventJournal
from appliance.events.manager import CameraOutputs, EventManager, EventSettings
from appliance.events.presence import PresenceSettings
from appliance.events.reports import CameraReport, EventReport, PersonState, Report
from appliance.events.trust import Trust, world_of
from appliance.inference.captioner import CaptionerSettings
from appliance.inference.detector import Detector, DetectorSettings, PresenceScores
from appliance.inference.loader import Models, load_models
from appliance.inference.manifest import default_models_dir
from appliance.inference.runtime import thread_count
from appliance.inference.settings import InferenceSettings
from appliance.mqtt.discovery import discovery_messages, ha_status_topic
from appliance.mqtt.outbox import Outbox
from appliance.mqtt.publisher import MqttSettings, Publisher
from appliance.mqtt.topics import Message, Topics, device_id
from appliance.notify import Notifier
from appliance.recording.clips import ClipStore
from appliance.recording.picamera2 import PiCamera2Recorder
from appliance.recording.recorder import Recorder
from appliance.recording.software import SoftwareRecorder
from appliance.scheduler import Scheduler

log = logging.getLogger(__name__)

FIRST_FRAME_WAIT = 15.0  # seconds READY waits at most for every camera's first frame or first failure
RETENTION_WRITING = 2.0  # seconds between retention checks while a clip is being written
RETENTION_IDLE = 300.0  # and otherwise (clips age; other files fill the disk)
DESCRIBE_HUNG_S = 60.0  # one keyframe described for longer than this (a caption takes under a second) is a hang
# The loop sleeps until the next detection tick or a finished description; this bounds how late it
# sees a stop request.
LONGEST_WAIT = 0.25


def inference_settings(config: Config) -> InferenceSettings:
    return InferenceSettings(
        threads=thread_count(config.threads),
        detector=DetectorSettings(
            labels=config.detect_labels,
            objects=config.held_objects,
            score_threshold=config.detect_score,
            presence_score=config.presence_score,
            iou_threshold=config.detect_iou,
            nested_threshold=config.detect_nested,
        ),
        captioner=CaptionerSettings(
            beam_width=config.caption_beam,
            length_penalty=config.caption_length_penalty,
            mirror=config.caption_mirror,
        ),
    )


def load_configured_models(config: Config) -> Models:
    """Every model slot of the configured models folder, verified and loaded."""
    return load_models(config.models_dir or default_models_dir(), inference_settings(config))


def data_folder(config: Config, environ: Mapping[str, str]) -> Path:
    """Where the outbox and (by default) the clips live: the setting, systemd's StateDirectory, or ~/.local/state."""
    if config.data_dir is not None:
        return config.data_dir
    state = environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(state) if state else Path.home() / ".local" / "state" / "appliance"


@dataclass(frozen=True)
class CameraPlan:
    slot: int
    name: str
    uri: CameraUri


def camera_plan(config: Config) -> list[CameraPlan]:
    """The configured cameras; raises ConfigError when there is none or two share a name."""
    plan = [
        CameraPlan(slot, name, uri)
        for slot, (uri, name) in enumerate(
            [(config.camera_0, config.camera_0_name), (config.camera_1, config.camera_1_name)]
        )
        if uri is not None
    ]
    if not plan:
        raise ConfigError("APPLIANCE_CAMERA_0 and APPLIANCE_CAMERA_1 are both empty: configure at least one camera")
    if len({p.name for p in plan}) < len(plan):
        raise ConfigError(
            f"APPLIANCE_CAMERA_0_NAME and APPLIANCE_CAMERA_1_NAME are both {plan[0].name!r}: give each camera its own"
        )
    return plan


def writable_folder(path: Path, key: str) -> None:
    """Create ``path`` if need be and write a file into it; ConfigError naming ``key`` when that fails."""
    probe = path / f".appliance-write-test-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"{key}: cannot write to {path}: {error.strerror or error}") from None


@dataclass(frozen=True)
class Prepared:
    """What start-up found usable, before any camera or the broker is opened."""

    cameras: list[CameraPlan]
    models: Models
    data: Path  # the data folder: the outbox, and the clips unless APPLIANCE_RECORD_DIR says otherwise


def prepare(config: Config, environ: Mapping[str, str]) -> Prepared:
    """Every check `run` makes before it opens a camera or the broker, and `check` makes too: each camera
    URI (what can be known without the device), the folders written to, the TLS files, the models and what
    the settings ask of them. Raises ConfigError naming the key, or ModelError naming the file."""
    plan = camera_plan(config)
    for camera in plan:
        try:
            open_source(camera.uri, SourceSettings(*config.camera_size, config.camera_fps)).check()
        except CameraError as error:
            raise ConfigError(f"APPLIANCE_CAMERA_{camera.slot}: {error}") from None
    folder = data_folder(config, environ)
    writable_folder(folder, "APPLIANCE_DATA_DIR" if config.data_dir is not None else f"the data folder ({folder})")
    if config.record:
        clips = config.record_dir or folder / "clips"
        writable_folder(clips, "APPLIANCE_RECORD_DIR" if config.record_dir is not None else "APPLIANCE_DATA_DIR")
    MqttSettings.from_config(config, device_id(config.device_id)).tls_context()
    models = load_configured_models(config)
    if models.detector is None:
        raise ModelError(f"{models.manifest.path}: no detector slot; the appliance needs one to see people")
    check_alert_labels(config, models)
    return Prepared(plan, models, folder)


def check_alert_labels(config: Config, models: Models) -> None:
    if models.classifier is None:
        return
    unknown = [label for label in config.alert_labels if label not in models.classifier.labels]
    if unknown:
        raise ConfigError(
            f"APPLIANCE_ALERT_LABELS: {', '.join(unknown)} not among the classifier's labels "
            f"({', '.join(models.classifier.labels)})"
        )


def trust_of(camera: CameraPlan, models: Models) -> Trust:
    """Which of the models are validated for ``camera``: those trained on the world it shows."""
    domains = {name: entry.domain.kind if entry.domain else None for name, entry in models.manifest.slots.items()}
    return Trust(world=world_of(camera.uri.scheme), domains=domains)


def unvalidated_alerts(config: Config, cameras: list[CameraPlan], models: Models) -> list[str]:
    """One line per camera on which a configured alert source can raise nothing: its model is not validated
    there (a synthetic classifier or captioner on a real camera)."""
    lines = []
    for camera in cameras:
        trust = trust_of(camera, models)
        silent = []
        if config.alert_labels and models.classifier is not None and not trust.validated("classifier"):
            silent.append(f"APPLIANCE_ALERT_LABELS ({', '.join(config.alert_labels)}: classifier)")
        if config.alert_words and models.captioner is not None and not trust.validated("captioner"):
            silent.append("APPLIANCE_ALERT_WORDS (captioner)")
        if silent:
            domains = ", ".join(f"{slot} {kind or 'not said'}" for slot, kind in trust.domains.items())
            lines.append(
                f"{camera.name} ({trust.world} camera): no alert from {'; '.join(silent)}: "
                f"not validated for a {trust.world} camera (models: {domains})"
            )
    return lines


def presence_scores(config: Config, detector: Detector) -> PresenceScores:
    """The presence and confirm scores in force: the detector's own (from its manifest), each overridden
    by its APPLIANCE_PRESENCE_* key when set."""
    own = detector.presence
    given = [key for key, value in (("SCORE", config.presence_score), ("CONFIRM", config.presence_confirm)) if value]
    if not given:
        return own
    return PresenceScores(
        config.presence_score if config.presence_score is not None else own.score,
        config.presence_confirm if config.presence_confirm is not None else own.confirm,
        ", ".join(f"APPLIANCE_PRESENCE_{key}" for key in given) + f" (else {own.source})",
    )


def event_settings(config: Config, detector: Detector) -> EventSettings:
    scores = presence_scores(config, detector)
    return EventSettings(
        keyframe_every=config.keyframe_every,
        postroll=config.postroll,
        trigger=config.trigger,
        alerts=AlertSettings(
            labels=config.alert_labels, score=config.alert_score, words=config.alert_words, fall=config.alert_fall
        ),
        alert_hold=config.alert_hold,
        held_objects=config.held_objects,
        language=config.language,
        presence=PresenceSettings(
            hits=config.presence_hits,
            window=config.presence_window,
            confirm_score=scores.confirm,
            hold=config.presence_hold,
            min_score=scores.score,
            min_area=config.presence_min_area,
            moving=config.presence_motion,
        ),
    )


class _Camera:
    """One camera slot's grabber and recorder; the source is made afresh at each (re)open."""

    def __init__(
        self, plan: CameraPlan, config: Config, detect_size: tuple[int, int], sink: Callable[[Report], None]
    ) -> None:
        self.plan = plan
        self.settings = SourceSettings(config.camera_size[0], config.camera_size[1], config.camera_fps, detect_size)
        self.recorder: Recorder | None = None
        if config.record:
            if plan.uri.scheme == "picamera2":
                self.recorder = PiCamera2Recorder(
                    lambda: getattr(self.grabber.source, "camera", None), config.preroll, config.camera_fps
                )
            else:
                self.recorder = SoftwareRecorder(config.preroll)
        self.grabber = Grabber(
            plan.slot,
            plan.name,
            lambda: open_source(plan.uri, self.settings),
            on_frame=[self.recorder.feed] if self.recorder is not None else [],
            on_state=lambda state, error: sink(CameraReport(plan.name, state, time.time(), error)),
        )


@dataclass
class _Period:
    """Per-model times (ms) of the current stats period."""

    start: float
    detect: list[float] = field(default_factory=list)
    classify: list[float] = field(default_factory=list)
    caption: list[float] = field(default_factory=list)

    def median(self, name: str) -> float | None:
        values: list[float] = getattr(self, name)
        return round(statistics.median(values), 2) if values else None


def _retain(clips: ClipStore, manager: EventManager) -> float:
    """Retention, cutting the clips being written when they alone leave no room; seconds to the next run:
    while a clip grows, often (never more than that much of video over the quota or the free floor)."""
    clips.enforce()
    if not clips.room:
        manager.cut_clips()
    return RETENTION_WRITING if manager.recording else RETENTION_IDLE


def _clip_paths(clips: ClipStore, camera: str) -> Callable[[str, float], Path]:
    return lambda event_id, wall: clips.path_for(camera, event_id, wall)


def _camera_stats(stats: GrabberStats) -> dict[str, object]:
    return {"state": stats.state, "fps": round(stats.fps, 2), "frames": stats.frames, "failures": stats.failures}


def _read_number(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def cpu_temperature() -> float | None:
    text = _read_number("/sys/class/thermal/thermal_zone0/temp")
    return round(int(text) / 1000.0, 1) if text and text.lstrip("-").isdigit() else None


def throttled() -> str | None:
    """The Pi firmware's throttling flags (as ``vcgencmd get_throttled``), where the kernel exposes them."""
    return _read_number("/sys/devices/platform/soc/soc:firmware/get_throttled")


class Service:
    """The running appliance: ``run`` returns the exit status when ``stop`` is set or every camera ended."""

    def __init__(self, config: Config, environ: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.environ = dict(os.environ if environ is None else environ)
        self.device = device_id(config.device_id)
        self.topics = Topics(config.mqtt_prefix, self.device)
        self.notifier = Notifier(self.environ)
        self.started = time.monotonic()

    def run(self, stop: threading.Event) -> int:
        config = self.config
        self.notifier.status("loading models")
        prepared = prepare(config, self.environ)
        plan, models, folder = prepared.cameras, prepared.models, prepared.data
        assert models.detector is not None
        names = [p.name for p in plan]
        for line in unvalidated_alerts(config, plan, models):
            log.warning("%s", line)
        self.publisher = Publisher(
            MqttSettings.from_config(config, self.device),
            self.topics,
            Outbox(folder / "outbox.sqlite", config.mqtt_outbox_max),
            on_connect=lambda: self._on_connect(names),
            answers={
                ha_status_topic(config.ha_prefix): lambda said: self._on_connect(names) if said == "online" else []
            }
            if config.ha_discovery
            else None,
        )
        self.publisher.start()
        clips = self._clip_store(folder) if config.record else None  # leftover parts are made whole first
        journal = EventJournal(folder / "events.json")
        self._end_interrupted(journal, names)
        cameras = [_Camera(p, config, models.detector.input_size, self._sink) for p in plan]
        describer = Describer(models.classifier, models.captioner)
        manager = EventManager(
            event_settings(config, models.detector),
            {
                c.plan.slot: CameraOutputs(
                    c.plan.name,
                    c.recorder,
                    _clip_paths(clips, c.plan.name) if clips else None,
                    trust_of(c.plan, models),
                )
                for c in cameras
            },
            models.detector.person_classes,
            describer.submit,
            self._sink,
            journal,
            models.detector.fall_classes,
        )
        try:
            for camera in cameras:
                if camera.recorder is not None:
                    camera.recorder.start()
                camera.grabber.start()
            describer.start()
            self._wait_for_frames(cameras, stop)
            self.notifier.ready(f"{len(cameras)} camera(s), publishing to {config.mqtt_host}:{config.mqtt_port}")
            log.info("running: cameras %s, device %s, topics under %s", ", ".join(names), self.device, self.topics.root)
            return self._loop(models, cameras, describer, manager, clips, stop)
        finally:
            self.notifier.stopping()
            manager.close(time.monotonic())
            for camera in cameras:
                camera.grabber.stop()
                if camera.recorder is not None:
                    camera.recorder.stop()
            describer.stop()
            self.publisher.stop()
            self.notifier.close()

    def _end_interrupted(self, journal: EventJournal, names: list[str]) -> None:
        """End the events the previous run left open (it died mid-event) and say every camera's person sensor
        is OFF until someone is seen: a retained ON left by a dead run would show a room occupied for good."""
        now = time.time()
        for event in journal.take_leftovers():
            clip = event.clip if event.clip is not None and Path(event.clip).is_file() else None
            log.warning(
                "event %s of %s was interrupted (the service stopped mid-event): ended", event.event_id, event.camera
            )
            self._sink(
                EventReport(
                    "end",
                    event.event_id,
                    event.camera,
                    event.started,
                    now,
                    0,
                    event.max_persons,
                    ended=event.last_seen,
                    clip=clip,
                    alert=event.alert,
                    labels=event.labels,
                    reason="interrupted",
                )
            )
        for name in names:
            self._sink(PersonState(name, False, now))

    def _clip_store(self, folder: Path) -> ClipStore:
        config = self.config
        return ClipStore(
            config.record_dir or folder / "clips",
            int(config.record_max_gb * 1e9) if config.record_max_gb is not None else None,
            config.record_max_days * 86400.0,
            config.record_min_free_percent / 100.0,
        )

    def _on_connect(self, names: list[str]) -> list[Message]:
        if not self.config.ha_discovery:
            return []
        return discovery_messages(self.topics, names, self.config.ha_prefix)

    def _sink(self, report: Report) -> None:
        log.debug("report %s", report)
        self.publisher.report(report)

    def _wait_for_frames(self, cameras: list[_Camera], stop: threading.Event) -> None:
        deadline = time.monotonic() + FIRST_FRAME_WAIT
        while not stop.is_set() and time.monotonic() < deadline:
            if all(c.grabber.state is not None for c in cameras):  # each has delivered a frame or failed once
                return
            stop.wait(0.05)

    def _loop(
        self,
        models: Models,
        cameras: list[_Camera],
        describer: Describer,
        manager: EventManager,
        clips: ClipStore | None,
        stop: threading.Event,
    ) -> int:
        config = self.config
        detector = models.detector
        assert detector is not None
        scheduler = Scheduler(
            [(c.plan.slot, c.grabber.latest) for c in cameras],
            config.detect_fps,
            config.idle_detect_every,
            config.motion_share,
        )
        period = _Period(time.monotonic())
        next_tick = next_retention = period.start
        next_stats = period.start + config.stats_every  # a whole period, or the first rate is noise
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_tick:
                next_tick = max(next_tick + scheduler.interval, now - scheduler.interval)
                decision = scheduler.next(now)
                if decision is not None:
                    start = time.perf_counter()
                    found = detector.detect(decision.frame.image)
                    period.detect.append((time.perf_counter() - start) * 1000.0)
                    slot = decision.frame.camera
                    manager.on_detection(slot, decision.frame, found)
                    scheduler.set_watched(slot, manager.watch(slot))
                else:
                    manager.tick(now)
            for description in describer.results():
                period.classify.append(description.classify_ms)
                period.caption.append(description.caption_ms)
                manager.on_description(description)
            if describer.error is not None:
                raise ApplianceError(f"the describer failed: {describer.error}")
            if self._healthy(cameras, describer, now):
                self.notifier.watchdog(now)
            if clips is not None and now >= next_retention:
                next_retention = now + _retain(clips, manager)
            if now >= next_stats:
                self.publisher.send(self._stats(cameras, describer, manager, clips, period, now))
                period, next_stats = _Period(now), now + config.stats_every
            if not any(c.grabber.alive for c in cameras):
                log.info("every camera has ended: stopping")
                manager.close(time.monotonic())
                describer.stop()
                for description in describer.results():
                    manager.on_description(description)
                return 0
            if describer.finished.wait(min(LONGEST_WAIT, max(0.0, next_tick - time.monotonic()))):
                describer.finished.clear()  # before the next results(): a later description sets it again
        return 0

    def _healthy(self, cameras: list[_Camera], describer: Describer, now: float) -> bool:
        """Whether systemd's watchdog may be pinged: this loop runs (it is asking), and no thread of the
        service hangs. A camera that fails is reported and retried by its grabber, which a restart would not
        mend (a dead IP camera); a read blocked beyond every timeout, a describer stuck on one keyframe or a
        publisher thread gone are what a restart can mend."""
        return (
            not any(c.grabber.hung(now) for c in cameras)
            and not describer.stuck(now, DESCRIBE_HUNG_S)
            and self.publisher.alive
        )

    def _stats(
        self,
        cameras: list[_Camera],
        describer: Describer,
        manager: EventManager,
        clips: ClipStore | None,
        period: _Period,
        now: float,
    ) -> Message:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return self.topics.stats_message(
            {
                "uptime": round(time.monotonic() - self.started, 1),
                "detections_per_s": round(len(period.detect) / (now - period.start), 2),
                "ms": {name: period.median(name) for name in ("detect", "classify", "caption")},
                "cameras": {c.plan.name: _camera_stats(c.grabber.stats()) for c in cameras},
                "events": manager.events_started,
                "keyframes_replaced": describer.replaced,
                "cpu_temp_c": cpu_temperature(),
                "throttled": throttled(),
                "disk_free_gb": round(clips.free_bytes() / 1e9, 2) if clips is not None else None,
                "outbox_depth": self.publisher.depth,
                "outbox_dropped": self.publisher.dropped,
                "rss_mb": round(usage.ru_maxrss / 1024.0, 1),
                "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            },
        )
