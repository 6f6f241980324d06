import json
import os

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

import hydrahead
from hydrahead import HeadPlan, HybridOptions
from tests.conftest import make_teacher
from tests.models.old_layout import write_old_layout


@pytest.fixture
def saved(tmp_path):
    teacher = make_teacher("qwen3")
    # layer 1: heads 0, 1 share KV group 0 and head 2 is alone in group 1 (K/V gathered per head)
    plan = HeadPlan(((1,), (0, 1, 2)), 4, 2, meta={"source": "test"})
    model = hydrahead.convert(teacher, plan, HybridOptions.preset("paper", train_length=64))
    model.save_pretrained(tmp_path)
    return model, tmp_path


@pytest.mark.parametrize("loader", ["hydrahead", "auto"])
def test_round_trip_gives_identical_logits(saved, loader):
    model, path = saved
    again = hydrahead.from_pretrained(path) if loader == "hydrahead" else AutoModelForCausalLM.from_pretrained(path)
    assert type(again) is type(model)
    ids = torch.randint(0, model.config.vocab_size, (2, 13))
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(ids).logits, model.eval()(ids).logits, rtol=0, atol=0)
    assert again.hydrahead_plan == model.hydrahead_plan
    assert again.hydrahead_plan.meta == {"source": "test"}
    assert again.hydrahead_options == HybridOptions.preset("paper", train_length=64)


def test_round_trip_each_family(family, tmp_path):
    teacher = make_teacher(family)
    model = hydrahead.convert(teacher, HeadPlan(((0, 1), (3,)), 4, 2)).eval()
    model.save_pretrained(tmp_path)
    again = hydrahead.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, model.config.vocab_size, (1, 9))
    with torch.no_grad():
        assert torch.equal(again(ids).logits, model(ids).logits)


@pytest.mark.parametrize("loader", ["hydrahead", "auto"])
def test_checkpoints_written_before_the_fused_projections_load(family, loader, tmp_path):
    """hydrahead 0.1 saved q/k/v (and GDN a/b) as separate projections: they load into the fused ones, give the
    same logits, and are saved again in the current layout."""
    teacher = make_teacher(family)
    model = hydrahead.convert(teacher, HeadPlan(((0, 1), (3,)), 4, 2)).eval()
    model.save_pretrained(tmp_path / "new")
    old = write_old_layout(model, tmp_path / "new", tmp_path / "old")
    again = (hydrahead.from_pretrained(old) if loader == "hydrahead" else AutoModelForCausalLM.from_pretrained(old)).eval()
    ids = torch.randint(0, model.config.vocab_size, (1, 9))
    with torch.no_grad():
        assert torch.equal(again(ids).logits, model(ids).logits)
    again.save_pretrained(tmp_path / "resaved")
    with safe_open(tmp_path / "resaved" / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert keys == set(model.state_dict()) - {"lm_head.weight"} or keys == set(model.state_dict())


@pytest.mark.parametrize("loader", ["hydrahead", "auto"])
def test_checkpoints_written_before_the_mean_output_load(loader, tmp_path):
    """A config written before `gdn_mean_output` existed has no such option (and o_proj no mean bias): it loads
    with the option off and gives the logits it gave."""
    teacher = make_teacher("llama")
    model = hydrahead.convert(teacher, HeadPlan(((0, 1), (3,)), 4, 2),
                              HybridOptions.preset("paper", gdn_mean_output=False)).eval()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["hydrahead"]["options"]["gdn_mean_output"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    again = (hydrahead.from_pretrained(tmp_path) if loader == "hydrahead"
             else AutoModelForCausalLM.from_pretrained(tmp_path)).eval()
    assert again.hydrahead_options.gdn_mean_output is False
    ids = torch.randint(0, model.config.vocab_size, (1, 9))
    with torch.no_grad():
        assert torch.equal(again(ids).logits, model(ids).logits)


def test_missing_directory(tmp_path):
    with pytest.raises(hydrahead.CheckpointError, match="not found"):
        hydrahead.from_pretrained(tmp_path / "nope")


def test_missing_weights(saved):
    _, path = saved
    (path / "model.safetensors").unlink()
    with pytest.raises(hydrahead.CheckpointError, match="no weights"):
        hydrahead.from_pretrained(path)


def test_truncated_weights(saved):
    """Loading fails on it, and so does eval's check of every --models directory before any is loaded."""
    from hydrahead.models.loading import check_model_dirs

    _, path = saved
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(hydrahead.CheckpointError, match="corrupt or truncated"):
        hydrahead.from_pretrained(path)
    with pytest.raises(hydrahead.CheckpointError, match="unusable: weights file .* corrupt or truncated"):
        check_model_dirs([path])


def test_garbage_weights(saved):
    _, path = saved
    (path / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(hydrahead.CheckpointError, match="corrupt"):
        hydrahead.from_pretrained(path)


def test_corrupt_config(saved):
    _, path = saved
    (path / "config.json").write_text("{not json")
    with pytest.raises(hydrahead.CheckpointError, match="config.json is corrupt"):
        hydrahead.from_pretrained(path)


@pytest.mark.parametrize("text", ['{"max_new_tokens": 5,', "[1, 2]"])
def test_a_generation_config_that_is_not_a_json_object_is_refused(saved, text):
    # transformers itself loads the model with default generation settings and logs that at the info level
    _, path = saved
    (path / "generation_config.json").write_text(text)
    for load in (hydrahead.from_pretrained, hydrahead.load_model):
        with pytest.raises(hydrahead.CheckpointError, match="generation_config.json is corrupt"):
            load(path)


@pytest.mark.parametrize("key, value, message", [
    ("hidden_size", 65, "multiple of"),  # no longer a multiple of the heads: transformers' strict validation
    ("num_hidden_layers", "four", "expected int, got str"),
    ("num_attention_heads", 0, r"a count of 0 \(of heads\?\)"),
    ("dtype", "fp16", "dtype 'fp16' is not a torch dtype"),  # an AttributeError inside transformers before
])
def test_config_transformers_rejects(tmp_path, key, value, message):
    """transformers validates a config when it builds it (loading the tokenizer builds it too): a config it refuses
    is one CheckpointError naming config.json, not a traceback from inside transformers."""
    from tests.distill.conftest import make_tokenizer

    make_teacher("llama").save_pretrained(tmp_path)
    make_tokenizer().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, key: value}))
    for load in (hydrahead.load_model, hydrahead.load_tokenizer):
        with pytest.raises(hydrahead.CheckpointError, match=f"config.json is not a valid model config: .*{message}"):
            load(tmp_path)


def test_not_a_hybrid(tmp_path):
    make_teacher("llama").save_pretrained(tmp_path)
    with pytest.raises(hydrahead.CheckpointError, match="not a hydrahead hybrid"):
        hydrahead.from_pretrained(tmp_path)


def test_a_hybrid_config_transformers_rejects_is_named_by_from_pretrained(saved):
    _, path = saved
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "dtype": "fp16"}))
    with pytest.raises(hydrahead.CheckpointError, match="config.json is not a valid model config: .*fp16"):
        hydrahead.from_pretrained(path)


def test_hybrid_config_without_plan(saved):
    _, path = saved
    config = json.loads((path / "config.json").read_text())
    del config["hydrahead"]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(hydrahead.CheckpointError, match="hydrahead"):
        hydrahead.from_pretrained(path)


# ------------------------------------------------------------------ the one loader and saver
def test_load_model_takes_teachers_and_hybrids(saved, tmp_path):
    model, path = saved
    teacher_dir = tmp_path / "teacher"
    teacher = make_teacher("qwen3")
    teacher.save_pretrained(teacher_dir)
    ids = torch.randint(0, model.config.vocab_size, (1, 9))
    loaded_teacher, loaded_hybrid = hydrahead.load_model(teacher_dir), hydrahead.load_model(path, "float32")
    assert not loaded_teacher.training and not loaded_hybrid.training
    assert not hydrahead.is_hybrid(loaded_teacher) and hydrahead.is_hybrid(loaded_hybrid)
    with torch.no_grad():
        assert torch.equal(loaded_teacher(ids).logits, teacher.eval()(ids).logits)
        assert torch.equal(loaded_hybrid(ids).logits, model.eval()(ids).logits)
    assert next(hydrahead.load_model(teacher_dir, "bfloat16").parameters()).dtype == torch.bfloat16


def test_load_model_refuses_pickles_and_bad_dtypes(tmp_path):
    make_teacher("llama").save_pretrained(tmp_path)
    with pytest.raises(hydrahead.CheckpointError, match="unknown dtype 'float8'"):
        hydrahead.load_model(tmp_path, "float8")
    (tmp_path / "model.safetensors").rename(tmp_path / "pytorch_model.bin")
    with pytest.raises(hydrahead.CheckpointError, match="safetensors only"):
        hydrahead.load_model(tmp_path)
    with pytest.raises(hydrahead.CheckpointError, match="is a file, not a model directory"):
        hydrahead.load_model(tmp_path / "config.json")


def test_devices_are_checked():
    from hydrahead.models.loading import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(hydrahead.DeviceError, match="unknown device 'banana'; this machine has: cpu"):
        resolve_device("banana")
    with pytest.raises(hydrahead.DeviceError, match="'cuda:9' is not available"):
        resolve_device("cuda:9")
    with pytest.raises(hydrahead.DeviceError, match="'cuda:9' is not available"):  # a device object: unchecked
        resolve_device(torch.device("cuda", 9))
    with pytest.raises(hydrahead.DeviceError, match="'meta' is not supported"):  # loaded a model without weights
        resolve_device(torch.device("meta"))
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("device_map", ["cuda:99", torch.device("cuda", 99), {"": "cuda:99"}, 99])
def test_a_device_map_onto_a_missing_gpu_names_the_devices(saved, device_map):
    """On a CPU build torch's `AssertionError: Torch not compiled with CUDA enabled` came out of the load."""
    with pytest.raises(hydrahead.DeviceError, match="'cuda:99' is not available; this machine has: cpu"):
        hydrahead.from_pretrained(saved[1], device_map=device_map)


def test_load_tokenizer_needs_one_that_encodes(saved):
    _, path = saved  # saved without a tokenizer
    with pytest.raises(hydrahead.CheckpointError, match="no usable tokenizer"):
        hydrahead.load_tokenizer(path)
    with pytest.raises(hydrahead.CheckpointError, match="config.json is a file: give the directory that holds the "
                                                        "tokenizer's files"):  # transformers: "Repo id must be ..."
        hydrahead.load_tokenizer(path / "config.json")


def test_save_hybrid_refuses_a_state_dict_that_is_not_the_models(saved, tmp_path):
    """An empty state wrote a checkpoint without weights and a teacher's one without the hybrid's tensors: both
    failed only when loaded."""
    model, _ = saved
    with pytest.raises(hydrahead.CheckpointError, match=r"state_dict is not this model's: \d+ tensors missing, e.g. "):
        hydrahead.save_hybrid(model, tmp_path / "outs" / "empty", state_dict={})
    teachers = make_teacher("qwen3").state_dict()
    with pytest.raises(hydrahead.CheckpointError, match="tensors missing, .* tensors the model does not have, e.g. "
                                                        r"model.layers.0.self_attn.k_norm"):
        hydrahead.save_hybrid(model, tmp_path / "outs" / "teachers", state_dict=teachers)
    assert not (tmp_path / "outs").exists()
    hydrahead.save_hybrid(model, tmp_path / "outs" / "own", state_dict=model.state_dict())


def test_save_hybrid_writes_a_complete_checkpoint(saved, tmp_path):
    from tests.distill.conftest import make_tokenizer

    model, _ = saved
    out = hydrahead.save_hybrid(model, tmp_path / "out", make_tokenizer(), dtype=torch.float16)
    assert json.loads((out / "config.json").read_text())["dtype"] == "float16"
    assert model.hydrahead_plan.summary() in (out / "README.md").read_text()
    assert len(hydrahead.load_tokenizer(out)) == len(make_tokenizer())
    again = hydrahead.load_model(out)
    assert next(again.parameters()).dtype == torch.float16 and again.hydrahead_plan == model.hydrahead_plan
    old_umask = os.umask(0o022)
    try:
        hydrahead.save_hybrid(model, out)  # an earlier checkpoint is replaced whole
    finally:
        os.umask(old_umask)
    assert not (out / "tokenizer.json").exists()
    # every file as the umask makes it, the weights too (transformers writes them through a 0600 temporary)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert modes["model.safetensors"] == 0o644 and len(set(modes.values())) == 1, modes
    assert out.stat().st_mode & 0o777 == 0o755  # the directory too (mkdtemp makes it 0700)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_save_hybrid_never_overwrites_what_is_not_a_checkpoint(saved, tmp_path):
    model, _ = saved
    (tmp_path / "file").write_text("keep me")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(hydrahead.CheckpointError, match="is a file, not a directory"):
        hydrahead.save_hybrid(model, tmp_path / "file")
    with pytest.raises(hydrahead.CheckpointError, match="holds other files"):
        hydrahead.save_hybrid(model, tmp_path / "notes")
    with pytest.raises(hydrahead.CheckpointError, match="file is a file"):
        hydrahead.save_hybrid(model, tmp_path / "file" / "sub")
    assert (tmp_path / "file").read_text() == "keep me" and (tmp_path / "notes" / "todo.txt").is_file()


def test_save_hybrid_never_replaces_an_input_or_a_directory_with_other_files(saved, tmp_path):
    from hydrahead.models.loading import check_output_dir

    model, path = saved  # `path` holds a checkpoint: config.json, weights, modeling code
    with pytest.raises(hydrahead.CheckpointError, match="directory .* is the input model directory"):
        check_output_dir(path, keep=[path])
    with pytest.raises(hydrahead.CheckpointError, match="is inside the input model directory"):
        check_output_dir(path / "hybrid", keep=[path])  # `convert --model M --out M/hybrid`
    (path / "notes.txt").write_text("mine")
    with pytest.raises(hydrahead.CheckpointError, match=r"holds other files \(notes.txt\)"):
        hydrahead.save_hybrid(model, path)
    assert (path / "notes.txt").read_text() == "mine" and (path / "config.json").is_file()


def test_save_hybrid_replaces_only_a_directory_with_a_checkpoint_in_it(saved, tmp_path):
    """README.md and manifest.json are names a checkpoint has, but without config.json and weights the
    directory is the user's, not an earlier checkpoint: refused, nothing deleted."""
    model, _ = saved
    for i, files in enumerate(({"README.md": "my notes", "manifest.json": "{}"}, {"config.json": "{}"})):
        notes = tmp_path / f"notes{i}"
        notes.mkdir()
        for name, text in files.items():
            (notes / name).write_text(text)
        with pytest.raises(hydrahead.CheckpointError, match="no earlier checkpoint .config.json and weights"):
            hydrahead.save_hybrid(model, notes)
        assert {p.name: p.read_text() for p in notes.iterdir()} == files


def test_a_hybrid_with_a_tensor_missing_does_not_load(saved):
    """transformers would initialise the missing tensor at random and only log it."""
    from safetensors.torch import load_file, save_file

    _, path = saved
    weights = load_file(path / "model.safetensors")
    weights.pop("model.layers.0.self_attn.gdn.qkv_proj.weight")
    weights["model.layers.0.self_attn.gdn.stray"] = torch.zeros(2)
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    for load in (hydrahead.load_model, hydrahead.from_pretrained):
        with pytest.raises(hydrahead.CheckpointError, match=r"missing tensor\(s\) model.layers.0.self_attn.gdn"
                                                            r".qkv_proj.weight; unexpected tensor\(s\) model.layers"
                                                            r".0.self_attn.gdn.stray"):
            load(path)


def test_a_teacher_with_a_tensor_missing_does_not_load_but_extra_tensors_are_dropped(tmp_path):
    """A teacher missing a tensor would run with it random (transformers only logs it); a tensor the class
    does not use (a checkpoint with more in it than the family's class reads) is dropped, as transformers does."""
    from safetensors.torch import load_file, save_file

    teacher = make_teacher("qwen3")
    teacher.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights["model.extra.weight"] = torch.zeros(2)
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    assert not hydrahead.is_hybrid(hydrahead.load_model(tmp_path))
    weights.pop("model.layers.1.mlp.up_proj.weight")
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(hydrahead.CheckpointError, match=r"missing tensor\(s\) model.layers.1.mlp.up_proj.weight\)"):
        hydrahead.load_model(tmp_path)


def test_tied_embeddings_are_saved_once_in_any_dtype_and_load(tmp_path):
    teacher = make_teacher("llama", tie_word_embeddings=True)
    model = hydrahead.convert(teacher, HeadPlan(((0, 1), (3,)), 4, 2)).eval()
    keys = {}
    for dtype in (None, torch.float16):
        out = hydrahead.save_hybrid(model, tmp_path / str(dtype), dtype=dtype)
        with safe_open(out / "model.safetensors", "pt") as f:
            keys[dtype] = set(f.keys())
        again, info = hydrahead.from_pretrained(out, output_loading_info=True)  # lm_head is tied, not missing
        assert not info["missing_keys"] and again.lm_head.weight is again.model.embed_tokens.weight
    assert keys[torch.float16] == keys[None] and "lm_head.weight" not in keys[None]


def test_save_hybrid_takes_dtype_names_and_refuses_what_is_not_a_float_before_writing(saved, tmp_path):
    model, _ = saved
    hydrahead.save_hybrid(model, tmp_path / "out", dtype="bfloat16")  # the names load_model takes
    assert hydrahead.load_model(tmp_path / "out").dtype == torch.bfloat16
    before = (tmp_path / "out" / "model.safetensors").read_bytes()
    for dtype, message in [(torch.int8, "floating-point dtype .* not torch.int8"), (float, "unknown dtype"),
                           ("fp16", "unknown dtype 'fp16'")]:
        with pytest.raises(hydrahead.CheckpointError, match=message):  # the good checkpoint stays
            hydrahead.save_hybrid(model, tmp_path / "out", dtype=dtype)
        assert (tmp_path / "out" / "model.safetensors").read_bytes() == before


def test_a_failed_save_leaves_the_earlier_checkpoint_and_no_temporary(saved, tmp_path):
    model, _ = saved
    out = hydrahead.save_hybrid(model, tmp_path / "out")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    model.generation_config.pad_token_id = -1  # transformers refuses to save this generation config (ValueError)
    with pytest.raises(hydrahead.CheckpointError, match=r"cannot save a checkpoint to .*out: .*pad_token_id"):
        hydrahead.save_hybrid(model, out)
    model.generation_config.pad_token_id = None

    def interrupt(_):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        hydrahead.save_hybrid(model, out, finish=interrupt)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_save_hybrid_leaves_a_users_directories_beside_the_output_alone(saved, tmp_path):
    """The temporary and the earlier checkpoint moved aside have unique names: directories of the user's beside
    the output, whatever their names, are neither used nor deleted."""
    model, _ = saved
    tmp_path = tmp_path / "outputs"
    tmp_path.mkdir()
    mine = {name: tmp_path / name for name in (".out.tmp", ".out.old")}
    for folder in mine.values():
        folder.mkdir()
        (folder / "keep.txt").write_text("mine")
    out = hydrahead.save_hybrid(model, tmp_path / "out")
    hydrahead.save_hybrid(model, out)  # an earlier checkpoint moved aside, then deleted
    assert all((folder / "keep.txt").read_text() == "mine" for folder in mine.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.old", ".out.tmp", "out"]


def test_a_tokenizer_with_several_chat_templates_saves_twice(saved, tmp_path):
    from tests.toy_tokenizer import char_tokenizer

    model, _ = saved
    tokenizer = char_tokenizer()
    tokenizer.chat_template = {"default": "{% for m in messages %}{{ m['content'] }}{% endfor %}",
                               "tool_use": "{{ messages }}"}
    out = hydrahead.save_hybrid(model, tmp_path / "out", tokenizer)
    assert (out / "additional_chat_templates").is_dir()
    hydrahead.save_hybrid(model, out, tokenizer)  # an earlier checkpoint, chat templates folder and all
    assert set(hydrahead.load_tokenizer(out).chat_template) == {"default", "tool_use"}
    (out / "additional_chat_templates" / "notes.txt").write_text("mine")
    with pytest.raises(hydrahead.CheckpointError, match=r"holds other files \(additional_chat_templates\)"):
        hydrahead.save_hybrid(model, out, tokenizer)


def test_transformers_load_report_is_shown_when_a_teacher_loads_and_held_back_when_it_is_refused(tmp_path):
    """A teacher may hold tensors its class does not use: the model loads and transformers' report says so. A
    refusal is one line (the table it would print before is held back)."""
    import logging

    teacher = make_teacher("qwen3")
    teacher.save_pretrained(tmp_path / "t")
    config = json.loads((tmp_path / "t" / "config.json").read_text())
    fewer = {**config, "num_hidden_layers": 1, "layer_types": config["layer_types"][:1]}
    (tmp_path / "t" / "config.json").write_text(json.dumps(fewer))
    seen = []
    handler = logging.Handler()
    handler.emit = seen.append
    logging.getLogger("transformers").addHandler(handler)
    try:
        assert hydrahead.load_model(tmp_path / "t").config.num_hidden_layers == 1
        shown = [r for r in seen if "LOAD REPORT" in r.getMessage()]
        assert shown and "UNEXPECTED" in shown[0].getMessage()
        seen.clear()
        (tmp_path / "t" / "config.json").write_text(json.dumps({**config, "hidden_size": 2 * config["hidden_size"]}))
        with pytest.raises(hydrahead.CheckpointError, match="tensor shapes differ from config.json"):
            hydrahead.load_model(tmp_path / "t")
        assert not [r for r in seen if "LOAD REPORT" in r.getMessage()]
    finally:
        logging.getLogger("transformers").removeHandler(handler)


def test_a_damaged_tokenizer_file_is_one_line(saved, tmp_path):
    """The tokenizers library raises a bare Exception for a damaged tokenizer.json (a truncated download): it was
    a traceback in every command."""
    from tests.eval.conftest import bpe_tokenizer

    _, path = saved
    bpe_tokenizer().save_pretrained(path)
    (path / "tokenizer.json").write_text('{"added_tokens": [], "model": {"type": "WordLevel", "vocab": 5}}')
    with pytest.raises(hydrahead.CheckpointError, match="no usable tokenizer in"):
        hydrahead.load_tokenizer(path)


def test_a_quantized_checkpoint_is_refused_in_one_line(saved, tmp_path):
    """Its package missing, transformers' ImportError was a traceback; installed, conversion met packed weights."""
    teacher = tmp_path / "teacher"
    make_teacher("qwen3").save_pretrained(teacher)
    config = json.loads((teacher / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (teacher / "config.json").write_text(json.dumps(config))
    with pytest.raises(hydrahead.UnsupportedModelError, match=r"is quantized \(bitsandbytes\): conversion copies"):
        hydrahead.load_model(teacher, supported=True)
    with pytest.raises(hydrahead.CheckpointError, match="could not load the model in"):
        hydrahead.load_model(teacher)  # for generate: bitsandbytes is not installed here
    model = make_teacher("qwen3")
    model.config.quantization_config = {"quant_method": "gptq"}
    with pytest.raises(hydrahead.UnsupportedModelError, match=r"is quantized \(gptq\)"):
        hydrahead.convert(model, HeadPlan(((0,), (1,)), 4, 2))


def test_a_weight_index_naming_no_file_is_corrupt(saved):
    _, path = saved
    (path / "model.safetensors").unlink()
    (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"lm_head.weight": None}}))
    with pytest.raises(hydrahead.CheckpointError, match="model.safetensors.index.json is corrupt"):
        hydrahead.load_model(path)  # a TypeError in `path / None`


def test_a_symlinked_output_is_saved_where_it_points_and_a_mount_point_is_refused(saved, tmp_path, monkeypatch):
    """The rename that puts a checkpoint in place failed on a link (EISDIR) or a mount point (EBUSY), after the
    work that made the model."""
    model, _ = saved
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    assert hydrahead.save_hybrid(model, tmp_path / "link") == real
    assert (real / "config.json").is_file() and (tmp_path / "link").is_symlink()
    hydrahead.save_hybrid(model, tmp_path / "link")  # an earlier checkpoint there, replaced
    monkeypatch.setattr(os.path, "ismount", lambda p: str(p) == str(tmp_path / "mounted"))
    with pytest.raises(hydrahead.CheckpointError, match="is a mount point, which a new checkpoint cannot be renamed"):
        hydrahead.save_hybrid(model, tmp_path / "mounted")


def test_save_hybrid_syncs_the_new_checkpoint_before_it_replaces_the_old(saved, tmp_path, monkeypatch):
    """Renamed into place and the old one deleted without an fsync, a crash could leave neither on disk."""
    model, _ = saved
    hydrahead.save_hybrid(model, tmp_path / "out")
    synced, real = [], os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd))[1])
    hydrahead.save_hybrid(model, tmp_path / "out")
    assert any(p.endswith("model.safetensors") and ".tmp" in p for p in synced)  # the new weights, before the rename
    assert str(tmp_path) in synced  # the directory holding the renames
