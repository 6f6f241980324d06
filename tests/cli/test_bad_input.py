"""A table of bad inputs through the real CLI, in a subprocess: each gets exit code 2 and one line on
stderr that names the offending value, no traceback, and nothing is written."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hydrahead import HeadPlan, HeadScores
from tests.conftest import make_teacher
from tests.toy_tokenizer import char_tokenizer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    teacher = make_teacher("qwen3")
    teacher.save_pretrained(d / "teacher")
    char_tokenizer().save_pretrained(d / "teacher")
    plan = HeadPlan(((0,), (3,)), 4, 2)
    plan.to_json(d / "plan.json")
    import hydrahead

    hydrahead.save_hybrid(hydrahead.convert(teacher, plan), d / "hybrid", char_tokenizer())
    HeadScores([[0.1, 0.9, 0.2, 0.3], [0.4, 0.5, 0.6, 0.7]], "patching", 2).to_json(d / "scores.json")
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=97, n_positions=64)).save_pretrained(d / "gpt2")
    char_tokenizer().save_pretrained(d / "gpt2")
    (d / "truncated").mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        if (d / "teacher" / name).is_file():
            (d / "truncated" / name).write_bytes((d / "teacher" / name).read_bytes())
    (d / "truncated" / "model.safetensors").write_bytes((d / "teacher" / "model.safetensors").read_bytes()[:500])
    (d / "a_file").write_text("not a directory")
    (d / "garbage.gguf").write_bytes(b"\x00" * 64)
    (d / "two_ggufs").mkdir()
    for name in ("a.gguf", "b.gguf"):
        (d / "two_ggufs" / name).write_bytes(b"GGUF")
    (d / "a_dir").mkdir()
    (d / "notes").mkdir()  # file names a checkpoint has, but no checkpoint: the user's, never replaced
    (d / "notes" / "README.md").write_text("my notes")
    (d / "notes" / "manifest.json").write_text("{}")
    (d / "no_plan").mkdir()  # a hybrid's model_type without the plan and options
    for file in (d / "hybrid").iterdir():
        if file.is_file():
            (d / "no_plan" / file.name).write_bytes(file.read_bytes())
    config = json.loads((d / "no_plan" / "config.json").read_text())
    del config["hydrahead"]
    (d / "no_plan" / "config.json").write_text(json.dumps(config))
    (d / "binary.txt").write_bytes(bytes(range(256)) * 8)
    (d / "latin1.json").write_bytes('{"fa_heads": [[0], [3]], "meta": "caf\xe9"}'.encode("latin-1"))
    (d / "data.csv").write_text("text\nhello\n")
    (d / "doc.txt").write_text("The grass is green. " * 40)
    bad_probes = HeadScores([[0.1, 0.9, 0.2, 0.3], [0.4, 0.5, 0.6, 0.7]], "patching", 2)
    bad_probes.metadata["probe_config"] = {"samples": "4"}
    bad_probes.to_json(d / "bad_probe_scores.json")
    HeadScores([[0.1, 0.9, 0.2, 0.3]] * 3, "attribution", 2).to_json(d / "three_layer_scores.json")
    (d / "float_plan.json").write_text('{"fa_heads": [[0.5], [1]], "num_heads": 4, "num_kv_heads": 2}')
    (d / "four_plan.json").write_text('{"fa_heads": [[0], [1]], "num_heads": "four", "num_kv_heads": 2}')
    (d / "latin1.yaml").write_bytes("teacher: caf\xe9\n".encode("latin-1"))
    recipe = {"teacher": str(d / "gpt2"), "plan": str(d / "plan.json"), "output_dir": str(d / "run"),
              "data": {"train_files": [str(d / "doc.txt")]}, "stages": {"align": {"tokens": 64, "seq_len": 16,
                                                                                 "batch_size": 1, "lr": 1e-3}}}
    (d / "gpt2_recipe.yaml").write_text(json.dumps(recipe))
    (d / "number_text.jsonl").write_text('{"text": "fine"}\n{"text": 5}\n')
    big = char_tokenizer()
    big.add_tokens([f"extra{i}" for i in range(200)])
    big.save_pretrained(d / "big_tokenizer")
    (d / "unclosed.yaml").write_text("teacher: [unclosed\nplan: x\n")
    (d / "empty.yaml").write_text("")
    (d / "inf_recipe.yaml").write_text(json.dumps({**recipe, "teacher": str(d / "teacher"),
                                                   "stages": {"align": {**recipe["stages"]["align"], "lr": "inf"}}}))
    (d / "broken.jinja").write_text("{% for m in messages %}{{ m.content }")
    (d / "teacher_copy").mkdir()
    for file in (d / "teacher").iterdir():
        (d / "teacher_copy" / file.name).write_bytes(file.read_bytes())
    HeadScores([[0.1, 0.9, 0.2, 0.3], [0.4, 0.5, 0.6, 0.7]], "attribution", 2).to_json(d / "attr_a.json")
    HeadScores([[0.3, 0.9, 0.2, 0.1], [0.4, 0.5, 0.6, 0.7]], "attribution", 2).to_json(d / "attr_b.json")
    (d / "kv_float_scores.json").write_text('{"method": "patching", "values": [[0.1, 0.2]], "num_kv_heads": 1.5}')
    (d / "file_out_recipe.yaml").write_text(json.dumps({**recipe, "teacher": str(d / "teacher"),
                                                        "output_dir": str(d / "a_file")}))
    (d / "in_teacher_recipe.yaml").write_text(json.dumps({**recipe, "teacher": str(d / "teacher"),
                                                          "output_dir": str(d / "teacher" / "run")}))
    HeadPlan(((0,), (1,), (2,)), 4, 2).to_json(d / "three_layer_plan.json")
    (d / "blank.jsonl").write_text("\n")
    (d / "zero_heads").mkdir()  # a config transformers refuses (heads 0): found when the tokenizer loads it
    for file in (d / "teacher").iterdir():
        (d / "zero_heads" / file.name).write_bytes(file.read_bytes())
    config = json.loads((d / "zero_heads" / "config.json").read_text())
    (d / "zero_heads" / "config.json").write_text(json.dumps({**config, "num_attention_heads": 0}))
    # found by a third review of bad inputs (2026-12-07): templates that fail when filled in (instruct templates
    # call raise_exception), an empty one
    raising = "{{ raise_exception('roles must alternate') }}"
    (d / "raising.jinja").write_text(raising)
    (d / "empty.jinja").write_text(" \n")
    (d / "raising_chat").mkdir()
    for file in (d / "hybrid").iterdir():
        if file.is_file():
            (d / "raising_chat" / file.name).write_bytes(file.read_bytes())
    tokenizer = char_tokenizer()
    tokenizer.chat_template = raising
    tokenizer.save_pretrained(d / "raising_chat")
    (d / "bigint_plan.json").write_text('{"fa_heads": [[0], [3]], "num_heads": ' + "9" * 5000 + "}")
    (d / "deep_plan.json").write_text("[" * 100_000)  # json's parser recurses: RecursionError, not JSONDecodeError
    (d / "deep.yaml").write_text("a: " + "[" * 100_000)
    (d / "no_layers").mkdir()  # a count transformers lets through (a Llama's): a model of no layers answered garbage
    for file in (ROOT / "hydrahead" / "demo" / "assets" / "teacher").iterdir():
        (d / "no_layers" / file.name).write_bytes(file.read_bytes())
    config = json.loads((d / "no_layers" / "config.json").read_text())
    (d / "no_layers" / "config.json").write_text(json.dumps({**config, "num_hidden_layers": -1}))
    (d / "wide_config").mkdir()  # a config edited: its weights are narrower (transformers printed a table first)
    for file in (d / "teacher").iterdir():
        (d / "wide_config" / file.name).write_bytes(file.read_bytes())
    config = json.loads((d / "wide_config" / "config.json").read_text())
    (d / "wide_config" / "config.json").write_text(json.dumps({**config, "hidden_size": 2 * config["hidden_size"]}))
    (d / "bad_generation").mkdir()  # transformers loads it with default generation settings, says so at info level
    for file in (d / "teacher").iterdir():
        (d / "bad_generation" / file.name).write_bytes(file.read_bytes())
    (d / "bad_generation" / "generation_config.json").write_text('{"max_new_tokens": "x", ')
    return d


def cases(d: Path) -> list[tuple[list[str], str]]:
    T, H, P, S, F, G = (str(d / n) for n in ("teacher", "hybrid", "plan.json", "scores.json", "a_file", "garbage.gguf"))
    new = str(d / "never_written")
    return [
        # convert
        (["convert", "--model", T, "--plan", P, "--out", F], "a_file is a file"),
        (["convert", "--model", T, "--plan", P, "--out", f"{F}/sub"], "a_file is a file"),
        (["convert", "--model", T, "--plan", str(d / "float_plan.json"), "--out", new], "fa_heads\\[0\\] must be an integer"),
        (["convert", "--model", T, "--plan", str(d / "four_plan.json"), "--out", new], "num_heads must be an integer"),
        (["convert", "--model", T, "--plan", str(d / "latin1.json"), "--out", new], "latin1.json is not UTF-8"),
        (["convert", "--model", str(d / "truncated"), "--plan", P, "--out", new], "truncated.*corrupt or truncated"),
        (["convert", "--model", str(d / "gpt2"), "--plan", P, "--out", new], "gpt2 is a 'gpt2' model"),
        (["convert", "--model", T, "--plan", P, "--out", str(d / "notes")],
         r"holds other files \(README.md, manifest.json\) and no earlier checkpoint"),
        (["convert", "--model", T, "--plan", P, "--out", new, "--option", "conv_size=2.5"],
         r"conv_size must be an integer, 0 \(off\) or >= 2, got 2.5"),
        (["convert", "--model", T, "--plan", P, "--out", new, "--option", "conv_size=abc"],
         r"conv_size must be an integer.*got 'abc'"),
        (["convert", "--model", T, "--plan", P, "--out", new, "--option", "train_length=16q"],
         r"train_length: expected a length in tokens .*got '16q'"),
        (["convert", "--model", T, "--plan", P, "--out", new, "--option", "fa_gate=maybe"],
         r"fa_gate must be true or false, got 'maybe'"),
        (["convert", "--model", T, "--plan", P, "--out", new, "--option", "fa_gates=false"],
         r"unknown hybrid option\(s\) \['fa_gates'\]"),
        # score and validate-scores
        (["score", "--model", T, "--out", str(d / "a_dir")], "a_dir is a directory"),
        (["score", "--model", T, "--out", f"{new}.json", "--batch-size", "0"], "--batch-size: must be >= 1"),
        (["score", "--model", T, "--out", f"{new}.json", "--method", "retrieval", "--no-senders"],
         "the retrieval score has no sender term"),
        (["score", "--model", T, "--out", f"{new}.json", "--device", "banana"], "unknown device 'banana'"),
        (["score", "--model", T, "--out", f"{new}.json", "--device", "cuda:7"], "'cuda:7' is not available"),
        (["score", "--model", T, "--out", f"{new}.json", "--probes-file", str(d / "binary.txt")], "binary.txt is a binary file"),
        (["score", "--model", str(d / "truncated"), "--out", f"{new}.json"], "corrupt or truncated"),
        (["score", "--model", str(d / "gpt2"), "--out", f"{new}.json"], "'gpt2' model"),
        (["validate-scores", "--model", T, "--scores", S, "--seeds", "0"], "--seeds: must be >= 1"),
        (["validate-scores", "--model", T, "--scores", S, "--out", str(d / "a_dir")], "a_dir is a directory"),
        (["validate-scores", "--model", T, "--scores", str(d / "latin1.json")], "latin1.json is not UTF-8"),
        (["validate-scores", "--model", T, "--scores", str(d / "bad_probe_scores.json")],
         "bad_probe_scores.json: its probe settings .* are unreadable"),
        (["validate-scores", "--model", T, "--scores", S, "--compare", str(d / "three_layer_scores.json")],
         "scores are for a model with 3 layers"),
        (["score", "--model", T, "--out", f"{new}.json", "--probes-file", str(d / "doc.txt"), "--haystack", "noise"],
         "--probes-file gives the haystack; --haystack noise would ignore it"),
        (["score", "--model", T, "--out", f"{new}.json", "--needle-types", "numbr"], "needle_types must be"),
        (["score", "--model", T, "--tokenizer", str(d / "no_such_tokenizer"), "--out", f"{new}.json"],
         "tokenizer directory not found: .*no_such_tokenizer"),
        # plan
        (["plan", "--scores", str(d / "latin1.json"), "--out", f"{new}.json"], "latin1.json is not UTF-8"),
        (["plan", "--baseline", "layerwise", "--model", T, "--layers", "abc", "--out", f"{new}.json"], "--layers expects"),
        (["plan", "--baseline", "random", "--model", str(d / "gpt2"), "--out", f"{new}.json"], "'gpt2' model"),
        (["plan", "--scores", S, "--out", f"{F}/plan.json"], "a_file is a file"),
        (["plan", "--scores", S, "--min-per-layer", "-1", "--out", f"{new}.json"], "--min-per-layer: must be >= 0"),
        # eval
        (["eval", "niah", "--models", H, "--out", F], "a_file is a file"),
        (["eval", "niah", "--models", H, "--samples", "0", "--out", new], "--samples: must be >= 1"),
        (["eval", "niah", "--models", H, "--haystack", "files", "--haystack-files", str(d / "binary.txt"), "--out", new],
         "binary.txt is a binary file"),
        (["eval", "niah", "--models", H, "--device", "cuda:7", "--out", new], "'cuda:7' is not available"),
        (["eval", "niah", "--models", H, "--lengths", ",", "--out", new], "--lengths: no length in ','"),
        (["eval", "ppl", "--models", H, "--data", str(d / "binary.txt"), "--out", new], "binary.txt is a binary file"),
        (["eval", "ppl", "--models", H, "--data", str(d / "data.csv"), "--out", new], "unsupported type '.csv'"),
        (["eval", "ppl", "--models", H, "--data", str(d / "doc.txt"), "--bucket", "0", "--out", new],
         "argument --bucket: must be >= 1 token"),
        (["eval", "niah", "--models", str(d / "gpt2"), "--lengths", "256", "--out", new],
         "learned position table of 64 positions: --lengths 256 is beyond it"),
        (["eval", "ppl", "--models", H, str(d / "gpt2"), "--data", str(d / "doc.txt"), "--length", "128", "--out", new],
         "gpt2 \\(a gpt2 model\\) has a learned position table of 64 positions: --length 128"),
        (["info", F], "a_file is a file, not a model directory"),
        (["info", str(d / "gpt2")], "a gpt2 config has no usable num_hidden_layers"),
        # GGUF models (--model and export)
        (["convert", "--model", G, "--plan", P, "--out", new], "garbage.gguf is not a readable GGUF model"),
        (["score", "--model", str(d / "two_ggufs"), "--out", f"{new}.json"], r"holds 2 GGUF files \(a.gguf, b.gguf\)"),
        (["eval", "niah", "--models", H, G, "--out", new], "garbage.gguf is not a readable GGUF model"),
        (["generate", G, "--prompt", "hi"], "garbage.gguf is not a readable GGUF model"),  # not "no usable tokenizer"
        (["score", "--model", str(d / "nope.gguf"), "--out", f"{new}.json"], "GGUF file not found"),
        (["export", G, new], "garbage.gguf is not a readable GGUF model"),
        (["export", T, new], "teacher is not a .gguf file or a directory holding one"),
        (["export", G, F], "a_file is a file"),
        (["export", G, str(d)], "the directory holds other files"),
        (["export", G, new, "--dtype", "float8"], "--dtype: invalid choice"),
        # distill and demo
        (["distill", str(d / "latin1.yaml")], "latin1.yaml is not UTF-8"),
        (["distill", str(d / "gpt2_recipe.yaml")], "teacher .*gpt2 is a 'gpt2' model"),
        (["distill", str(d / "file_out_recipe.yaml")], "a_file is a file, not a directory"),
        (["distill", str(d / "nope.yaml")], "recipe file not found"),
        (["distill", str(d / "gpt2_recipe.yaml"), "--set", "stages.align.lr=["], "--set stages.align.lr: cannot read"),
        (["demo", "--out", F], "a_file is a file"),
        (["demo", "--device", "banana"], "unknown device 'banana'"),
        (["demo", "--export-teacher", F], "a_file is a file"),
        (["demo", "--export-teacher", new, "--budget", "2", "--scale", "tiny"],
         "--export-teacher writes the shipped teacher and stops; --scale, --budget would be ignored"),
        (["demo", "--out", new, "--plans", "hydrahead-7:1,best-plan"], r"--plans: unknown plan\(s\) \['best-plan'\]"),
        (["demo", "--out", new, "--budget", "0"], "--budget must be a positive multiplier"),
        (["demo", "--out", new, "--teacher", T, "--retrain-teacher"], "--teacher and --retrain-teacher exclude"),
        (["demo", "--out", new, "--teacher", G], "garbage.gguf is not a readable GGUF model"),
        (["demo", "--out", new, "--teacher", str(d / "gpt2")], "gpt2"),
        # serve: refused before any model is loaded or a port is taken
        (["serve", new], "model directory not found"),
        (["serve", F], "a_file is a file, not a model directory"),
        (["serve", str(d / "truncated")], "corrupt or truncated"),
        (["serve", G], "served after `hydrahead export"),
        (["serve", H, "--continuous-batching"], "continuous batching .*is not supported for hydrahead models"),
        (["serve", H, "--chat-template", str(d / "nope.jinja")], "chat template file not found"),
        (["serve", H, "--chat-template", "{{ messages[0]['content'] }}"],
         "chat_template takes the path of a file holding a Jinja template, got the template itself"),
        (["serve", H, "--chat-template", "{% for m in messages %}{{ m['content'] }}{% endfor %}" * 8],  # OSError:
         "got the template itself"),  # a name longer than a file's may be
        (["serve", H, "--chat-template", str(d / "binary.txt")], "binary.txt is a binary file"),
        (["serve", H, "--port", "70000"], "--port: must be a TCP port"),
        (["serve", H, "--device", "banana"], "unknown device 'banana'"),
        (["serve", str(d / "no_plan")], "has no valid 'hydrahead' entry"),
        (["score", "--model", T, "--out", f"{new}.json", "--context-length", "2q"], "--context-length: expected a length"),
        # found by a review of bad inputs (2026-12-06)
        (["eval", "ppl", "--models", H, "--data", str(d / "number_text.jsonl"), "--out", new],
         "number_text.jsonl:2: 'text' must be a string, got 5"),
        (["score", "--model", T, "--tokenizer", str(d / "big_tokenizer"), "--out", f"{new}.json"],
         "big_tokenizer has 297 tokens but the model only 97"),
        (["score", "--model", T, "--out", f"{new}.json", "--context-length", "1e30"], "--context-length: .*at most 16m"),
        (["eval", "niah", "--models", H, "--lengths", "1024m", "--out", new], "at most 16m"),
        (["validate-scores", "--model", T, "--scores", S, "--compare", str(d / "attr_a.json"), "--compare",
          str(d / "attr_b.json")], "attr_b.json holds attribution scores, as .*attr_a.json does"),
        (["validate-scores", "--model", T, "--scores", S, "--top-k", "5"], "--top-k 5: the model has 8 heads, so at most 4"),
        (["eval", "ppl", "--models", H, H, "--data", str(d / "doc.txt"), "--out", new], "is .*hybrid again"),
        (["distill", str(d / "inf_recipe.yaml")], "stages.align.lr must be a finite number"),
        (["distill", str(d / "unclosed.yaml")], "unclosed.yaml is not valid YAML: .* at line 2, column 5"),
        (["distill", str(d / "empty.yaml")], "empty.yaml is empty"),
        (["convert", "--model", T, "--plan", P, "--out", str(d / "teacher_copy")],
         "teacher_copy: it holds a model that is not a hydrahead hybrid"),
        (["convert", "--model", H, "--plan", P, "--out", new], "already a hydrahead hybrid; convert its teacher"),
        (["plan", "--scores", S, "--out", S], "is the --scores file this command reads"),
        (["plan", "--scores", S, "--out", f"{new}/"], "ends with a slash"),
        (["plan", "--scores", S, "--seed", "3", "--out", f"{new}.json"], "--seed applies to --baseline random, not scores"),
        (["eval", "niah", "--models", H, "--tasks", ",", "--out", new], "no task named"),
        (["plan", "--scores", str(d / "kv_float_scores.json"), "--out", f"{new}.json"],
         "kv_float_scores.json: num_kv_heads must be a whole number, got 1.5"),
        (["serve", H, "--chat-template", str(d / "broken.jinja")], "broken.jinja is not a valid Jinja template"),
        (["score", "--model", T, "--out", f"{new}.json", "--answer-lead", "-1"], "--answer-lead: must be >= 0"),
        # generate: refused before the model loads (the prompt's length: before any token is generated)
        (["generate", H], "give the prompt with --prompt .* or --prompt-file"),
        (["generate", H, "-p", "x", "--prompt-file", str(d / "doc.txt")], "one of the two"),
        (["generate", H, "--prompt-file", str(d / "nope.txt")], "prompt file not found: .*nope.txt"),
        (["generate", H, "--prompt-file", str(d / "binary.txt")], "binary.txt is a binary file"),
        (["generate", H, "-p", " \n "], "the prompt is empty"),
        (["generate", H, "-p", "x", "--chat"], "has no chat template"),
        (["generate", H, "-p", "x", "--temperature", "-1"], "--temperature: must be a finite number >= 0"),
        (["generate", H, "-p", "x", "--top-p", "1.5"], r"--top-p: must be in \(0, 1\]"),
        (["generate", H, "-p", "x", "--max-new-tokens", "0"], "--max-new-tokens: must be >= 1"),
        (["generate", H, "-p", "x", "--json", str(d / "a_dir")], "a_dir is a directory"),
        (["generate", H, "-p", "x", "--cache", "paged"], "--cache: invalid choice"),
        (["generate", new, "-p", "x"], "model directory not found"),
        (["generate", str(d / "gpt2"), "-p", "x" * 60, "--max-new-tokens", "10"],
         "learned position table of 64 positions: 60 prompt tokens \\+ 10 new ones = 70 is beyond it"),
        # found by a second review of bad inputs (2026-12-06)
        (["plan", "--baseline", "random", "--model", T, "--out", f"{T}/config.json"],
         "--out .*teacher/config.json is inside the --model directory"),
        (["generate", H, "-p", "x", "--json", f"{H}/config.json"], "--json .*hybrid/config.json is inside the model"),
        (["generate", H, "--prompt-file", str(d / "doc.txt"), "--json", str(d / "doc.txt")],
         "--json .*doc.txt is the --prompt-file file this command reads"),
        (["score", "--model", T, "--out", f"{new}.png", "--plot", f"{new}.png"],
         "--out and --plot are the same path"),
        (["score", "--model", T, "--out", f"{new}.json", "--plot", f"{new}.txt"],  # PNG bytes under a .txt name
         r"--plot: figure .*\.txt: the format is taken from the file name; give one ending in .png, .pdf or .svg"),
        (["score", "--model", T, "--probes-file", str(d / "doc.txt"), "--out", str(d / "doc.txt")],
         "is the --probes-file file"),
        (["validate-scores", "--model", T, "--scores", S, "--out", f"{new}.svg", "--layer-plot", f"{new}.svg"],
         "--out and --layer-plot are the same path"),
        (["validate-scores", "--model", T, "--scores", S, "--layer-plot", new],
         "--layer-plot: figure .* give one ending"),
        (["eval", "ppl", "--models", H, "--data", str(d / "doc.txt"), "--out", H], "--out .*hybrid is the --models directory"),
        (["eval", "ppl", "--models", H, "--data", str(d / "blank.jsonl"), "--out", new],
         r"no documents in .*blank.jsonl \(blank.jsonl holds no text\)"),
        (["eval", "ppl", "--models", H, "--data", str(d / "a_dir"), "--out", new],
         r"no documents in .*a_dir \(expected .txt, .md, .jsonl files\)"),
        # an argument no command knows: named by the subcommand that read the line, pointing at its --help
        (["plan", S, "--out", f"{new}.json"], r"^hydrahead plan: error: unrecognized arguments: .*scores.json "
         r"\(see hydrahead plan --help\)$"),
        (["eval", "ppl", "--models", H, "--data", str(d / "doc.txt"), "--out", new, "--window", "4"],
         r"^hydrahead eval ppl: error: unrecognized arguments: --window 4 \(see hydrahead eval ppl --help\)$"),
        (["plan", "--baseline", "layerwise", "--model", T, "--layers", "", "--out", f"{new}.json"],
         "--layers expects a comma list of layer indices such as 0,4,8, got ''"),
        (["convert", "--model", T, "--plan", str(d / "three_layer_plan.json"), "--out", new],
         "plan has 3 layers but the model has 2"),
        (["distill", str(d / "in_teacher_recipe.yaml")], "output_dir .*teacher/run is inside the teacher directory"),
        (["generate", str(d / "zero_heads"), "-p", "x"], "zero_heads/config.json is not a valid model config"),
        (["eval", "ppl", "--models", str(d / "zero_heads"), "--data", str(d / "doc.txt"), "--out", new],
         "zero_heads/config.json is not a valid model config"),
        (["generate", str(d / "raising_chat"), "-p", "x"],
         r"the chat template failed on a user message: roles must alternate; give the prompt as plain text \(--no-chat\)"),
        (["serve", H, "--chat-template", str(d / "raising.jinja")],
         "the chat template failed on a user message: roles must alternate; give another with --chat-template"),
        (["serve", str(d / "raising_chat")], "the chat template failed on a user message: roles must alternate"),
        (["serve", H, "--chat-template", str(d / "empty.jinja")], "chat template file .*empty.jinja is empty"),
        (["convert", "--model", T, "--plan", str(d / "bigint_plan.json"), "--out", new],
         "bigint_plan.json is not valid JSON: Exceeds the limit"),
        (["convert", "--model", T, "--plan", str(d / "deep_plan.json"), "--out", new],
         "deep_plan.json is not valid JSON: maximum recursion depth"),
        (["distill", str(d / "deep.yaml")], "deep.yaml is not valid YAML: nested too deeply"),
        (["generate", H, "-p", "x", "--temperature", "1", "--seed", str(2**64)], "--seed: must be below 2\\*\\*64"),
        (["convert", "--model", T, "--plan", P, "--out", new, "--calibration", str(d / "a_dir")],
         "--calibration: .*a_dir is a directory, not a text file"),
        (["convert", "--model", T, "--plan", P, "--out", new, "--calibration", str(d / "latin1.json")],
         "--calibration: .*latin1.json is not UTF-8 text"),
        (["generate", str(d / "no_layers"), "-p", "x"], "no_layers/config.json is not a valid model config: .*-1 layers"),
        (["generate", str(d / "wide_config"), "-p", "x"],
         r"could not load the model in .*wide_config: tensor shapes differ from config.json \(.*in the weights"),
        (["generate", str(d / "bad_generation"), "-p", "x"], "bad_generation/generation_config.json is corrupt"),
    ]


def test_every_bad_input_is_one_clear_line(files, tmp_path):
    import re

    table = cases(files)
    (tmp_path / "cases.json").write_text(json.dumps([argv for argv, _ in table]))
    before = sorted(p.name for p in files.iterdir())
    proc = subprocess.run([sys.executable, "-m", "tests.cli.bad_input_driver", str(tmp_path / "cases.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    failures = []
    for (argv, message), result in zip(table, json.loads(proc.stdout)):
        err = result["stderr"]
        lines = [line for line in err.splitlines() if line.strip() and "it/s]" not in line]
        ok = (result["escaped"] is None and result["code"] == 2 and len(lines) == 1
              and lines[0].startswith("hydrahead") and "Traceback" not in err and re.search(message, lines[0]))
        if not ok:
            failures.append(f"{' '.join(argv[:2])}: code={result['code']} {result['escaped'] or err.strip()[-400:]}")
    assert not failures, "\n".join(failures)
    assert sorted(p.name for p in files.iterdir()) == before  # nothing was written next to the inputs
    assert (files / "a_file").read_text() == "not a directory"
    assert sorted(p.name for p in (files / "notes").iterdir()) == ["README.md", "manifest.json"]


@pytest.mark.parametrize("error, shown", [
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                  "tried to allocate 512000000512 bytes. Error code 12 (Cannot allocate memory)"),
     r"out of memory \(476.8 GiB asked of the CPU's memory\); ask for less"),
    (MemoryError(), r"out of memory \(MemoryError\)"),
])
def test_running_out_of_memory_is_one_line(files, monkeypatch, capsys, error, shown):
    """A static cache for a billion new tokens, say: the allocation fails in torch, and the command says so."""
    import re

    from hydrahead import cli
    from hydrahead.cli import info

    def run(args):
        raise error

    monkeypatch.setattr(info, "run", run)
    assert cli.main(["info", str(files / "hybrid")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and re.match(rf"hydrahead info: error: {shown}", lines[0]), lines


def test_a_runtime_error_that_is_not_memory_is_not_hidden(files, monkeypatch):
    from hydrahead import cli
    from hydrahead.cli import info

    def run(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(info, "run", run)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["info", str(files / "hybrid")])


def test_a_warning_of_hydrahead_is_one_line_and_others_are_as_python_shows_them(files, monkeypatch, capsys):
    import warnings

    from hydrahead import HydraHeadWarning, cli
    from hydrahead.cli import info

    def run(args):
        warnings.warn("stages.align: a sink in layers 1-3,\n  which sink_tokens: 1 leaves out", HydraHeadWarning)
        warnings.warn("another library's warning", UserWarning)
        return 0

    monkeypatch.setattr(info, "run", run)
    shown_by_python = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        def before(message, category, filename, lineno, file=None, line=None):
            shown_by_python.append((category, message, Path(filename).name, file, line))

        warnings.showwarning = before
        assert cli.main(["info", str(files / "hybrid")]) == 0
        assert warnings.showwarning is before  # put back: a library caller's warnings are left as they were
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["hydrahead info: warning: stages.align: a sink in layers 1-3, which sink_tokens: 1 leaves out"]
    assert [(c, str(m), *rest) for c, m, *rest in shown_by_python] == [
        (UserWarning, "another library's warning", "test_bad_input.py", None, None)]  # where it was warned
