"""The `hydrahead` command starts without torch or transformers (`--help` in a blink); `import hydrahead`
registers the hybrid classes with transformers' Auto classes at once."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

HELP = """
import sys, hydrahead_command
try:
    hydrahead_command.main(["--help"])
except SystemExit as exit:
    assert exit.code == 0
print(sorted(m for m in ("torch", "transformers") if m in sys.modules))
"""

REGISTERED = """
import hydrahead
from transformers import AutoConfig, AutoModelForCausalLM
config = AutoConfig.for_model("hydrahead_llama")
print(type(config).__name__, AutoModelForCausalLM._model_mapping[type(config)].__name__)
"""


def run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_help_imports_neither_torch_nor_transformers():
    assert run(HELP) == "[]"


def test_import_hydrahead_registers_the_auto_classes():
    assert run(REGISTERED) == "HydraHeadLlamaConfig HydraHeadLlamaForCausalLM"


def test_output_into_a_closed_pipe_ends_quietly():
    """`hydrahead ... | head`: the reader stops early; no traceback, no "error: Broken pipe", the SIGPIPE status."""
    import os

    read, write = os.pipe()
    os.close(read)  # nobody reads: the command's first write fails with EPIPE
    try:
        command = "import sys, hydrahead_command; sys.exit(hydrahead_command.main())"
        proc = subprocess.run([sys.executable, "-c", command, "distill", "--print-example-recipe"], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=300, cwd=ROOT)
    finally:
        os.close(write)
    assert (proc.returncode, proc.stderr) == (141, ""), proc.stderr[-2000:]
