"""The clips folder: where each clip goes, what a crash left behind, and what retention deletes.

Layout: ``<folder>/<camera>/<YYYY-MM-DD>/<HHMMSS>_<event id>.mp4`` in local time, so a person can
find a clip with a file manager. Clips being written are ``....mp4.part``; retention never touches
them, and only start-up removes the ones a crash left.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import ApplianceError
from appliance.recording.recorder import PART_SUFFIX

log = logging.getLogger(__name__)

CLIP_SUFFIX = ".mp4"
_NAME = re.compile(r"[A-Za-z0-9_-]+")  # camera names and event ids become path components


class RecordingError(ApplianceError):
    """A clips folder that cannot be created or read."""


@dataclass(frozen=True, slots=True)
class _Clip:
    path: Path
    size: int
    mtime: float


class ClipStore:
    """Finished clips under ``folder``, kept within ``max_bytes`` and ``max_age_seconds`` (0: no age limit).

    Creating the store creates the folder and removes unfinished clips left by a crash: make it
    before any recorder starts.
    """

    def __init__(self, folder: Path, max_bytes: int, max_age_seconds: float) -> None:
        self.folder, self.max_bytes, self.max_age_seconds = folder, max_bytes, max_age_seconds
        self._lock = threading.Lock()  # enforce runs before each clip of each camera and on a timer
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RecordingError(f"cannot create the clips folder {folder}: {error.strerror or error}") from None
        self.remove_leftovers()

    def path_for(self, camera: str, event_id: str, wall_time: float) -> Path:
        """Where the clip of ``event_id`` that started at ``wall_time`` (seconds since the epoch) goes."""
        for name in (camera, event_id):
            if not _NAME.fullmatch(name):
                raise ValueError(f"{name!r} cannot be part of a clip's path: use letters, digits, '-' and '_'")
        local = time.localtime(wall_time)
        day, hms = time.strftime("%Y-%m-%d", local), time.strftime("%H%M%S", local)
        return self.folder / camera / day / f"{hms}_{event_id}{CLIP_SUFFIX}"

    def remove_leftovers(self) -> list[Path]:
        """Delete the part files of clips that were being written when the process died; returns them."""
        removed = []
        for part in sorted(self.folder.glob(f"*/*/*{CLIP_SUFFIX}{PART_SUFFIX}")):
            try:
                size = part.stat().st_size
                part.unlink()
            except OSError as error:
                log.error("unfinished clip %s could not be removed: %s", part, error)
                continue
            log.warning("removed %s (%d bytes): a clip left unfinished by a crash or power cut", part, size)
            removed.append(part)
        return removed

    def enforce(self, now: float | None = None) -> list[Path]:
        """Delete finished clips, oldest first, until they fit the quota and none is too old; returns them.

        Clips being written count towards the quota (they take the disk) but are never deleted.
        Day folders left empty are removed, but for today's.
        """
        now = time.time() if now is None else now
        with self._lock:
            clips, writing = self._scan()
            total = sum(clip.size for clip in clips) + writing
            deleted = []
            for clip in clips:  # oldest first
                too_old = self.max_age_seconds > 0 and clip.mtime < now - self.max_age_seconds
                if total <= self.max_bytes and not too_old:
                    break  # the rest are newer: neither too old nor needed for space
                try:
                    clip.path.unlink()
                    deleted.append(clip.path)
                except FileNotFoundError:
                    pass  # removed by hand meanwhile: its space is free all the same
                except OSError as error:
                    log.error("clip %s could not be deleted: %s", clip.path, error)
                    continue
                total -= clip.size
            today = time.strftime("%Y-%m-%d", time.localtime(now))
            for day in sorted({path.parent for path in deleted}):
                if day.name != today:  # a clip may be starting there: its folder is made just before the file
                    with contextlib.suppress(OSError):  # not empty, or already gone: both fine
                        day.rmdir()
        if deleted:
            log.info("retention deleted %d clip(s), %d bytes of clips remain", len(deleted), total)
        return deleted

    def free_bytes(self) -> int:
        """Free space on the clips' file system."""
        return shutil.disk_usage(self.folder).free

    def _scan(self) -> tuple[list[_Clip], int]:
        """The finished clips, oldest first, and the bytes of clips being written."""
        clips, writing = [], 0
        for path in self.folder.glob("*/*/*"):
            try:
                status = path.stat()
            except FileNotFoundError:
                continue  # renamed or deleted while we looked
            if path.name.endswith(CLIP_SUFFIX + PART_SUFFIX):
                writing += status.st_size
            elif path.suffix == CLIP_SUFFIX and stat.S_ISREG(status.st_mode):
                clips.append(_Clip(path, status.st_size, status.st_mtime))
        clips.sort(key=lambda clip: (clip.mtime, clip.path))
        return clips, writing
