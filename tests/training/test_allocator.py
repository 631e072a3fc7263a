"""liverzoo.training.allocator: large freed blocks are reused, not unmapped and faulted in again."""
import json
import subprocess
import sys

import pytest

_SCRIPT = """
import ctypes, json, resource, sys
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
SIZE = 64 << 20  # above glibc's largest mmap threshold (32 MB), like the demo's activations
def block():
    p = libc.malloc(SIZE)
    ctypes.memset(p, 1, SIZE)  # touch every page, as a tensor write does
    libc.free(p)
if sys.argv[1] == "keep":
    from liverzoo.training.allocator import keep_freed_memory
    assert keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block()  # the first touch faults both ways
start = faults()
for _ in range(10):
    block()
print(json.dumps(faults() - start))
"""


def _faults(mode):
    out = subprocess.run([sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _huge_pages_always():
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[always]" in f.read()
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_large_blocks_are_reused_without_page_faults():
    if _huge_pages_always():
        pytest.skip("transparent huge pages are 'always' here: 2 MB pages hide the 4 KiB faults counted")
    default, kept = _faults("default"), _faults("keep")
    # 10 x 64 MB of 4 KiB pages is ~164,000 faults when every block is mapped afresh.
    assert default > 100_000
    assert kept < default / 20
