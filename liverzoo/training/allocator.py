"""Keeps freed tensor memory in the process during training (glibc's malloc).

glibc serves every allocation of 32 MB or more (e.g. one 8x128x128x64 float32 activation of
the demo's residual U-Net) with a fresh `mmap` and returns it with `munmap` when freed, so
every training step page-faults its activations in again: 470,000 minor faults and 1.6 s of
kernel time per demo step on the 2-core VM (5.5 s per step). Serving those allocations from
the heap and never trimming it (`mallopt(M_MMAP_MAX, 0)`, a high `M_TRIM_THRESHOLD`) cut that
to 27,000-61,000 faults and 0.1-0.2 s (3.4-4.2 s per step) at +0.15 GB peak RSS, in a
6-step loop on the shared VM. The trainer calls it; the setting is process-wide from then on
(tools/crossval.py's scoring after training keeps it), while predict and the inference
benchmarks, which run in their own processes, keep glibc's default.
"""
import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
_TRIM_THRESHOLD = 1 << 30


def keep_freed_memory():
    """Tells glibc's malloc to reuse freed memory instead of unmapping it; True when applied.

    A no-op (False) where the C library is not glibc (macOS, musl, Windows).

    Example:
        >>> keep_freed_memory()
        True
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
