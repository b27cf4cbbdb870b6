"""Progress bars and quiet TensorFlow for the toolchain's long steps."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any, TextIO

from tqdm import tqdm

# Where progress bars go; conversion points it at the real stderr while it silences fd 2.
_stream: list[TextIO] = [sys.stderr]


def progress(**options: Any) -> tqdm:
    """A tqdm bar on the terminal's stderr (kept visible while TensorFlow's output is captured)."""
    return tqdm(file=_stream[-1], dynamic_ncols=True, mininterval=0.5, **options)


@contextlib.contextmanager
def captured_native_output() -> Iterator[None]:
    """Capture everything written to fd 1 and 2 (TensorFlow's C++ logs, Keras' export listing).

    The capture is shown only when the block fails; progress bars still reach the terminal.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved_err), "w", buffering=1)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 1)
        os.dup2(capture.fileno(), 2)
        _stream.append(terminal)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            _stream.pop()
            sys.stdout.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)
            if failed:
                capture.seek(0)
                sys.stderr.write(capture.read().decode(errors="replace")[-20000:])
            terminal.close()
