"""CPU allocator setting for long-sequence work: keep freed memory in the heap.

glibc serves every allocation over 32 MiB with a fresh `mmap` and unmaps it on free, so each large
activation tensor (a 4K-token prefill at hidden 2048 makes dozens of 30-100 MB temporaries) pays a page
fault per 4 KiB page the first time it is written: measured on the project machine, `x * 2` on an 88 MB
tensor takes 21.5 ms into a fresh tensor and 2.0 ms into a reused one. Turning mmap off for the
allocator (`M_MMAP_MAX = 0`) and never trimming the heap top lets freed blocks be reused, the effect
jemalloc or tcmalloc (the allocators Intel recommends for PyTorch on CPU) have. The cost: memory freed
by the process is not returned to the system until it exits.

The `hydrahead` CLI calls `keep_freed_memory()` at start; a script may call `hydrahead.keep_freed_memory()`
itself; a library import never does. bench/inference.py measures both ways (`--allocator plain|kept`).
The hybrid does not depend on it: its long CPU prefill works in blocks of about 16 MiB temporaries, which
glibc reuses from its heap anyway (hydrahead/layers/gdn.py).
Set HYDRAHEAD_SYSTEM_MALLOC=1 to keep glibc's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc <malloc.h>


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse; True when applied (Linux with glibc, not opted out)."""
    if os.environ.get("HYDRAHEAD_SYSTEM_MALLOC") == "1" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
