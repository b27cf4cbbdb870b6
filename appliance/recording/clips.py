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
from appliance.recording.recorder import PART_SUFFIX, discard, finalise
from appliance.video import salvage

log = logging.getLogger(__name__)

CLIP_SUFFIX = ".mp4"
SALVAGE_SUFFIX = ".salvage"  # a leftover part being made whole: ``name.mp4.salvage``
_NAME = re.compile(r"[A-Za-z0-9_-]+")  # camera names and event ids become path components


class RecordingError(ApplianceError):
    """A clips folder that cannot be created or read."""


class NoRoomError(RecordingError):
    """No clip can start: the ones being written fill the quota or the disk's free share."""


@dataclass(frozen=True, slots=True)
class _Clip:
    path: Path
    size: int
    mtime: float


class ClipStore:
    """Finished clips under ``folder``, kept within ``max_bytes`` and ``max_age_seconds`` (0: no age limit).

    Creating the store creates the folder and makes whole the clips a crash left unfinished: make it
    before any recorder starts.
    """

    def __init__(
        self, folder: Path, max_bytes: int | None, max_age_seconds: float, min_free_share: float = 0.0
    ) -> None:
        self.folder, self.max_bytes, self.max_age_seconds = folder, max_bytes, max_age_seconds
        self.min_free_share = min_free_share  # of the file system's size, kept free
        self.room = True  # whether the last enforce left room for clips (quota and free floor)
        self._lock = threading.Lock()  # enforce runs before each clip of each camera and on a timer
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RecordingError(f"cannot create the clips folder {folder}: {error.strerror or error}") from None
        self.salvage_leftovers()

    def path_for(self, camera: str, event_id: str, wall_time: float) -> Path:
        """Where the clip of ``event_id`` that started at ``wall_time`` (seconds since the epoch) goes; retention
        runs first, and NoRoomError says the quota or the free floor leaves no room for it."""
        self.enforce()
        if not self.room:
            raise NoRoomError(
                f"no room for a clip in {self.folder}: its quota or the disk's free share is taken by clips "
                "being written"
            )
        for name in (camera, event_id):
            if not _NAME.fullmatch(name):
                raise ValueError(f"{name!r} cannot be part of a clip's path: use letters, digits, '-' and '_'")
        local = time.localtime(wall_time)
        day, hms = time.strftime("%Y-%m-%d", local), time.strftime("%H%M%S", local)
        return self.folder / camera / day / f"{hms}_{event_id}{CLIP_SUFFIX}"

    def salvage_leftovers(self) -> list[Path]:
        """Make whole the clips that were being written when the process died (a power cut, a kill): each
        part file is remuxed into a whole MP4 under the clip's own name, marked interrupted in its metadata,
        and removed; a part without video is removed. Returns the clips made whole."""
        salvaged = []
        for part in sorted(self.folder.glob(f"*/*/*{CLIP_SUFFIX}{PART_SUFFIX}")):
            path = part.with_name(part.name.removesuffix(PART_SUFFIX))
            staging = part.with_name(path.name + SALVAGE_SUFFIX)
            packets = salvage(part, staging)
            if packets and finalise(staging, path) is not None:
                log.warning("%s: a clip left unfinished by a crash or power cut, made whole (%d frames)", path, packets)
                salvaged.append(path)
            else:
                log.warning("removed %s: a clip left unfinished by a crash or power cut, with no video in it", part)
            discard(part)
            discard(staging)
        return salvaged

    def enforce(self, now: float | None = None) -> list[Path]:
        """Delete finished clips, oldest first, until they fit the quota, the disk keeps its free share and
        none is too old; returns them. Sets ``room``: whether, after that, clips fit at all.

        Clips being written count towards the quota (they take the disk) but are never deleted here:
        when they alone leave no room, ``room`` says so and the service cuts them short.
        Day folders left empty are removed, but for today's.
        """
        now = time.time() if now is None else now
        with self._lock:
            clips, writing = self._scan()
            total = sum(clip.size for clip in clips) + writing
            disk = shutil.disk_usage(self.folder)
            floor = self.min_free_share * disk.total
            free = disk.free
            deleted = []
            for clip in clips:  # oldest first
                too_old = self.max_age_seconds > 0 and clip.mtime < now - self.max_age_seconds
                over = (self.max_bytes is not None and total > self.max_bytes) or free < floor
                if not over and not too_old:
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
                free += clip.size
            self.room = (self.max_bytes is None or total <= self.max_bytes) and free >= floor
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
