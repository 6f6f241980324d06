"""Each stage trains what it should and lowers its loss; the final checkpoint loads with from_pretrained."""

import pytest
import torch

import hydrahead
from hydrahead import HeadPlan, HybridOptions, convert, hybrid_parameters
from hydrahead.distill import read_metrics, run
from tests.distill.conftest import tiny_recipe, tiny_stage


def losses(out, stage):
    return [m["loss"] for m in read_metrics(out) if m["stage"] == stage and "loss" in m]


def converted(workspace):
    torch.manual_seed(0)
    teacher = hydrahead.load_model(workspace / "teacher", "float32")
    return convert(teacher, HeadPlan.from_json(workspace / "plan.json"), HybridOptions.preset("paper", train_length=64))


def test_every_stage_lowers_its_loss(workspace, tmp_path):
    stages = {
        "align": tiny_stage(tokens=8 * 4 * 32),
        "distill": tiny_stage(tokens=8 * 4 * 32, lr=2.0e-3, loss_chunk=8),
        "long_context": tiny_stage(tokens=8 * 2 * 64, seq_len=64, batch_size=2, lr=2.0e-3, loss_chunk=16),
    }
    recipe = tiny_recipe(workspace, tmp_path / "run", stages,
                         data={"eval_files": [str(workspace / "eval.txt")], "eval_sequences": 4})
    final = run(recipe)
    for stage in ("align", "distill", "long_context"):
        curve = losses(tmp_path / "run", stage)
        assert len(curve) == 8, stage  # 8 steps: the token budget / tokens per step
        assert sum(curve[-2:]) / 2 < 0.9 * curve[0], (stage, curve)
    align = [m["layer_loss"] for m in read_metrics(tmp_path / "run") if m["stage"] == "align" and "loss" in m]
    assert all(len(layers) == 2 for layers in align)  # every decoder layer's term, each step
    assert [sum(layers) / 2 for layers in align] == pytest.approx(losses(tmp_path / "run", "align"), rel=1e-6)
    assert all(last < first for first, last in zip(align[0], align[-1]))  # every layer learns
    evals = [m for m in read_metrics(tmp_path / "run") if "eval_ppl" in m]
    assert [m["stage"] for m in evals] == ["align", "distill", "long_context"]
    assert evals[-1]["eval_ppl"] < evals[0]["eval_ppl"]

    model = hydrahead.from_pretrained(final)
    assert hydrahead.is_hybrid(model) and (final / "tokenizer.json").is_file()
    ids = torch.randint(0, 30, (1, 12))
    start = converted(workspace)
    assert not torch.allclose(model(ids).logits, start(ids).logits)  # trained, not the conversion


def test_align_trains_only_hybrid_parameters(workspace, tmp_path):
    recipe = tiny_recipe(workspace, tmp_path / "run", {"align": tiny_stage(tokens=3 * 4 * 32)})
    trained = hydrahead.from_pretrained(run(recipe))
    start = converted(workspace)
    hybrid = {id(p) for p in hybrid_parameters(start)}
    changed = 0
    for (name, before), after in zip(start.named_parameters(), trained.parameters()):
        if id(before) in hybrid:
            changed += not torch.equal(before, after)
        else:
            assert torch.equal(before, after), f"backbone parameter {name} changed in stage 1"
    assert changed > 0


def test_align_with_nothing_to_train_is_a_recipe_error(workspace, tmp_path):
    """An all-FA plan under the exact preset adds no parameter: one line saying so, not torch's empty-optimiser
    error."""
    teacher = hydrahead.load_model(workspace / "teacher", "float32")
    HeadPlan.full(teacher.config).to_json(tmp_path / "full.json")
    recipe = tiny_recipe(workspace, tmp_path / "run", {"align": tiny_stage(tokens=4 * 32)},
                         plan=str(tmp_path / "full.json"), hybrid={"preset": "exact"})
    with pytest.raises(hydrahead.RecipeError, match="align has nothing to train"):
        run(recipe)


def test_gradient_checkpointing_gives_the_same_losses(workspace, tmp_path):
    stages = {"distill": tiny_stage(tokens=2 * 4 * 32, loss_chunk=8)}
    run(tiny_recipe(workspace, tmp_path / "a", stages))
    run(tiny_recipe(workspace, tmp_path / "b", stages, training={"gradient_checkpointing": True}))
    torch.testing.assert_close(losses(tmp_path / "b", "distill"), losses(tmp_path / "a", "distill"))


def test_lora_distill_merges_into_a_plain_hybrid(workspace, tmp_path):
    stages = {"distill": tiny_stage(tokens=4 * 4 * 32, lr=1.0e-2, loss_chunk=8, grad_accum=2, batch_size=2,
                                    lora={"r": 2, "alpha": 4, "target_modules": ["gate_proj", "o_proj"]})}
    trained = hydrahead.from_pretrained(run(tiny_recipe(workspace, tmp_path / "run", stages)))
    assert not any("lora" in name for name, _ in trained.named_parameters())
    start = converted(workspace)
    before, after = dict(start.named_parameters()), dict(trained.named_parameters())
    # LoRA targets moved (merged update), other backbone matrices did not, hybrid parameters trained in full
    assert not torch.equal(before["model.layers.0.mlp.gate_proj.weight"], after["model.layers.0.mlp.gate_proj.weight"])
    assert torch.equal(before["model.layers.0.mlp.up_proj.weight"], after["model.layers.0.mlp.up_proj.weight"])
    assert torch.equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])
    gdn = "model.layers.0.self_attn.gdn.qkv_proj.weight"
    assert not torch.equal(before[gdn], after[gdn])
    curve = losses(tmp_path / "run", "distill")
    assert curve[-1] < curve[0]


def test_a_teacher_in_memory_trains_the_same_as_one_loaded_from_disk(workspace, tmp_path):
    stages = {"align": tiny_stage(tokens=2 * 4 * 32), "distill": tiny_stage(tokens=2 * 4 * 32, loss_chunk=8)}
    from_disk = hydrahead.load_model(run(tiny_recipe(workspace, tmp_path / "disk", stages)))
    teacher = hydrahead.load_model(workspace / "teacher", "float32")
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    final = run(tiny_recipe(workspace, tmp_path / "memory", stages), teacher=teacher,
                tokenizer=hydrahead.load_tokenizer(workspace / "teacher"), plan=HeadPlan.from_json(workspace / "plan.json"))
    in_memory = hydrahead.load_model(final)
    for (name, a), b in zip(from_disk.state_dict().items(), in_memory.state_dict().values()):
        assert torch.equal(a, b), name
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the teacher handed in is left as it was
    assert all(p.requires_grad for p in teacher.parameters())


@pytest.mark.parametrize("argument, message", [
    ({"teacher": "teacher/"}, "teacher= takes the model itself"),
    ({"plan": {"fa_heads": [[0], [1]]}}, "plan= takes a HeadPlan"),
    ({"tokenizer": "teacher/"}, "tokenizer= takes the tokenizer itself"),
    ({"callbacks": [1]}, "callbacks= takes a list of functions"),  # a TypeError after the first step before
    ({"evaluators": print}, "evaluators= takes a list of functions"),
])
def test_an_in_memory_argument_of_the_wrong_kind_is_named_before_anything_runs(workspace, tmp_path, argument, message):
    with pytest.raises(hydrahead.RecipeError, match=message):
        run(tiny_recipe(workspace, tmp_path / "run", {"align": tiny_stage()}), **argument)
    assert not (tmp_path / "run").exists()


def test_callbacks_given_as_a_generator_all_run(workspace, tmp_path):
    seen = []
    run(tiny_recipe(workspace, tmp_path / "run", {"align": tiny_stage(tokens=2 * 4 * 32)}),
        callbacks=(hook for hook in [lambda info: seen.append(info.step)]))  # read once, by the argument check
    assert seen == [1, 2]


def test_the_teacher_is_freed_for_the_stages_after_its_last(workspace, tmp_path, monkeypatch):
    """long_context needs no teacher: once distill is done nothing holds the one the run loaded, nor its weights
    (their memory is what the longest rows need)."""
    import gc
    import sys
    import weakref

    run_module = sys.modules["hydrahead.distill.run"]  # the package's `run` is the function

    loaded = []

    def load_model(*args, **kwargs):
        model = hydrahead.load_model(*args, **kwargs)
        loaded.append(weakref.ref(model.model.embed_tokens.weight))  # the module, or its tensors, could be held
        return model

    alive = {}

    def check(info):
        gc.collect()
        alive.setdefault(info.stage, loaded[0]() is not None)

    monkeypatch.setattr(run_module, "load_model", load_model)
    stages = {"distill": tiny_stage(tokens=2 * 4 * 32, loss_chunk=8),
              "long_context": tiny_stage(tokens=2 * 2 * 64, seq_len=64, batch_size=2)}
    run(tiny_recipe(workspace, tmp_path / "run", stages), callbacks=[check])
    assert alive == {"distill": True, "long_context": False}


def test_isolated_documents_train_end_to_end(workspace, tmp_path):
    from hydrahead.distill import RecipeError

    stages = {"align": tiny_stage(tokens=2 * 4 * 32), "distill": tiny_stage(tokens=2 * 4 * 32, loss_chunk=8)}
    recipe = tiny_recipe(workspace, tmp_path / "run", stages)
    recipe["data"].update(packing="documents", isolate_documents=True)
    final = run(recipe)
    assert all(torch.isfinite(torch.tensor(losses(tmp_path / "run", s))).all() for s in ("align", "distill"))
    assert hydrahead.is_hybrid(hydrahead.load_model(final))
    recipe["data"].update(packing="concat")
    recipe["output_dir"] = str(tmp_path / "other")
    with pytest.raises(RecipeError, match="data.isolate_documents needs packing: documents"):
        run(recipe)


def test_the_student_is_calibrated_on_the_first_training_rows(workspace, tmp_path):
    """The run converts with the heads' statistics on its first training rows (text like what it trains on),
    not on conversion's random tokens: the GDN heads' mean output in o_proj's bias and the gains come from them."""
    from hydrahead.distill import Recipe, distributed
    from hydrahead.distill.data import calibration_ids
    from hydrahead.distill.run import build_student, load_inputs, prepare

    recipe = Recipe.load(tiny_recipe(workspace, tmp_path / "run"))
    run_ = prepare(recipe, distributed.init(recipe.training.device), False, None)
    load_inputs(run_, ())
    student = build_student(run_)
    calibration = calibration_ids(run_.sources["align"])
    assert calibration.shape == (2, 32) and calibration.max() < len(run_.tokenizer)  # words, no random ids
    torch.manual_seed(0)
    teacher = hydrahead.load_model(workspace / "teacher", "float32")
    options = HybridOptions.preset("paper", train_length=64)
    expected = convert(teacher, HeadPlan.from_json(workspace / "plan.json"), options, calibration=calibration)
    for got, want in zip(student.parameters(), expected.parameters()):
        assert torch.equal(got, want)
    assert not torch.equal(student.model.layers[0].self_attn.o_proj.bias, converted(workspace).model.layers[0].self_attn.o_proj.bias)
