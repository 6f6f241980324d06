import json

import pytest
import yaml

from hydrahead.cli import main
from hydrahead.distill import EXAMPLE_RECIPE, Recipe, RecipeError
from hydrahead.distill.recipe import diff_identities, parse_tokens
from hydrahead.utils.io import json_sha256


def minimal(**stages):
    return {
        "teacher": "t", "plan": "p.json", "output_dir": "out",
        "data": {"train_files": ["a.jsonl"]},
        "stages": stages or {"align": {"tokens": 1000, "seq_len": 8, "batch_size": 2, "lr": 1e-3}},
    }


def test_example_recipe_is_valid_and_commented(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(EXAMPLE_RECIPE)
    recipe = Recipe.from_yaml(path)
    assert [name for name, _ in recipe.stages.active()] == ["align", "distill", "long_context"]
    assert recipe.stages.align.tokens == 300_000_000 and recipe.stages.distill.tokens == 10**9
    assert recipe.teacher == str(tmp_path / "models/Qwen3-1.7B")  # relative to the recipe file
    assert recipe.data.train_files == [str(tmp_path / "data/fineweb-edu/*.parquet")]
    assert recipe.hybrid_options().train_length == 16384
    assert recipe.stages.align.loss == "nmse" and Recipe.from_dict(minimal()).stages.align.loss == "nmse"
    assert EXAMPLE_RECIPE.count("#") > 20


def test_print_example_recipe(capsys):
    assert main(["distill", "--print-example-recipe"]) == 0
    assert capsys.readouterr().out == EXAMPLE_RECIPE


@pytest.mark.parametrize("mutate,message", [
    (lambda r: r["stages"]["align"].update(lr_warmup=5), "unknown key 'stages.align.lr_warmup'"),
    (lambda r: r["stages"].update(algin=r["stages"]["align"]), "unknown key 'stages.algin'; did you mean 'align'?"),
    (lambda r: r.update(seeed=1), "unknown key 'seeed'; did you mean 'seed'?"),
    (lambda r: r["data"].update(text_feild="x"), "did you mean 'text_field'?"),
    (lambda r: r.pop("teacher"), "missing required key 'teacher'"),
    (lambda r: r["stages"]["align"].pop("lr"), "missing required key 'stages.align.lr'"),
    (lambda r: r["stages"]["align"].update(batch_size="four"), "stages.align.batch_size must be an integer"),
    (lambda r: r["stages"]["align"].update(grad_accum=0), "stages.align.grad_accum must be >= 1"),
    (lambda r: r["stages"]["align"].update(schedule="cosin"), "stages.align.schedule must be one of"),
    (lambda r: r["stages"]["align"].update(loss="l2"), "stages.align.loss must be one of nmse, mse; got 'l2'"),
    (lambda r: r["stages"]["align"].update(tokens="lots"), "stages.align.tokens: expected a token count"),
    (lambda r: r["stages"]["align"].update(skip=True), "must run at least one of"),
    (lambda r: r.update(hybrid={"preset": "paper", "fa_rop": "none"}), "hybrid.fa_rop is an unknown key"),
    (lambda r: r.update(hybrid={"preset": "paper", "conv_size": 1}), "hybrid is invalid: conv_size"),
    (lambda r: r["training"].update(precision="fp8") if "training" in r else r.update(training={"precision": "fp8"}),
     "training.precision must be one of auto, fp32, bf16"),
    (lambda r: r["data"].update(train_files=[]), "data.train_files must name at least one file"),
    (lambda r: r.update(seed=-1), "seed must be a whole number from 0 to 2**64 - 1, got -1"),
    (lambda r: r["stages"]["align"].update(sink_tokens=r["stages"]["align"]["seq_len"]),
     "stages.align.sink_tokens must be below seq_len"),  # every position left out: nothing trains
    (lambda r: r["stages"].update(distill={"tokens": 10, "seq_len": 8, "batch_size": 1, "lr": 1.0,
                                           "lora": {"rank": 4}}), "unknown key 'stages.distill.lora.rank'"),
])
def test_recipe_errors_name_the_key(mutate, message):
    data = minimal()
    mutate(data)
    with pytest.raises(RecipeError) as err:
        Recipe.from_dict(data)
    assert message in str(err.value)


def test_values_yaml_reads_as_text_are_accepted():
    data = minimal(align={"tokens": "1.5K", "seq_len": 8, "batch_size": 2, "lr": "1e-3", "betas": [0.9, 0.99]})
    stage = Recipe.from_dict(data).stages.align
    assert stage.tokens == 1500 and stage.lr == 1e-3 and stage.betas == (0.9, 0.99)
    assert stage.total_steps == 94  # ceil(1500 / (2 * 1 * 8)): a stage ends on its token budget


def test_parse_tokens():
    assert [parse_tokens(v) for v in (7, "300M", "0.3B", "16K", "1_000", "2e3")] == [7, 3 * 10**8, 3 * 10**8,
                                                                                      16000, 1000, 2000]


def test_round_trip_and_identity():
    recipe = Recipe.from_dict(minimal())
    again = Recipe.from_dict(yaml.safe_load(recipe.to_yaml()))
    assert again == recipe and again.fingerprint() == recipe.fingerprint()
    data = minimal()
    data["training"] = {"log_every": 3, "progress": False}  # runtime-only: same identity
    assert Recipe.from_dict(data).fingerprint() == recipe.fingerprint()
    data["stages"]["align"]["lr"] = 2e-3
    changed = Recipe.from_dict(data)
    assert changed.fingerprint() != recipe.fingerprint()
    assert diff_identities(recipe.identity(), changed.identity()) == ["stages.align.lr: 0.001 -> 0.002"]


def test_an_identity_stored_before_a_key_became_runtime_matches_without_it():
    """Runs written before training.gradient_checkpointing joined RUNTIME_KEYS stored it in their identity; the
    checkpoint check compares them without it (checkpoint.load)."""
    from hydrahead.distill.recipe import without_runtime_keys

    data = minimal()
    data["training"] = {"gradient_checkpointing": True}
    recipe = Recipe.from_dict(data)
    stored = recipe.identity()
    stored["training"]["gradient_checkpointing"] = True  # as an older version wrote it
    assert json_sha256(stored)[:16] != recipe.fingerprint()
    assert json_sha256(without_runtime_keys(stored))[:16] == recipe.fingerprint()
    data["training"] = {}
    assert Recipe.from_dict(data).fingerprint() == recipe.fingerprint()


def test_a_run_from_before_the_mean_output_resumes_with_it_off():
    """Identities written before `gdn_mean_output` existed have no such key: with the option off, a recipe's
    identity is theirs (so the run resumes); on (the presets' default), the difference is named."""
    data = minimal()
    data["hybrid"] = {"preset": "exact", "gdn_mean_output": False}
    off = Recipe.from_dict(data)
    old_identity = json.loads(json.dumps(off.identity()))
    assert "gdn_mean_output" not in old_identity["hybrid"] and off.fingerprint() == json_sha256(old_identity)[:16]
    data["hybrid"] = {"preset": "exact"}
    assert diff_identities(old_identity, Recipe.from_dict(data).identity()) == ["hybrid.gdn_mean_output: null -> true"]


def test_cli_set_overrides(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(minimal()))
    recipe = Recipe.from_yaml(path, {"stages.align.lr": 5e-4, "training.progress": False})
    assert recipe.stages.align.lr == 5e-4 and recipe.training.progress is False
    with pytest.raises(RecipeError, match="unknown key 'stages.align.lrr'"):
        Recipe.from_yaml(path, {"stages.align.lrr": 1})
    path.write_text(yaml.safe_dump({**minimal(), "training": None}))  # `training:` left empty: its defaults
    assert Recipe.from_yaml(path, {"training.progress": False}).training.progress is False  # was "not a section"


def test_cli_recipe_errors_are_one_line(tmp_path, capsys):
    path = tmp_path / "r.yaml"
    data = minimal()
    data["stages"]["align"]["warmup"] = 10
    path.write_text(yaml.safe_dump(data))
    assert main(["distill", str(path)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'stages.align.warmup'" in err and "Traceback" not in err
    assert main(["distill", str(tmp_path / "missing.yaml")]) == 2
    assert "recipe file not found" in capsys.readouterr().err


def test_lengths_and_budgets_follow_one_convention():
    from hydrahead.utils.units import format_length, parse_length

    # lengths count k = 1024, token budgets K = 1000; Ki and plain integers mean the same in both
    assert [parse_length(v) for v in ("16k", "16Ki", "16384", "1.5k", 512)] == [16384, 16384, 16384, 1536, 512]
    assert [parse_tokens(v) for v in ("16K", "16Ki", "16000", "16e3")] == [16000, 16384, 16000, 16000]
    assert format_length(parse_length("16k")) == "16k"
    for bad in ("16q", "k", "-1", "", "1kk", "1.7k", "1e400"):
        with pytest.raises(ValueError):
            parse_length(bad)
    # e notation and a suffix at once (1e3k was 1,024,000), a remainder a large number hid (1000.7k was
    # 1,024,717), underscores not between digits (1__0 was 10): refused
    for parse, bad in ((parse_length, "1e3k"), (parse_tokens, "2e3M"), (parse_length, "1000.7k"),
                       (parse_length, "1__0"), (parse_length, "7_"), (parse_length, "_7"), (parse_tokens, "1e400"),
                       (parse_tokens, "nan")):
        with pytest.raises(ValueError):
            parse(bad)
    assert parse_tokens("1_000_000") == parse_tokens("0.001B") == 10**6


def test_a_plans_tie_count_is_not_part_of_the_run_identity():
    """`tied_picks` says how a plan was made (equal scores decided some heads), not what it is: a demo rerun whose
    plan now carries it resumes the same run."""
    recipe = Recipe.from_dict(minimal())
    plan = {"fa_heads": [[0], [1]], "num_heads": 4, "num_kv_heads": 2, "meta": {"method": "patching"}}
    noted = {**plan, "meta": {"method": "patching", "tied_picks": 3}}
    assert recipe.fingerprint(noted) == recipe.fingerprint(plan)
    assert recipe.fingerprint({**plan, "fa_heads": [[0], [2]]}) != recipe.fingerprint(plan)
