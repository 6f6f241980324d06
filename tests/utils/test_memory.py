"""keep_freed_memory: applied on Linux with glibc, skipped when the user opts out."""

import ctypes.util
import subprocess
import sys

import pytest

from hydrahead.utils.memory import keep_freed_memory


def test_opt_out_keeps_the_system_allocator(monkeypatch):
    monkeypatch.setenv("HYDRAHEAD_SYSTEM_MALLOC", "1")
    assert keep_freed_memory() is False


@pytest.mark.skipif(not sys.platform.startswith("linux") or ctypes.util.find_library("c") is None, reason="glibc only")
def test_applies_on_glibc_in_a_fresh_process():
    code = "from hydrahead.utils.memory import keep_freed_memory; print(keep_freed_memory())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"


def test_the_cli_keeps_freed_memory_for_every_command_but_distill(monkeypatch, tmp_path, capsys):
    from hydrahead.cli import main
    from hydrahead.utils import memory

    calls = []
    monkeypatch.setattr(memory, "keep_freed_memory", lambda: calls.append(1) or True)
    assert main(["distill", "--print-example-recipe"]) == 0
    assert calls == []  # training: glibc's defaults (a lower peak)
    assert main(["demo", "--export-teacher", str(tmp_path / "teacher")]) == 0
    assert calls == [1]


def test_pieces_are_as_few_as_the_limit_allows_and_even(monkeypatch):
    """A long CPU inference pass runs in pieces: each temporary within PIECE_BYTES, no more pieces than that
    needs, each a multiple of the GDN chunk but the last, and all within one chunk of each other: a short last
    piece runs its GEMMs below the others' rate (4K tokens as 4 x 1,024, not 3 x 1,280 + 256)."""
    from hydrahead.utils import memory

    assert memory.piece_sizes(6144 * 4, 4096) == [1024] * 4  # the bench's Qwen3-1.7B slice, fp32, batch 1
    assert memory.piece_sizes(6144 * 4, 16384) == [1216] * 4 + [1280] * 9
    assert memory.piece_sizes(6144 * 8, 4096) == [576] * 6 + [640]  # batch 2: not 6 x 640 + 256
    assert memory.piece_sizes(8192 * 4, 16384) == [896] * 14 + [960] * 4  # Llama-3.2-1B's MLP: not 17 x 960 + 64
    assert memory.piece_sizes(6144 * 4, 0) == [0] and memory.piece_sizes(6144 * 4, 1280) == [1280]
    assert memory.piece_sizes(10**9, 200) == [64, 64, 64, 8]  # at least one GDN chunk a piece
    monkeypatch.setattr(memory, "PIECE_BYTES", 1000 * 64)
    for tokens in range(1, 6000, 7):
        sizes = memory.piece_sizes(64, tokens)  # at most 1,000 bytes per token: 960 tokens
        assert sum(sizes) == tokens and len(sizes) == -(-tokens // 960)
        assert all(size % 64 == 0 and size <= 960 for size in sizes[:-1]) and 0 < sizes[-1] <= 960
        assert max(sizes) - min(sizes) <= 64
