"""Clips of a CSI camera, encoded by picamera2's H.264 encoder: the VideoCore's on a Pi 4, libav's on a Pi 5.

The encoder taps the camera's encode stream (``main`` unless told otherwise) by itself, so
``feed`` encodes nothing. Its packets go into a ``CircularOutput2`` holding the pre-roll; a clip
is a ``PyavOutput`` opened on it, which muxes the packets, with the sensor's timestamps, straight
into an MP4 under the part name. Both came with picamera2 0.3.23; this follows 0.3.38's source.

``CircularOutput2`` is a delay line: it hands a packet to the clip once the packet is older than
the buffer, and only ``stop`` flushes the rest. ``end`` therefore stops it (which also closes the
clip) and starts it again at once: the next clip's pre-roll refills from there.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.cameras.source import Frame
from appliance.recording.recorder import (
    FRAGMENTED_MP4,
    SYNC_EVERY,
    Recorder,
    discard,
    finalise,
    part_path,
    sync,
)
from appliance.video import whole_mp4

log = logging.getLogger(__name__)


class _Clip:
    """A clip's paths and the first error the encoder's thread reported while writing it."""

    def __init__(self, path: Path) -> None:
        self.path, self.part = path, part_path(path)
        self.output: Any = None  # the PyavOutput, while it is open
        self.error: Exception | None = None
        self.synced = time.monotonic()  # when the part was last synced to the disk

    def fail(self, error: Exception) -> None:
        """PyavOutput's error_callback: it has closed its file and writes nothing more."""
        if self.error is None:
            self.error = error

    def settle(self) -> Path | None:
        """The final path of the closed clip, or None (logged, the part removed) when it is not whole."""
        if self.error is not None:
            log.error("clip %s failed while writing, it is dropped: %s", self.path, self.error)
        elif not self.part.exists():
            log.warning("clip %s has no file: no frames came, or its folder was removed", self.path)
        elif not whole_mp4(self.part):
            log.error("clip %s could not be written whole (was the disk full?), it is dropped", self.path)
        else:
            return finalise(self.part, self.path)
        discard(self.part)
        return None


class PiCamera2Recorder(Recorder):
    """Clips of the Picamera2 object that ``camera()`` returns (None while the camera is closed).

    The encoder follows the camera: when the camera source is reopened, and so is a new Picamera2
    object, the next frame moves the encoder to it (a clip open at that moment is closed with what
    it has; ``end`` still returns it). ``fps`` is the camera's frame rate, for a keyframe every
    ``keyframe_every`` seconds, which is how accurate the pre-roll is.
    """

    def __init__(
        self,
        camera: Callable[[], Any],
        preroll: float,
        fps: float = 10.0,
        *,
        stream: str | None = None,
        keyframe_every: float = 1.0,
    ) -> None:
        self._camera = camera
        self.preroll, self.fps, self._stream = preroll, fps, stream
        self._iperiod = max(1, round(fps * keyframe_every))
        # One GOP more than the pre-roll, so the clip's first keyframe is at or before the pre-roll's start.
        self._buffer_ms = round((preroll + keyframe_every) * 1000)
        self._lock = threading.Lock()
        self._running = False
        self._attached: Any = None  # the Picamera2 object the encoder was started on
        self._encoder: Any = None
        self._circular: Any = None
        self._output_class: Any = None  # picamera2's PyavOutput: one per clip
        self._clip: _Clip | None = None

    def start(self) -> None:
        with self._lock:
            self._running = True
            self._follow_camera()

    def stop(self) -> None:
        with self._lock:
            self._running = False
            self._detach()
            clip, self._clip = self._clip, None
        if clip is not None:
            log.info("recorder stopping: clip %s finished as %s", clip.path, clip.settle())

    def feed(self, frame: Frame) -> None:
        clip = self._clip
        if clip is not None and frame.time - clip.synced >= SYNC_EVERY:  # the encoder's thread writes the part
            clip.synced = frame.time
            with contextlib.suppress(OSError):  # not made yet, or being renamed: the next sync catches up
                sync(clip.part)
        if self._camera() is self._attached:
            return  # the usual case: the encoder is on this camera already
        with self._lock:
            if self._running:
                self._follow_camera()

    def begin(self, path: Path) -> None:
        with self._lock:
            if self._clip is not None:
                raise RuntimeError(f"a clip is already being recorded to {self._clip.path}")
            clip = self._clip = _Clip(path)
            if self._circular is None:
                clip.fail(RuntimeError("the camera's H.264 encoder is not running"))
                return
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                # The format is named: the part name's extension does not say it.
                output = self._output_class(str(clip.part), format="mp4", options=FRAGMENTED_MP4)
                output.error_callback = clip.fail
                self._circular.open_output(output)
            except Exception as error:  # an unusable folder, or picamera2 refusing: this clip only
                clip.fail(error)
                with contextlib.suppress(Exception):  # an early CircularOutput2 kept the output it failed to open
                    self._circular.close_output()
                return
            clip.output = output

    def end(self) -> Path | None:
        with self._lock:
            clip, self._clip = self._clip, None
            if clip is None:
                return None
            if clip.output is not None:
                self._flush(clip)
        # Syncing can take a while on an SD card; the encoder keeps filling the next pre-roll meanwhile.
        return clip.settle()

    def _flush(self, clip: _Clip) -> None:
        """Write the buffered tail into the clip and close it; the circular buffer starts again, empty."""
        try:
            self._circular.stop()
        except Exception as error:  # stopped behind our back: the encoder's own stop flushed the clip already
            log.warning("the circular buffer could not be stopped: %s", error)
        if not self._circular.recording:  # (an early CircularOutput2's stop left it recording)
            self._circular.start()
        clip.output = None

    def _follow_camera(self) -> None:
        camera = self._camera()
        if camera is self._attached:
            return
        self._detach()
        self._attached = camera
        if camera is None:
            return
        try:
            from picamera2.encoders import H264Encoder  # type: ignore[import-not-found]
            from picamera2.outputs import CircularOutput2, PyavOutput  # type: ignore[import-not-found]

            encoder = H264Encoder(iperiod=self._iperiod, framerate=self.fps)
            circular = CircularOutput2(buffer_duration_ms=self._buffer_ms)
            camera.start_encoder(encoder, circular, name=self._stream)
        except Exception as error:
            log.error("the camera's H.264 encoder did not start, so no clips until the camera reopens: %s", error)
            return
        self._encoder, self._circular, self._output_class = encoder, circular, PyavOutput
        log.info("H.264 encoder started on the camera (keyframe every %d frames)", self._iperiod)

    def _detach(self) -> None:
        """Stop the encoder on the camera it ran on; its stop flushes and closes an open clip."""
        if self._encoder is not None:
            try:
                self._attached.stop_encoder(self._encoder)
            except Exception as error:  # the camera may be closed already
                log.warning("the camera's H.264 encoder did not stop cleanly: %s", error)
            if self._circular.recording:  # the encoder did not get as far as stopping its outputs
                with contextlib.suppress(Exception):
                    self._circular.stop()
            if self._clip is not None:
                self._clip.output = None  # closed with what it had; ``end`` finishes it
        self._attached = self._encoder = self._circular = None
