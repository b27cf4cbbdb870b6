"""The separate Python environment onnx2tf runs in, made on first use.

onnx2tf (what Ultralytics' own TFLite export uses) pins its dependencies exactly and its 2.x
releases need Python >= 3.12; under 3.11 pip falls back to onnx2tf 1.x, which replaces
TensorFlow with 2.19 and downgrades protobuf and numpy. So it gets a virtual environment of its
own, ``.venv-onnx2tf/`` in the checkout (``ONNX2TF_VENV`` moves it), made with the first Python
>= 3.12 found: ``PYTHON312``, then pyenv's 3.12 (or newer) versions, then ``python3.12`` or
``python3.13`` on PATH. It holds the same TensorFlow as the toolchain, so the SavedModel it
writes is quantized by the toolchain itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

from tools.convert import ConvertError

ROOT = Path(__file__).resolve().parents[2]
ONNX2TF = "onnx2tf==2.6.9"
TENSORFLOW = "tensorflow-cpu==2.21.0" if platform.machine() in ("x86_64", "AMD64") else "tensorflow==2.21.0"
REQUIREMENTS = (ONNX2TF, TENSORFLOW, "keras==3.15.0")
# tf-keras (onnx2tf's tf_converter backend needs it) requires the `tensorflow` distribution, not
# `tensorflow-cpu`: installed without its dependencies, it uses the TensorFlow already there.
WITHOUT_DEPENDENCIES = ("tf-keras==2.21.0",)
INSTALL_HINT = (
    "set PYTHON312=/path/to/python3.12, or install one: `pyenv install 3.12`, or `apt-get install python3.12` "
    "on Debian 13 / Ubuntu 24.04"
)


def venv_dir() -> Path:
    return Path(os.environ.get("ONNX2TF_VENV") or ROOT / ".venv-onnx2tf")


def _version(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return int(out[0]), int(out[1])


def _pyenv_root() -> Path:
    if shutil.which("pyenv"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, timeout=60, check=True)
            return Path(root.stdout.strip())
    return Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")


def _candidates() -> Iterator[str]:
    if os.environ.get("PYTHON312"):
        yield os.environ["PYTHON312"]
    # pyenv's versions, 3.12 first (what onnx2tf is used with here); its shims work only for the
    # version selected, so look in its versions folder.
    for pattern in ("3.12*", "3.1[3-9]*"):
        for version in sorted(_pyenv_root().glob(f"versions/{pattern}"), reverse=True):
            if (version / "bin" / "python3").exists():
                yield str(version / "bin" / "python3")
    for name in ("python3.12", "python3.13"):
        path = shutil.which(name)
        if path:
            yield path


def find_python() -> str:
    """A Python >= 3.12 to make the environment with."""
    for python in _candidates():
        version = _version(python)
        if version is not None and version >= (3, 12):
            return python
    if os.environ.get("PYTHON312"):
        raise ConvertError(f"PYTHON312={os.environ['PYTHON312']}: not a Python 3.12 or newer; {INSTALL_HINT}")
    raise ConvertError(f"onnx2tf needs Python 3.12 or newer and none was found; {INSTALL_HINT}")


def stamp() -> str:
    """What the environment holds, as one line: it is remade when this changes."""
    return " ".join((*REQUIREMENTS, "--no-deps", *WITHOUT_DEPENDENCIES))


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One process builds the environment; others (parallel test workers, a second shell) wait."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(folder.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = " | ".join((result.stdout + result.stderr).strip().splitlines()[-6:])
        raise ConvertError(f"{what} failed (exit {result.returncode}): {tail}")


def ensure_environment(say: Callable[[str], None] = print) -> Path:
    """The environment's ``bin`` folder, after making or updating it if its requirements changed."""
    folder = venv_dir()
    installed = folder / ".installed"
    with _locked(folder):
        if installed.is_file() and installed.read_text().strip() == stamp():
            return folder / "bin"
        python = find_python()
        say(f"making the onnx2tf environment in {folder} with {python} (once; a few minutes, about 2 GB)")
        if not (folder / "bin" / "python").exists():
            _run([python, "-m", "venv", str(folder)], f"{python} -m venv {folder}")
        pip = [str(folder / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        _run([*pip, *REQUIREMENTS], f"pip install {' '.join(REQUIREMENTS)} into {folder}")
        _run([*pip, "--no-deps", *WITHOUT_DEPENDENCIES], f"pip install {' '.join(WITHOUT_DEPENDENCIES)}")
        installed.write_text(stamp() + "\n")
        say(f"the onnx2tf environment is ready: {folder}")
    return folder / "bin"
