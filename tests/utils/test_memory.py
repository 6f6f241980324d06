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
    needs, all of one size (a multiple of the GDN chunk) but the last, which is never much shorter: a short last
    piece runs its GEMMs below the others' rate (4K tokens as 4 x 1,024, not 3 x 1,280 + 256)."""
    from hydrahead.utils import memory

    assert memory.piece_tokens(6144 * 4, 4096) == 1024  # the bench's Qwen3-1.7B slice, fp32, batch 1
    monkeypatch.setattr(memory, "PIECE_BYTES", 1000 * 64)
    for tokens in range(1, 3000, 7):
        piece = memory.piece_tokens(64, tokens)  # at most 1,000 bytes per token: 960 tokens
        count = -(-tokens // piece)
        assert piece % 64 == 0 and piece * 64 <= 1000 * 64 and count == max(1, -(-tokens // 960))
        assert tokens - (count - 1) * piece > piece - 64 * count  # the last piece: the rest, nearly a whole one
    assert memory.piece_tokens(10**9, 5000) == 64  # at least one GDN chunk
