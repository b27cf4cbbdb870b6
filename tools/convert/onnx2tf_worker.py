"""Runs inside the onnx2tf environment (Python >= 3.12; see onnx2tf_env.py): a prepared ONNX graph
(yolo_graph.prepare) to a TensorFlow SavedModel that the toolchain then quantizes like any other.

    python onnx2tf_worker.py PREPARED.onnx WORKDIR

It runs onnx2tf with its tf_converter backend and writes WORKDIR/savedmodel,
WORKDIR/onnx2tf.log and WORKDIR/summary.json (onnx2tf's version). Only numpy and the standard
library are imported here: the toolchain's own packages live in the other environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np

# onnx2tf loads this calibration sample from the internet unless a file of that name is in the
# working directory, even when it is not quantizing; the toolchain calibrates on its own frames.
PLACEHOLDER_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"


def main(source: Path, work: Path) -> int:
    work.mkdir(parents=True, exist_ok=True)
    np.save(work / PLACEHOLDER_SAMPLE, np.zeros((20, 128, 128, 3), np.float32))
    command = [str(Path(sys.executable).parent / "onnx2tf"), "-i", str(source), "-o", str(work / "savedmodel")]
    command += ["-tb", "tf_converter", "-osd"]
    # onnx2tf runs onnxsim from PATH: this environment's bin first.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    with open(work / "onnx2tf.log", "w") as log:
        status = subprocess.run(command, cwd=work, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    if status.returncode != 0 or not (work / "savedmodel" / "saved_model.pb").is_file():
        lines = (work / "onnx2tf.log").read_text(errors="replace").strip().splitlines()
        errors = [line for line in lines if "Error" in line or "ERROR" in line] or lines or ["no output"]
        print(f"onnx2tf failed on {source} (see {work / 'onnx2tf.log'}): {errors[-1][:400]}", file=sys.stderr)
        return 2
    (work / "summary.json").write_text(json.dumps({"onnx2tf": version("onnx2tf")}))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
