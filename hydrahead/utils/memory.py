"""CPU allocator setting for long-sequence work: keep freed memory in the heap.

glibc serves every allocation over 32 MiB with a fresh `mmap` and unmaps it on free, so each large
activation tensor (a 4K-token prefill at hidden 2048 makes dozens of 30-100 MB temporaries) pays a page
fault per 4 KiB page the first time it is written: measured on the project machine, `x * 2` on an 88 MB
tensor takes 21.5 ms into a fresh tensor and 2.0 ms into a reused one. Turning mmap off for the
allocator (`M_MMAP_MAX = 0`) and never trimming the heap top lets freed blocks be reused, the effect
jemalloc or tcmalloc (the allocators Intel recommends for PyTorch on CPU) have. The cost: memory freed
by the process is not returned to the system until it exits.

The `hydrahead` CLI calls `keep_freed_memory()` at start for every command but `distill` (training frees
large activations that glibc's defaults reuse or return: measured, 7.0 GB peak against 11.4 GB kept, about 4%
slower); a script may call `hydrahead.keep_freed_memory()` itself; a library import never does.
bench/inference.py measures both ways (`--allocator plain|kept`).
The hybrid does not depend on it: on the CPU its inference forward over a long input runs in pieces
whose temporaries stay under `PIECE_BYTES`, which glibc reuses from its heap anyway (`piece_sizes`;
`inference_piece` in hydrahead/models/hybrid.py).
Set HYDRAHEAD_SYSTEM_MALLOC=1 to keep glibc's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc <malloc.h>

# Within glibc's largest mmap threshold (32 MiB), with room for the allocator's headers and alignment: a
# temporary this size or smaller is served from the heap once the threshold has adapted (after the first such
# block is freed), and reused instead of page-faulted in afresh.
PIECE_BYTES = 31 << 20


def piece_sizes(bytes_per_token: int, tokens: int, multiple: int = 64) -> list[int]:
    """The token counts of the pieces of a CPU inference pass over `tokens` tokens: as few pieces as keep the
    largest temporary (`bytes_per_token` per token) within PIECE_BYTES, each a multiple of `multiple` (the GDN
    chunk) but the last, and all within one multiple of each other: a short last piece runs its GEMMs far
    below the others' rate (a 4K prompt with at most 1,280 tokens a piece runs as 4 x 1,024, not 3 x 1,280 + 256;
    docs/benchmarks.md, "Even pieces"). One piece, [tokens], when that fits."""
    most = max(multiple, PIECE_BYTES // max(1, bytes_per_token) // multiple * multiple)
    if tokens <= most:
        return [tokens]
    count, units = -(-tokens // most), -(-tokens // multiple)
    each, more = divmod(units, count)  # the last `more` pieces get one multiple more
    sizes = [each * multiple] * (count - more) + [(each + 1) * multiple] * more
    sizes[-1] -= units * multiple - tokens  # the last piece ends at the input's end: less than one multiple off
    return sizes


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


def available_memory() -> int | None:
    """Bytes of memory the system can still give this process without swapping (Linux's MemAvailable), or
    None where that is not known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
