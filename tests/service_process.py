"""`appliance run` as systemd runs it: a process of its own, its env file, none of this shell's settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def service_environ(**extra: str) -> dict[str, str]:
    """This process's environment without any ``APPLIANCE_*`` (the env file alone configures), plus ``extra``."""
    return {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")} | extra


def start_service(env: Path, *, stderr: int | None = subprocess.PIPE, **extra: str) -> subprocess.Popen[str]:
    """The service started on ``env``; its stderr piped unless ``stderr`` says otherwise."""
    return subprocess.Popen(
        [sys.executable, "-m", "appliance", "run", "--env-file", str(env)],
        env=service_environ(**extra),
        cwd=ROOT,
        stderr=stderr,
        text=True,
    )


def run_service(env: Path, *, timeout: float) -> subprocess.CompletedProcess[str]:
    """The service run on ``env`` until it ends by itself (its cameras played out), output captured."""
    return subprocess.run(
        [sys.executable, "-m", "appliance", "run", "--env-file", str(env)],
        env=service_environ(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
