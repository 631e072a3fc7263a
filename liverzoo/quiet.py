"""Silencing C++ log lines: TensorFlow and the TFLite converter write to file descriptor 2
directly, past `sys.stderr`, so only pointing the descriptor elsewhere holds them back."""
import contextlib
import os
import sys


@contextlib.contextmanager
def silenced_stderr():
    """Points file descriptor 2 at /dev/null for the block, then restores it.

    Example:
        >>> with silenced_stderr():
        ...     import tensorflow  # its start-up notices go nowhere
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
