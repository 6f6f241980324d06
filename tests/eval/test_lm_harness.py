"""lm-evaluation-harness on a hybrid checkpoint, with tasks defined from local files (nothing is downloaded)."""

import json
import textwrap

import pytest

lm_eval = pytest.importorskip("lm_eval")  # the `eval` extra (also in `dev`)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    """Two tiny tasks over one local JSONL: one scored by log-likelihood, one by generation."""
    root = tmp_path_factory.mktemp("tasks")
    rows = [{"question": f"The special magic number for key-{i} is {i}{i}. Key-{i} has number", "answer": f"{i}{i}"}
            for i in range(1, 5)]
    (root / "magic.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = f"""\
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: {root / "magic.jsonl"}
        test_split: test
        doc_to_text: "{{{{question}}}}"
    """
    (root / "magic_ll.yaml").write_text(textwrap.dedent(common) + textwrap.dedent("""\
        task: hydrahead_magic_ll
        output_type: loglikelihood
        doc_to_target: " {{answer}}"
        metric_list:
          - metric: perplexity
          - metric: acc
    """))
    (root / "magic_gen.yaml").write_text(textwrap.dedent(common) + textwrap.dedent("""\
        task: hydrahead_magic_gen
        output_type: generate_until
        doc_to_target: "{{answer}}"
        generation_kwargs:
          until: ["."]
          max_gen_toks: 6
          do_sample: false
        metric_list:
          - metric: exact_match
    """))
    return root


@pytest.mark.parametrize("model", ["hf", "hydrahead"])
def test_simple_evaluate_on_hybrid_checkpoint(model_dirs, task_dir, model, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import hydrahead.eval.lm_harness  # noqa: F401  (registers --model hydrahead; importing hydrahead is enough for hf)
    from lm_eval.tasks import TaskManager

    results = lm_eval.simple_evaluate(
        model=model,
        model_args=f"pretrained={model_dirs['hybrid']},dtype=float32,device=cpu",
        tasks=["hydrahead_magic_ll", "hydrahead_magic_gen"],
        task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
        batch_size=2,
    )
    ll, gen = results["results"]["hydrahead_magic_ll"], results["results"]["hydrahead_magic_gen"]
    assert ll["acc,none"] in (0.0, 0.25, 0.5, 0.75, 1.0) and ll["perplexity,none"] > 1.0
    assert gen["exact_match,none"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert results["config"]["model"] == model


def test_command_line(model_dirs, task_dir, tmp_path, monkeypatch):
    """`python -m hydrahead.eval.lm_harness` is lm_eval's command line with hydrahead imported."""
    import functools

    import lm_eval.tasks

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # lm_eval's CLI indexes its ~15k built-in task configs (half a minute); only the local ones are needed.
    monkeypatch.setattr(lm_eval.tasks, "TaskManager", functools.partial(lm_eval.tasks.TaskManager,
                                                                          include_defaults=False))
    from hydrahead.eval.lm_harness import main

    out = tmp_path / "results"
    main(["run", "--model", "hf", "--model_args", f"pretrained={model_dirs['hybrid']}", "--device", "cpu",
          "--tasks", "hydrahead_magic_ll", "--include_path", str(task_dir), "--output_path", str(out)])
    written = list(out.rglob("results_*.json"))
    assert len(written) == 1
    assert "hydrahead_magic_ll" in json.loads(written[0].read_text())["results"]


def test_plain_lm_eval_cli_with_trust_remote_code(model_dirs, task_dir, tmp_path, monkeypatch):
    """The `lm_eval` command itself (it never imports hydrahead) loads the hybrid through the modeling code
    the checkpoint carries, and gives the numbers the in-process bridge gives."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from lm_eval.tasks import TaskManager

    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    args = f"pretrained={model_dirs['hybrid']},dtype=float32,trust_remote_code=True"
    out = tmp_path / "results"
    proc = subprocess.run([str(Path(sys.executable).parent / "lm_eval"), "--model", "hf", "--model_args", args,
                           "--device", "cpu", "--tasks", "hydrahead_magic_ll", "--include_path", str(task_dir),
                           "--batch_size", "2", "--output_path", str(out)],
                          capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cli = json.loads(next(out.rglob("results_*.json")).read_text())["results"]["hydrahead_magic_ll"]
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bridge = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={model_dirs['hybrid']},dtype=float32,device=cpu",
                                     tasks=["hydrahead_magic_ll"], batch_size=2,
                                     task_manager=TaskManager(include_path=str(task_dir), include_defaults=False))
    ours = bridge["results"]["hydrahead_magic_ll"]
    assert cli["acc,none"] == ours["acc,none"]
    assert abs(cli["perplexity,none"] - ours["perplexity,none"]) <= 1e-4 * ours["perplexity,none"]
