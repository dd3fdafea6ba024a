"""Errors that the command line reports as one sentence instead of a traceback."""


class MissingDependency(RuntimeError):
    """An optional package (TensorRT, torch-tensorrt) is not installed; the message says which."""
