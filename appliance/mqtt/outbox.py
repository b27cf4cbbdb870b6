"""The durable outbox: messages wait here, on disk and in order, until the broker acknowledges them.

One SQLite file (WAL, ``synchronous=FULL``: a message put is on disk when ``put`` returns, so a
crash or a power cut loses nothing already accepted). The outbox is bounded: beyond ``limit``
messages the oldest are dropped and counted; the count is stored in the file and survives
restarts. A corrupt file is moved aside (``<name>.corrupt-<UTC time>``) and a new, empty outbox
takes its place, so a damaged SD card costs the queued messages, not the service.

A full disk must not cost messages either, nor send delivered ones twice (SQLite needs room to
delete rows too): beside the file lies a reserve (``<name>.reserve``, RESERVE_BYTES), given up the
moment SQLite finds the disk full, and the transaction tried again; it is made again once there is
room. Trouble that remains is logged once and does not stop the caller; a message that cannot be
stored is counted as dropped, and the count reaches the file with the next write that succeeds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from appliance.errors import ApplianceError
from appliance.mqtt.topics import Message

logger = logging.getLogger(__name__)

T = TypeVar("T")

RESERVE_BYTES = 2 << 20  # room for thousands of messages and their deletion, given up when the disk is full
RESERVE_RETRY_S = 60.0  # how often to try to make the reserve again while it is gone

_SCHEMA = (
    # AUTOINCREMENT: ids never come back after the newest rows are deleted, so "after id N" stays a
    # valid cursor for the publisher even when the outbox empties.
    "CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,"
    " payload TEXT NOT NULL, retain INTEGER NOT NULL, qos INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO counters VALUES ('dropped', 0)",
)


class Outbox:
    """A bounded, ordered, durable queue of messages; safe to use from several threads."""

    def __init__(self, path: Path, limit: int) -> None:
        if limit < 1:
            raise ValueError("the outbox must hold at least one message")
        self.path = path
        self.limit = limit
        self._lock = threading.Lock()
        self._dropping = False  # warn once when the bound starts dropping messages
        self._trouble: str | None = None  # the last storage problem logged, to log each once
        self._depth = self._dropped = 0
        self._unstored = 0  # drops counted in memory that the file does not hold yet
        self.reserve = path.with_name(path.name + ".reserve")
        self._reserve_tried = float("-inf")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._connect()
        except sqlite3.OperationalError as error:  # cannot open or write the file at all
            raise ApplianceError(f"{path}: cannot open the MQTT outbox: {error}") from None
        except sqlite3.DatabaseError as error:
            self._set_aside(error)
            self._db = self._connect()
        self._make_reserve()

    @property
    def depth(self) -> int:
        """Messages waiting."""
        return self._depth

    @property
    def dropped(self) -> int:
        """Messages dropped, oldest first, because the outbox was full (or could not be written)."""
        return self._dropped

    def put(self, message: Message) -> None:
        """Append ``message``; it is on disk when this returns (unless the disk refused it: logged)."""

        def insert(db: sqlite3.Connection) -> int:
            db.execute(
                "INSERT INTO messages (topic, payload, retain, qos) VALUES (?, ?, ?, ?)",
                (message.topic, message.payload, int(message.retain), message.qos),
            )
            excess = max(self._depth + 1 - self.limit, 0)
            if excess:
                db.execute("DELETE FROM messages WHERE id IN (SELECT id FROM messages ORDER BY id LIMIT ?)", (excess,))
            if excess or self._unstored:
                db.execute("UPDATE counters SET value = ? WHERE name = 'dropped'", (self._dropped + excess,))
            return excess

        with self._lock:
            excess = self._transact(insert, None, "store a message")
            if excess is None:
                self._dropped += 1  # in memory until a write succeeds: the file refused it
                self._unstored += 1
                return
            self._depth += 1 - excess
            self._dropped += excess
            self._unstored = 0
            if excess and not self._dropping:
                logger.warning("MQTT outbox full (%d messages): dropping the oldest", self.limit)
            self._dropping = excess > 0

    def peek(self, count: int, after: int = 0) -> list[tuple[int, Message]]:
        """Up to ``count`` waiting messages with an id above ``after``, oldest first."""

        def select(db: sqlite3.Connection) -> list[tuple[int, Message]]:
            rows = db.execute(
                "SELECT id, topic, payload, retain, qos FROM messages WHERE id > ? ORDER BY id LIMIT ?",
                (after, count),
            )
            return [(row[0], Message(row[1], row[2], bool(row[3]), row[4])) for row in rows]

        with self._lock:
            return self._transact(select, [], "read messages")

    def remove(self, ids: Iterable[int]) -> None:
        """Forget the messages ``ids`` (delivered); unknown ids are ignored."""
        keys = [(key,) for key in ids]

        def delete(db: sqlite3.Connection) -> int:
            return db.executemany("DELETE FROM messages WHERE id = ?", keys).rowcount

        if keys:
            with self._lock:
                self._depth -= self._transact(delete, 0, "remove delivered messages")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {check}")
            with db:
                for statement in _SCHEMA:
                    db.execute(statement)
            self._depth = db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
            self._dropped = db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()[0]
        except BaseException:
            db.close()
            raise
        return db

    def _set_aside(self, error: sqlite3.DatabaseError) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        logger.error(
            "MQTT outbox %s is corrupt (%s): moved it to %s and started an empty one; "
            "the messages it held are not sent",
            self.path,
            error,
            aside.name,
        )
        for suffix in ("", "-wal", "-shm"):
            part = self.path.with_name(self.path.name + suffix)
            if part.exists():
                part.rename(aside.with_name(aside.name + suffix))

    def _transact(self, work: Callable[[sqlite3.Connection], T], fallback: T, what: str) -> T:
        """``work`` in one transaction (the lock held); trouble is logged once and answered with ``fallback``.

        Callers change the counts kept in memory only after this returns ``work``'s result, so a
        transaction that rolls back leaves them equal to the file. Trouble here (a full disk, an
        I/O error) may pass; a file found corrupt is set aside at the next start.
        """
        for attempt in range(2):
            try:
                with self._db:
                    result = work(self._db)
                break
            except sqlite3.Error as error:
                if attempt == 0 and self._release_reserve(error):
                    continue  # room now: the same transaction again
                self._report(f"cannot {what}: {error}")
                return fallback
        self._report(None)
        if not self.reserve.exists() and time.monotonic() - self._reserve_tried >= RESERVE_RETRY_S:
            self._make_reserve()
        return result

    def _release_reserve(self, error: sqlite3.Error) -> bool:
        """Give up the reserve when SQLite found the disk full; True when there was one to give up."""
        if "full" not in str(error).lower() or not self.reserve.exists():
            return False
        try:
            self.reserve.unlink()
        except OSError:
            return False
        logger.warning("MQTT outbox %s: the disk is full; the outbox's reserve was given up to go on", self.path)
        self._reserve_tried = time.monotonic()
        return True

    def _make_reserve(self) -> None:
        """Set RESERVE_BYTES aside on the disk, if there is room (else try again later)."""
        self._reserve_tried = time.monotonic()
        try:
            descriptor = os.open(self.reserve, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(descriptor, 0, RESERVE_BYTES)
            finally:
                os.close(descriptor)
        except OSError:
            with contextlib.suppress(OSError):
                self.reserve.unlink()

    def _report(self, trouble: str | None) -> None:
        if trouble == self._trouble:
            return
        if trouble is None:
            logger.info("MQTT outbox %s works again", self.path)
        else:
            logger.error("MQTT outbox %s: %s", self.path, trouble)
        self._trouble = trouble
