"""The recorder contract: one clip per event, with pre-roll, complete under its final name or not there at all.

A recorder keeps the last seconds of its camera encoded, so that a clip begun when a person
appears starts a few seconds earlier (the pre-roll). The events stage calls ``begin`` when an
event starts and ``end`` when its post-roll is over. The clip is written under a temporary name
beside the final one (``<name>.mp4.part``) and renamed only when complete and on disk, so a crash
or a full disk never leaves a file with a clip's name that does not play.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from pathlib import Path

from appliance.cameras.source import Frame

log = logging.getLogger(__name__)

PART_SUFFIX = ".part"  # a clip being written: ``name.mp4.part``; never a finished clip
# A clip is written as fragmented MP4: a fragment (a moof and its mdat) at each keyframe, each one
# flushed as it is made, so a clip cut short by a power cut or a kill plays up to its last fragment
# (about a second before the end); at start-up such a part is made whole under its name.
FRAGMENTED_MP4 = {"movflags": "frag_keyframe+empty_moov+delay_moov+default_base_moof", "flush_packets": "1"}
SYNC_EVERY = 5.0  # seconds between syncs of a part to the disk: at most this much is lost to a power cut


def part_path(path: Path) -> Path:
    """Where the clip that will end up at ``path`` is written."""
    return path.with_name(path.name + PART_SUFFIX)


def sync(path: Path) -> None:
    """Push what was written to ``path`` so far to the disk (any descriptor syncs the file's data)."""
    _fsync(path)


def _fsync(path: Path, flags: int = os.O_RDONLY) -> None:
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def finalise(part: Path, path: Path) -> Path | None:
    """Give the complete clip ``part`` its final name ``path``, durably; returns ``path``.

    The data reaches the disk before the rename, and the rename before this returns, so after a
    power cut the clip is either whole under its name or still a part file. On failure the part
    is removed, the error logged, and None returned.
    """
    try:
        _fsync(part)
        os.replace(part, path)
        _fsync(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as error:
        log.error("clip %s could not be finished: %s", path, error)
        discard(part)
        return None
    return path


def discard(part: Path) -> None:
    """Remove an unfinished clip; a failure to do so is logged (start-up cleaning retries it)."""
    try:
        part.unlink(missing_ok=True)
    except OSError as error:
        log.error("unfinished clip %s could not be removed: %s", part, error)


class Recorder(ABC):
    """One camera's clips. ``feed`` runs in the camera's grabber thread; the rest in any other thread."""

    @abstractmethod
    def start(self) -> None:
        """Begin keeping the pre-roll."""

    @abstractmethod
    def stop(self) -> None:
        """Finish any open clip (as ``end`` would) and release the encoder; frames fed after this are ignored."""

    @abstractmethod
    def feed(self, frame: Frame) -> None:
        """Take one grabbed frame; called for every frame, so it must be quick."""

    @abstractmethod
    def begin(self, path: Path) -> None:
        """Start the clip that will end up at ``path``, from the pre-roll on.

        Raises RuntimeError when a clip is already open. A clip that cannot be written is logged
        and ends as None; it never stops the recorder.
        """

    @abstractmethod
    def end(self) -> Path | None:
        """Finish the open clip now: its final path, or None when nothing usable was written (or none was open)."""
