"""A saved hybrid carries its modeling code: `trust_remote_code=True` loads it in a process that never
imports hydrahead (the bundled copy), and uses the installed package where there is one."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hydrahead
from hydrahead import HeadPlan, HybridOptions
from tests.conftest import FAMILIES, make_teacher
from tests.models.old_layout import write_old_layout

BLOCK = r"""
import json, sys
import torch

class Block:  # as if hydrahead were not installed
    def find_spec(self, name, path=None, target=None):
        if name == "hydrahead" or name.startswith("hydrahead."):
            raise ImportError(f"no module named {name!r}")

if sys.argv[2] == "blocked":
    sys.meta_path.insert(0, Block())
from transformers import AutoModelForCausalLM
"""
LOADER = BLOCK + r"""

out = {}
for directory in json.loads(sys.argv[1]):
    model = AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=True).eval()
    ids = torch.load(f"{directory}/ids.pt")
    with torch.no_grad():
        logits = model(ids).logits
        tokens = model.generate(ids, max_new_tokens=4, do_sample=False)
    out[directory] = {"module": type(model).__module__, "class": type(model).__name__,
                      "diff": (logits - torch.load(f"{directory}/logits.pt")).abs().max().item(),
                      "same_tokens": torch.equal(tokens, torch.load(f"{directory}/tokens.pt"))}
out["imported_hydrahead"] = any(m == "hydrahead" or m.startswith("hydrahead.") for m in sys.modules)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote")
    dirs = []
    for family in FAMILIES:
        model = hydrahead.convert(make_teacher(family), HeadPlan(((0,), (1, 3)), 4, 2),
                                  HybridOptions.preset("paper", train_length=16)).eval()
        directory = root / family
        model.save_pretrained(directory)
        ids = torch.randint(0, model.config.vocab_size, (2, 11))
        again = hydrahead.from_pretrained(directory).eval()
        with torch.no_grad():
            torch.save(again(ids).logits, directory / "logits.pt")
            torch.save(again.generate(ids, max_new_tokens=4, do_sample=False), directory / "tokens.pt")
        torch.save(ids, directory / "ids.pt")
        dirs.append(str(directory))
        # the same model in hydrahead 0.1's layout (separate q/k/v, a/b projections) loads the same
        dirs.append(str(write_old_layout(model, directory, root / f"{family}-0.1")))
    return dirs


def load_elsewhere(dirs, mode):
    proc = subprocess.run([sys.executable, "-c", LOADER, json.dumps(dirs), mode], capture_output=True, text=True,
                          timeout=300, cwd="/")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_checkpoints_load_without_hydrahead(saved):
    out = load_elsewhere(saved, "blocked")
    assert out.pop("imported_hydrahead") is False
    for directory, result in out.items():
        family = Path(directory).name  # "-0.1": the old layout
        assert result["module"].startswith("transformers_modules.") and result["class"].startswith("HydraHead"), family
        assert result["diff"] <= 1e-6 and result["same_tokens"], (family, result)


def test_with_hydrahead_installed_its_own_classes_are_used(saved):
    out = load_elsewhere(saved[:1], "installed")
    assert out[saved[0]]["module"] == "hydrahead.models.hybrid" and out[saved[0]]["diff"] == 0.0


def test_config_names_the_code_and_the_copy_imports_nothing_of_hydrahead(saved):
    directory = Path(saved[0])
    config = json.loads((directory / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_hydrahead.HydraHeadQwen3ForCausalLM"
    for file in directory.glob("hydrahead_*.py"):
        for line in file.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("from hydrahead", "import hydrahead")):
                assert "remote_code" in stripped, (file.name, line)  # only the guarded re-save hook


def test_only_the_rank_transformers_saves_on_writes_the_code(tmp_path, monkeypatch):
    """Under torch.distributed, transformers writes a checkpoint from rank 0 only (should_save_on_this_rank),
    whatever `is_main_process` says; the modeling code follows the same decision."""
    import transformers.distributed.mixin as mixin

    model = hydrahead.convert(make_teacher("qwen3"), HeadPlan(((0,), (3,)), 4, 2))
    monkeypatch.setattr(mixin, "_is_torch_distributed_initialized", lambda: True)
    monkeypatch.setattr(mixin, "_get_torch_distributed_rank", lambda: 1)
    model.save_pretrained(tmp_path / "rank1")
    assert not list((tmp_path / "rank1").glob("*.py"))
    monkeypatch.setattr(mixin, "_get_torch_distributed_rank", lambda: 0)
    model.save_pretrained(tmp_path / "rank0", False)  # is_main_process=False, positionally
    assert not list((tmp_path / "rank0").glob("*.py"))
    model.save_pretrained(tmp_path / "rank0")
    assert (tmp_path / "rank0" / "modeling_hydrahead.py").is_file()


@pytest.mark.parametrize("how", ["save_pretrained", "push_to_hub"])
def test_an_upload_to_the_hub_carries_the_code(tmp_path, monkeypatch, how):
    """transformers uploads inside save_pretrained(push_to_hub=True), before it returns; what reaches the Hub
    must already hold the modeling code and config.json's auto_map (the Hub is stood in for: no network)."""
    import transformers.modeling_utils as modeling_utils
    from transformers.utils.hub import PushToHubMixin

    class Api:
        def create_repo(self, repo_id, **kwargs):
            return type("Repo", (), {"repo_id": repo_id})()

    class Card:
        def save(self, path):
            Path(path).write_text("card\n")

    uploaded = {}

    def upload(self, working_dir, repo_id, files_timestamps, **kwargs):
        uploaded.update({f.name: f.read_bytes() for f in Path(working_dir).iterdir() if f.is_file()
                         and f.name not in files_timestamps})

    monkeypatch.setattr(modeling_utils, "hf_api", lambda: Api())
    monkeypatch.setattr(modeling_utils, "create_and_tag_model_card", lambda *a, **k: Card())
    monkeypatch.setattr("transformers.utils.hub.hf_api", lambda: Api())
    monkeypatch.setattr("transformers.utils.hub.create_and_tag_model_card", lambda *a, **k: Card())
    monkeypatch.setattr(PushToHubMixin, "_upload_modified_files", upload)
    model = hydrahead.convert(make_teacher("qwen3"), HeadPlan(((0,), (3,)), 4, 2))
    if how == "save_pretrained":
        model.save_pretrained(tmp_path / "hybrid", push_to_hub=True, repo_id="me/hybrid")
    else:
        model.push_to_hub("me/hybrid")
    assert "modeling_hydrahead.py" in uploaded and "model.safetensors" in uploaded
    assert "auto_map" in json.loads(uploaded["config.json"])
    if how == "push_to_hub":  # under torch.distributed, on a process transformers does not save on: no code
        uploaded.clear()
        model.should_save_on_this_rank = lambda is_main_process: False
        model.push_to_hub("me/hybrid")
        assert "modeling_hydrahead.py" not in uploaded


RESAVER = BLOCK + r"""
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True)
if sys.argv[2] == "blocked":
    model.save_pretrained(sys.argv[3])
else:  # installed, imported after the load: its save, twice into one directory
    import hydrahead
    hydrahead.save_hybrid(model, sys.argv[3])
    hydrahead.save_hybrid(model, sys.argv[3])
"""


@pytest.mark.parametrize("mode", ["blocked", "installed"])
def test_a_hybrid_loaded_with_remote_code_saves_a_checkpoint_that_loads_again(saved, tmp_path, mode):
    """transformers registers a class loaded with trust_remote_code for auto-class saving, and then copied the
    file defining it into every later save: with hydrahead installed a stray hybrid.py (which the next save into
    that directory refused as a foreign file); without it, an auto_map naming the copy's internals and no entry."""
    again = tmp_path / "again"
    proc = subprocess.run([sys.executable, "-c", RESAVER, saved[0], mode, str(again)], capture_output=True,
                          text=True, timeout=300, cwd="/")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (again / "hybrid.py").exists()
    config = json.loads((again / "config.json").read_text())
    assert config["auto_map"] == {"AutoConfig": "modeling_hydrahead.HydraHeadQwen3Config",
                                  "AutoModelForCausalLM": "modeling_hydrahead.HydraHeadQwen3ForCausalLM"}
    for name in ("ids.pt", "logits.pt", "tokens.pt"):
        (again / name).write_bytes((Path(saved[0]) / name).read_bytes())
    out = load_elsewhere([str(again)], "blocked")
    assert out[str(again)]["diff"] <= 1e-6 and out[str(again)]["same_tokens"]
    assert load_elsewhere([str(again)], "installed")[str(again)]["module"] == "hydrahead.models.hybrid"
