"""Logging to stderr in a form journald understands."""

from __future__ import annotations

import logging
import os
import sys

from appliance.masking import mask_secrets

# syslog priorities, which journald reads from a "<N>" line prefix
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class _MaskingFormatter(logging.Formatter):
    """Every line, tracebacks included, with the secrets of URIs masked (``appliance.masking``)."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


class _JournalFormatter(_MaskingFormatter):
    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 6)
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).splitlines())


def setup_logging(level: str) -> None:
    """Log at ``level`` to stderr: priority-prefixed lines under systemd, timestamped ones elsewhere."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(_MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
