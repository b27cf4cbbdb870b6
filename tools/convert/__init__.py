"""``python -m tools.convert``: turns trained models into the int8 TFLite files and manifest the appliance runs."""


class ConvertError(Exception):
    """A problem with the toolchain's input, reported as one line (exit status 2)."""
