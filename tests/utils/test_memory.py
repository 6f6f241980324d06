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
