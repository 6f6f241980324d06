"""`distill.pretrain`: a model from scratch on the distillation engine (the demo teacher's path)."""

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from hydrahead.distill import PretrainRecipe, RecipeError, pretrain, read_metrics
from tests.distill.conftest import tiny_stage
from tests.distill.test_resume import kill_at

MODEL = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 128}


def recipe(workspace, out, **training):
    return {
        "model": MODEL, "tokenizer": str(workspace / "teacher"), "output_dir": str(out), "seed": 0,
        "data": {"train_files": [str(workspace / "train.jsonl")], "eval_files": [str(workspace / "eval.txt")],
                 "cache_dir": str(out.parent / "token-cache"), "packing": "documents"},
        "stage": tiny_stage(tokens=6 * 4 * 32),
        "training": {"progress": False, "log_every": 1, "checkpoint_every": 0, **training},
    }


def test_pretrain_learns_and_resumes_exactly(workspace, tmp_path):
    reference = pretrain(recipe(workspace, tmp_path / "ref"))
    losses = [m["loss"] for m in read_metrics(tmp_path / "ref") if "loss" in m]
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert any("eval_loss" in m for m in read_metrics(tmp_path / "ref"))
    run = recipe(workspace, tmp_path / "run", checkpoint_every=2)
    with pytest.raises(KeyboardInterrupt):
        pretrain(run, callbacks=[kill_at("pretrain", 3)])
    resumed = pretrain(run, resume=True)
    a = AutoModelForCausalLM.from_pretrained(reference).state_dict()  # an ordinary transformers checkpoint
    b = AutoModelForCausalLM.from_pretrained(resumed).state_dict()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6, msg=name)


def test_pretrain_honours_isolated_documents_and_gradient_checkpointing(workspace, tmp_path):
    """Both keys validated in a PretrainRecipe and were ignored: targets crossed EOS, nothing was checkpointed."""
    def first_loss(out, **training):
        run = recipe(workspace, out, **training)
        run["stage"] = tiny_stage(tokens=4 * 32)
        run["data"]["isolate_documents"] = bool(training)
        checkpointing = []
        pretrain(run, callbacks=[lambda info: checkpointing.append(info.student.is_gradient_checkpointing)])
        return [m["loss"] for m in read_metrics(out) if "loss" in m][0], checkpointing

    plain, off = first_loss(tmp_path / "plain")
    isolated, on = first_loss(tmp_path / "isolated", gradient_checkpointing=True)
    assert off == [False] and on == [True]
    assert abs(isolated - plain) > 1e-3  # same weights, same rows: only the documents' isolation differs


def test_pretrain_with_dropout_is_reproducible_from_its_seed(workspace, tmp_path):
    """The recipe's seed sets dropout's random draws too, not only the initialisation: two runs from different
    global random states train the same weights."""
    def trained(out, global_seed):
        run = recipe(workspace, out)
        run["model"] = {**MODEL, "attention_dropout": 0.5}
        run["stage"] = tiny_stage(tokens=2 * 4 * 32)
        torch.manual_seed(global_seed)
        return AutoModelForCausalLM.from_pretrained(pretrain(run)).state_dict()

    a, b = trained(tmp_path / "a", 1), trained(tmp_path / "b", 2)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0, msg=name)


def test_pretrain_recipe_errors_name_the_key(workspace, tmp_path):
    with pytest.raises(RecipeError, match="model must name its model_type"):
        PretrainRecipe.from_dict({**recipe(workspace, tmp_path), "model": {"hidden_size": 8}})
    with pytest.raises(RecipeError, match="unknown key 'stage.lrr'"):
        PretrainRecipe.from_dict({**recipe(workspace, tmp_path), "stage": {**tiny_stage(), "lrr": 1}})
    with pytest.raises(RecipeError, match="model: not a valid no-such-model config"):
        pretrain({**recipe(workspace, tmp_path / "x"), "model": {"model_type": "no-such-model"}})
    # a distillation stage's keys that pretraining does not read: refused, not ignored
    with pytest.raises(RecipeError, match="stage.train_files is not read by pretrain: use data.train_files"):
        PretrainRecipe.from_dict({**recipe(workspace, tmp_path), "stage": {**tiny_stage(), "train_files": ["a.txt"]}})
    with pytest.raises(RecipeError, match="stage.skip is not read by pretrain"):
        PretrainRecipe.from_dict({**recipe(workspace, tmp_path), "stage": {**tiny_stage(), "skip": True}})
    with pytest.raises(RecipeError, match="has .* tokens but the model only 8"):  # an IndexError in the first step
        pretrain({**recipe(workspace, tmp_path / "v"), "model": {**MODEL, "vocab_size": 8}})
    # transformers' strict config validation raises its own error type, not a ValueError
    with pytest.raises(RecipeError, match="not a valid llama config.*multiple of the number of attention heads"):
        pretrain({**recipe(workspace, tmp_path / "y"),
                  "model": {**MODEL, "hidden_size": 30, "num_attention_heads": 4, "head_dim": 8}})


def test_a_constant_schedule_run_can_be_extended_but_nothing_else_changes(workspace, tmp_path):
    from hydrahead.distill import ResumeError

    run = recipe(workspace, tmp_path / "run", checkpoint_every=2)
    with pytest.raises(KeyboardInterrupt):
        pretrain(run, callbacks=[kill_at("pretrain", 3)])
    longer = {**run, "stage": tiny_stage(tokens=8 * 4 * 32)}
    pretrain(longer, resume=True)  # from step 2 to step 8
    assert [m["step"] for m in read_metrics(tmp_path / "run") if "loss" in m] == list(range(1, 9))
    pretrain({**run, "stage": tiny_stage(tokens=10 * 4 * 32)}, resume=True)  # a finished run goes on too
    assert [m["step"] for m in read_metrics(tmp_path / "run") if "loss" in m][-1] == 10
    with pytest.raises(ResumeError, match="different recipe.*stage.lr"):
        pretrain({**run, "stage": tiny_stage(tokens=12 * 4 * 32, lr=1e-3)}, resume=True)
    with pytest.raises(ResumeError, match="different recipe"):
        pretrain({**run, "stage": tiny_stage(tokens=12 * 4 * 32, schedule="cosine")}, resume=True)


def test_extending_a_finished_run_continues_its_optimizer(workspace, tmp_path):
    """A finished 6-step run extended to 8 steps trains exactly like a run of 8 steps: AdamW's moments and
    step count and the schedule's step go on (they were reset, which redoes Adam's bias-corrected start)."""
    straight = pretrain({**recipe(workspace, tmp_path / "straight"), "stage": tiny_stage(tokens=8 * 4 * 32)})
    run = recipe(workspace, tmp_path / "run")
    pretrain(run)  # finished at step 6
    extended = pretrain({**run, "stage": tiny_stage(tokens=8 * 4 * 32)}, resume=True)
    curve = {name: [(m["step"], m["loss"], m["lr"]) for m in read_metrics(tmp_path / name) if "loss" in m]
             for name in ("straight", "run")}
    assert [c[0] for c in curve["run"]] == list(range(1, 9))
    for a, b in zip(curve["straight"], curve["run"]):
        assert b == pytest.approx(a, rel=1e-5), (a, b)
    a = AutoModelForCausalLM.from_pretrained(straight).state_dict()
    b = AutoModelForCausalLM.from_pretrained(extended).state_dict()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6, msg=name)


def test_extending_an_older_finished_checkpoint_does_not_warm_up_again(workspace, tmp_path):
    """A finished run's checkpoint written before they kept the optimiser (none in it): the extension's
    schedule goes on at the checkpoint's step, past the warm-up, instead of warming up from 0 again."""
    from hydrahead.distill.checkpoint import FILENAME, read_payload, tensor_digests, write_payload

    run = {**recipe(workspace, tmp_path / "run"), "stage": tiny_stage(tokens=6 * 4 * 32, warmup_fraction=0.25)}
    pretrain(run)  # 6 steps, 2 of warm-up
    path = tmp_path / "run" / FILENAME
    payload = read_payload(path)
    payload.update(optimizer=None, scheduler=None, digests=tensor_digests(payload["model"], None))
    write_payload(path, payload)
    pretrain({**run, "stage": {**run["stage"], "tokens": 8 * 4 * 32}}, resume=True)  # warm-up 2 of 8 steps
    lrs = [m["lr"] for m in read_metrics(tmp_path / "run") if "loss" in m]
    assert lrs[:2] == pytest.approx([1.5e-3, 3.0e-3]) and lrs[2:] == pytest.approx([3.0e-3] * 6)


def test_init_starts_from_a_previous_runs_weights(workspace, tmp_path):
    first = pretrain(recipe(workspace, tmp_path / "first"))
    pretrain({**recipe(workspace, tmp_path / "second"), "init": str(first)})
    losses = {run: [m["loss"] for m in read_metrics(tmp_path / run) if "loss" in m] for run in ("first", "second")}
    assert losses["second"][0] < losses["first"][0] - 0.1  # the same data: a trained start is ahead
    with pytest.raises(RecipeError, match="init: .* holds no model.safetensors"):
        pretrain({**recipe(workspace, tmp_path / "x"), "init": str(tmp_path)})
    wider = {**MODEL, "hidden_size": 64}
    with pytest.raises(RecipeError, match="init: .* is not a checkpoint of this model"):
        pretrain({**recipe(workspace, tmp_path / "y"), "model": wider, "init": str(first)})
    bare = tmp_path / "bare"  # tied embeddings, and no model.embed_tokens.weight (a LlamaModel's keys): was an
    bare.mkdir()              # AttributeError on None
    save_file({"embed_tokens.weight": torch.zeros(3, 3)}, bare / "model.safetensors")
    with pytest.raises(RecipeError, match="init: .* is not a checkpoint of this model"):
        pretrain({**recipe(workspace, tmp_path / "z"), "model": {**MODEL, "tie_word_embeddings": True},
                  "init": str(bare)})
