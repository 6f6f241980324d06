"""The README's Python example runs as written, its paths pointed at a tiny teacher saved with a tokenizer."""

import re
from pathlib import Path

import hydrahead
from tests.conftest import make_teacher
from tests.eval.conftest import bpe_tokenizer

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readmes_python_example_runs(tmp_path, monkeypatch, capsys):
    tokenizer = bpe_tokenizer()
    teacher = make_teacher("qwen3", vocab_size=len(tokenizer))
    teacher.save_pretrained(tmp_path / "teacher")
    tokenizer.save_pretrained(tmp_path / "teacher")
    hydrahead.HeadPlan.random(teacher.config, "1:1").to_json(tmp_path / "plan.json")
    example = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)[0]
    assert "path/to/Qwen3-1.7B" in example and "plan.json" in example
    monkeypatch.chdir(tmp_path)  # plan.json and out/ are relative paths
    names: dict = {}
    exec(compile(example.replace("path/to/Qwen3-1.7B", str(tmp_path / "teacher")), str(README), "exec"), names)
    assert type(names["again"]) is type(names["model"]) and hydrahead.is_hybrid(names["again"])
    assert names["again"].hydrahead_plan == names["plan"]
    assert names["result"].new_tokens > 0 and names["result"].text in capsys.readouterr().out
