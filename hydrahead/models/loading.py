"""Loading and saving models, in one place: teachers and hybrids, their tokenizers, and the checks before.

  read_config(path)                     config.json as a dict (or the config a .gguf file states)
  load_model(path, dtype=, device=)     a teacher (any transformers causal LM) or a hydrahead hybrid, eval mode
  from_pretrained(path, **kwargs)       a hybrid only (`hydrahead.from_pretrained`)
  load_tokenizer(path)                  the tokenizer saved with a model, checked to encode text
  save_hybrid(model, path, ...)         checkpoint + tokenizer + plan summary; the directory is complete or absent
  resolve_device(name)                  "auto", "cpu", "cuda", "cuda:1" -> torch.device, checked

A checkpoint is a normal transformers directory (config.json + safetensors). It is checked before it is
handed to transformers, so that a missing file, a truncated download or the wrong kind of directory gives
a `CheckpointError` saying which, rather than a deep stack trace. Weights are read from safetensors only:
nothing a user hands us is unpickled.

A llama.cpp GGUF file (or a directory holding one and no config.json) is taken wherever a model directory
is: these functions hand it to gguf.py, which reads it through transformers' GGUF loader into an ordinary
(dequantised) transformers model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.errors import StrictDataclassError

from hydrahead.errors import CheckpointError, DeviceError, HydraHeadError, OutputError, one_line
from hydrahead.models.families import family_of_config
from hydrahead.models.files import check_files, config_json, find_gguf, is_gguf_file, locate
from hydrahead.models.gguf import gguf_config, load_gguf_model, load_gguf_tokenizer
from hydrahead.models.hybrid import HYBRID_CLASSES, is_hybrid
from hydrahead.models.shape import check_counts
from hydrahead.utils.io import check_output, new_file_mode, outputs_apart

MODEL_CARD = "README.md"
DTYPES = ("auto", "float32", "bfloat16", "float16")
# what transformers raises for a config it rejects (huggingface_hub's strict dataclasses validate configs, e.g.
# a hidden_size that is not a multiple of the heads, and raise StrictDataclassError, not a ValueError)
CONFIG_ERRORS = (ValueError, TypeError, StrictDataclassError, ArithmeticError)  # ZeroDivisionError: 0 heads


def read_config(path: str | Path) -> dict[str, Any]:
    """config.json of a model directory (or the config a GGUF file states, see `find_gguf`), or
    CheckpointError naming what is missing or corrupt."""
    gguf = locate(path)
    return gguf_config(gguf) if gguf is not None else config_json(path)


def check_config(path: str | Path) -> None:
    """CheckpointError naming config.json when transformers refuses it (a count that is not an integer, zero
    heads, a hidden size the heads do not divide): what AutoConfig checks, before anything else reads it."""
    from transformers import AutoConfig

    config = config_json(path)
    for key in ("dtype", "torch_dtype"):  # transformers looks the name up on torch: an AttributeError otherwise
        if isinstance(config.get(key), str) and config[key] != "auto" and not isinstance(
                getattr(torch, config[key], None), torch.dtype):
            raise CheckpointError(f"{Path(path) / 'config.json'} is not a valid model config: {key} "
                                  f"{config[key]!r} is not a torch dtype (float32, bfloat16, float16)")
    try:
        AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, KeyError, *CONFIG_ERRORS) as err:
        raise invalid_config(path, err) from err
    try:
        check_counts(config)
    except HydraHeadError as err:
        raise invalid_config(path, err) from None


def invalid_config(path: str | Path, err: Exception) -> CheckpointError:
    detail = "a count of 0 (of heads?)" if isinstance(err, ZeroDivisionError) else one_line(err)[:200]
    return CheckpointError(f"{Path(path) / 'config.json'} is not a valid model config: {detail}")


def hybrid_model_types() -> list[str]:
    return sorted(config_class.model_type for config_class, _ in HYBRID_CLASSES.values())


def torch_dtype(dtype: str | torch.dtype) -> str | torch.dtype:
    """"auto" or a torch dtype from its name; CheckpointError for anything else."""
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if dtype not in DTYPES:
        raise CheckpointError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return getattr(torch, dtype)


def inference_dtype(dtype: str, device: torch.device) -> str:
    """What "auto" means where a model only runs (generate, serve): float32 on the CPU, where a checkpoint saved
    in half precision would run slowly and round more, and the checkpoint's own dtype on a GPU; another name as
    given, once checked (CheckpointError)."""
    torch_dtype(dtype)
    return "float32" if dtype == "auto" and device.type == "cpu" else dtype


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """A torch device from "auto" (CUDA when there is one, else CPU), "cpu", "cuda", "cuda:N"; DeviceError
    naming the devices this machine has when the name is wrong or the device is absent."""
    if isinstance(name, torch.device):
        name = str(name)  # checked as its name is: torch.device("cuda") on a CPU build, or "meta"
    available = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise DeviceError(f"unknown device {name!r}; this machine has: {', '.join(available)}") from err
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise DeviceError(f"device {name!r} is not available; this machine has: {', '.join(available)}")
    if device.type not in ("cpu", "cuda"):
        raise DeviceError(f"device {name!r} is not supported; this machine has: {', '.join(available)}")
    return device


def load_model(path: str | Path, dtype: str | torch.dtype = "auto", device: str | torch.device = "cpu",
               supported: bool = False) -> Any:
    """A hydrahead hybrid (by its config's model_type) or a plain transformers causal LM (from a directory or
    a GGUF file), in eval mode on `device` ("auto" picks CUDA when there is one). CheckpointError names what
    is wrong with the directory; with `supported`, UnsupportedModelError when it is not a family hydrahead
    converts (before any weights are read: what scoring, conversion and distillation need)."""
    path = Path(path)
    config = read_config(path)
    if supported:
        family_of_config(config, str(path))
    target = resolve_device(device)
    if (gguf := find_gguf(path)) is not None:  # its header was read with the config
        return load_gguf_model(gguf, torch_dtype(dtype)).to(target).eval()
    check_config(path)
    check_files(path)
    if config.get("model_type") in hybrid_model_types():
        model = _hybrid(path, config, dtype=torch_dtype(dtype))
    else:
        from transformers import AutoModelForCausalLM

        model, _ = _checked(AutoModelForCausalLM, path, ("missing_keys",), dtype=torch_dtype(dtype),
                            use_safetensors=True)
    return model.to(target).eval()


def from_pretrained(path: str | Path, **kwargs: Any):
    """Load a hybrid model saved with `save_pretrained`; keyword arguments go to transformers' `from_pretrained`."""
    path = Path(path)
    config = read_config(path)
    if config.get("model_type") not in hybrid_model_types():
        raise CheckpointError(
            f"{path} holds a {config.get('model_type')!r} model, not a hydrahead hybrid "
            f"(expected one of {hybrid_model_types()}); convert it first with `hydrahead convert`"
        )
    check_config(path)
    check_files(path)
    _check_device_map(kwargs.get("device_map"))
    return _hybrid(path, config, **kwargs)


def _check_device_map(device_map: Any) -> None:
    """DeviceError naming this machine's devices when a `device_map` places weights on a CUDA device it lacks
    (torch's assertion, or a load error blamed on the checkpoint, came otherwise). Accelerate's strategies
    ("auto", "balanced", ...) and other devices are left to transformers."""
    for value in device_map.values() if isinstance(device_map, dict) else [device_map]:
        if isinstance(value, int) and not isinstance(value, bool):
            value = f"cuda:{value}"  # accelerate's convention: an integer is a GPU index
        if isinstance(value, (str, torch.device)) and str(value).startswith("cuda"):
            resolve_device(str(value))


def _hybrid(path: Path, config: dict[str, Any], **kwargs: Any):
    """The hybrid in `path`, every parameter from its weights, and no tensor it does not have (`_checked`)."""
    model_class = {c.model_type: m for c, m in HYBRID_CLASSES.values()}[config["model_type"]]
    wants_info = kwargs.pop("output_loading_info", False)
    model, info = _checked(model_class, path, ("missing_keys", "unexpected_keys"), **kwargs)
    return (model, info) if wants_info else model


def _checked(model_class: Any, path: Path, refused: Sequence[str], errors: tuple[type[BaseException], ...] = (),
             **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """`model_class.from_pretrained(path)` (a directory, or a .gguf file) and its loading info; CheckpointError
    when transformers fails (or raises one of `errors`), or when the loading info lists tensors of a kind in
    `refused`: transformers only logs a tensor the checkpoint lacks and leaves it randomly initialised (a model
    that runs and answers garbage). A teacher may hold tensors its class does not use (they are dropped); a
    hybrid holds exactly its own. Tied weights and the renames of older layouts are already resolved in the
    loading info. transformers' load report (a table logged as a warning) is shown only when the model loads:
    a refusal is the one line that says why."""
    where = {"gguf_file": path.name} if is_gguf_file(path) else {}
    with _held_load_report() as report:
        try:
            model, info = model_class.from_pretrained(str(path.parent if where else path), output_loading_info=True,
                                                      **where, **kwargs)
        except ArithmeticError as err:  # a config whose checks pass but whose model cannot be built (zero heads)
            raise (CheckpointError(f"{path} is not a readable GGUF model: {one_line(err)}") if where
                   else invalid_config(path, err)) from err
        except (OSError, RuntimeError, KeyError, ImportError, *CONFIG_ERRORS, *errors) as err:  # ImportError: a
            detail = _mismatch(report)  # quantized checkpoint whose package (bitsandbytes, ...) is not installed
            report.shown = detail is None  # the table is the detail transformers' message points at
            raise CheckpointError(f"could not load the model in {path}: {detail or one_line(err)}") from err
        what = {"missing_keys": "missing tensor(s)", "unexpected_keys": "unexpected tensor(s)"}
        wrong = [f"{what[key]} {_some(info[key])}" for key in refused if info.get(key)]
        if wrong:
            report.shown = False  # the line names the tensors
            advice = ("its metadata and its tensors disagree: the file is damaged or was written wrongly" if where
                      else "the weights are incomplete or from another model; save the checkpoint again "
                           "(save_hybrid or save_pretrained)")
            raise CheckpointError(f"{path} does not match its config ({'; '.join(wrong)}): {advice}")
    return model, info


class _Held(list):
    """Log records held back; `shown`: handed to their handlers when the block ends (the default)."""

    shown = True


@contextlib.contextmanager
def _held_load_report():
    """The records transformers' loading logs inside the block (its load report among them), held back from their
    handlers until it ends, then shown unless the block set `shown` to False (a refusal whose one line says what
    the report would)."""
    loggers = [logging.getLogger(f"transformers.{name}") for name in ("modeling_utils", "utils.loading_report")]
    held = _Held()

    class Hold(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            held.append(record)

    handler, propagate = Hold(), [logger.propagate for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.propagate = False
    try:
        yield held
    finally:
        for logger, before in zip(loggers, propagate):
            logger.removeHandler(handler)
            logger.propagate = before
        if held.shown:
            for record in held:
                logging.getLogger(record.name).handle(record)


def _mismatch(report: list[logging.LogRecord]) -> str | None:
    """What a held load report says of tensors whose shapes differ from the config (transformers then raises,
    pointing at the report), in words; None when it says nothing of them."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(record.getMessage() for record in report))
    found = re.findall(r"^([^|\n]+?)\s*\|\s*MISMATCH\s*\|.*?ckpt:\s*torch\.Size\((\[[^\]]*\])\)\s*vs model:\s*"
                       r"torch\.Size\((\[[^\]]*\])\)", text, re.MULTILINE)
    if not found:
        return None
    (name, stored, expected), more = found[0], f", and {len(found) - 1} more" if len(found) > 1 else ""
    return (f"tensor shapes differ from config.json ({name}: {stored} in the weights, {expected} by the config"
            f"{more}): the config or the weights were edited, or come from another model")


def _some(names: Any, shown: int = 4) -> str:
    names = sorted(names)
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


_SAVE_ONE = "save the tokenizer next to the weights (`hydrahead convert` copies the teacher's)"


def load_tokenizer(path: str | Path) -> Any:
    """The tokenizer saved in a model directory (or a GGUF file), or CheckpointError when there is none that
    encodes text."""
    if not Path(path).exists():  # transformers would take the name for a Hub repository and try to download it
        raise CheckpointError(f"tokenizer directory not found: {path}")
    if (gguf := find_gguf(path)) is None and Path(path).is_file():  # transformers: "Repo id must be in the form"
        raise CheckpointError(f"{path} is a file: give the directory that holds the tokenizer's files")
    if gguf is not None:
        tokenizer = load_gguf_tokenizer(gguf)
    else:
        from transformers import AutoTokenizer

        if (Path(path) / "config.json").is_file():  # AutoTokenizer builds the config: its errors are the config's
            check_config(path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except Exception as err:  # the tokenizers library raises a bare Exception for a damaged tokenizer.json,
            # sentencepiece a RuntimeError for a damaged tokenizer.model (a truncated download, say)
            raise CheckpointError(f"no usable tokenizer in {path}: {one_line(err)[:200]}; {_SAVE_ONE}") from err
    # transformers builds an empty tokenizer from config.json alone when no tokenizer files are there
    if len(tokenizer) < 2 or not tokenizer("The grass is green.", add_special_tokens=False)["input_ids"]:
        raise CheckpointError(f"no usable tokenizer in {path} (it encodes text to nothing); {_SAVE_ONE}")
    return tokenizer


def check_vocabulary(tokenizer: Any, config: Any, tokenizer_path: str | Path | None,
                     error: type[HydraHeadError] = CheckpointError) -> None:
    """`error` when the tokenizer can give ids the model has no embedding for (another model's tokenizer)."""
    vocab = config.get("vocab_size") if isinstance(config, dict) else getattr(config, "vocab_size", None)
    if isinstance(vocab, int) and len(tokenizer) > vocab:
        which = f"the tokenizer of {tokenizer_path}" if tokenizer_path else "the tokenizer"
        raise error(f"{which} has {len(tokenizer)} tokens but the model only {vocab}: give the model's own tokenizer")


def check_model_dirs(paths: list[str | Path] | tuple[str | Path, ...]) -> None:
    """Check several model directories (or GGUF files) before any is loaded (config, weights, tokenizer), so
    that a typo in the third path fails at once rather than after hours spent on the first two. One
    CheckpointError names every directory that is unusable."""
    if not paths:
        raise CheckpointError("no model directories given")
    bad = []
    for path in paths:
        try:
            read_config(path)  # a GGUF file's header with it
            if find_gguf(path) is None:
                check_files(Path(path))  # every safetensors header opens, the generation config parses
        except CheckpointError as err:
            bad.append(str(err))
    if bad:
        raise CheckpointError(f"model director{'ies' if len(bad) > 1 else 'y'} unusable: {'; '.join(bad)}")
    for path in paths:
        load_tokenizer(path)


_CHECKPOINT_FILE = re.compile(
    r"(config|generation_config|tokenizer|tokenizer_config|special_tokens_map|added_tokens|vocab|chat_template)"
    r"\.(json|txt|jinja)|merges\.txt|tokenizer\.model|README\.md|modeling_hydrahead\.py|hydrahead_\w+\.py|"
    r"model(-\d+-of-\d+)?\.safetensors|model\.safetensors\.index\.json|demo_teacher_manifest\.json|manifest\.json")
_WEIGHTS_FILE = re.compile(r"model(-\d+-of-\d+)?\.safetensors|model\.safetensors\.index\.json")
# folders a checkpoint has, with the files in them (a tokenizer with several chat templates writes the others here)
_CHECKPOINT_FOLDER = {"additional_chat_templates": re.compile(r"[^/]+\.jinja")}


def _checkpoint_entry(entry: Path) -> bool:
    if entry.is_file():
        return _CHECKPOINT_FILE.fullmatch(entry.name) is not None
    files = _CHECKPOINT_FOLDER.get(entry.name)
    return (files is not None and entry.is_dir() and not entry.is_symlink()
            and all(p.is_file() and files.fullmatch(p.name) for p in entry.iterdir()))


def check_output_dir(path: str | Path, keep: Sequence[str | Path] = (), hybrid: bool = False) -> Path:
    """A directory a checkpoint may be written to: absent, empty, or an earlier checkpoint (which is
    replaced): a config.json and weights, and nothing but the files a checkpoint has; with `hybrid`, an
    earlier hybrid only (a hybrid never replaces a teacher). Anything else, and any directory in `keep` (the
    model being converted), is refused before any work starts: nothing a user keeps is deleted."""
    path = Path(path)
    if path.is_symlink():  # saved where it points: the rename that puts a checkpoint in place would replace the link
        path = path.resolve()
    if os.path.ismount(path):
        raise CheckpointError(f"cannot save a checkpoint to {path}: it is a mount point, which a new checkpoint "
                              "cannot be renamed onto; give a new directory inside it")
    if path.is_dir() and not os.access(path.parent, os.W_OK | os.X_OK):
        raise CheckpointError(f"cannot save a checkpoint to {path}: its parent directory {path.parent} is not "
                              "writable, and a checkpoint is written beside the directory and renamed into place; "
                              "give a directory inside one you can write to")
    try:  # a file in the way, a parent that is a file, no permission: the one check every output gets; and the
        # input model itself or a directory inside it (`convert --model M --out M/hybrid`), as every command's
        check_output(path, "directory")
        outputs_apart({"the checkpoint directory": path}, {"input model": list(keep)})
    except OutputError as err:
        raise CheckpointError(f"cannot save a checkpoint: {err}") from err
    if path.is_dir() and (entries := list(path.iterdir())):
        names = sorted(p.name for p in entries)
        foreign = [p.name for p in entries if not _checkpoint_entry(p)]
        if foreign:
            raise CheckpointError(f"cannot save a checkpoint to {path}: the directory holds other files "
                                  f"({_some(foreign, 3)}), not only an earlier checkpoint; "
                                  "choose a new or empty directory")
        if "config.json" not in names or not any(_WEIGHTS_FILE.fullmatch(name) for name in names):
            raise CheckpointError(f"cannot save a checkpoint to {path}: the directory holds other files "
                                  f"({_some(names, 3)}) and no earlier checkpoint (config.json and weights) to "
                                  "replace; choose a new or empty directory")
        if hybrid:
            try:
                earlier = json.loads((path / "config.json").read_text())
            except (OSError, ValueError):
                earlier = None
            if not isinstance(earlier, dict) or "hydrahead" not in earlier:
                raise CheckpointError(f"cannot save a hybrid to {path}: it holds a model that is not a hydrahead "
                                      "hybrid (a teacher?), which a hybrid never replaces; choose a new or empty "
                                      "directory")
    return path


def _sync(directory: Path, files: bool = True) -> None:
    """fsync every file in `directory` (with `files`) and the directory itself (its entries)."""
    for entry in (directory.iterdir() if files else ()):
        if entry.is_file():
            with open(entry, "rb") as f:
                os.fsync(f.fileno())
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def save_hybrid(model: Any, path: str | Path, tokenizer: Any = None, *, dtype: torch.dtype | str | None = None,
                state_dict: dict[str, torch.Tensor] | None = None,
                finish: Callable[[Path], None] | None = None) -> Path:
    """Save a model (a hybrid, or any transformers model) as a transformers checkpoint directory: weights
    (in `dtype`, default the model's), config, the tokenizer, and for a hybrid a model card with its plan
    and (its save_pretrained writes it) the modeling code `trust_remote_code=True` loads.

    Written into a temporary sibling and renamed, so `path` is the complete checkpoint or the old one.
    `state_dict` replaces the model's own (a gathered FSDP state, say); `finish(tmp_dir)` may add files
    (a manifest) before the rename. `dtype`: a torch dtype or its name ("auto": the model's)."""
    if dtype is not None:  # checked before anything is written: an integer dtype would store truncated weights
        dtype = torch_dtype(dtype)
        if dtype == "auto":
            dtype = None
        elif not dtype.is_floating_point:
            raise CheckpointError(f"weights are saved in a floating-point dtype ({', '.join(DTYPES[1:])}), not {dtype}")
    path = check_output_dir(Path(path).absolute(), hybrid=is_hybrid(model))
    state = model.state_dict()
    if state_dict is not None:  # a gathered state must be the model's whole state: a checkpoint that fails to load
        missing, extra = sorted(state.keys() - state_dict.keys()), sorted(state_dict.keys() - state.keys())
        if missing or extra:
            raise CheckpointError(
                "state_dict is not this model's: " + "; ".join(
                    f"{len(names)} tensors {what}, e.g. {names[0]}"
                    for what, names in (("missing", missing), ("the model does not have", extra)) if names))
        state = state_dict
    if dtype is not None:
        state = _cast(state, dtype)
    tmp = old = None
    moved_aside = False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # siblings of unique names (never a fixed name that a user's own directory might have)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        model.save_pretrained(tmp, state_dict=state)
        if dtype is not None:  # save_pretrained records the model's dtype, not the stored one
            config = json.loads((tmp / "config.json").read_text())
            config["dtype"] = str(dtype).removeprefix("torch.")
            (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if is_hybrid(model):
            (tmp / MODEL_CARD).write_text(_model_card(model))
        if finish is not None:
            finish(tmp)
        mode = new_file_mode()  # transformers writes the weights through a private (0600) temporary file
        for file in tmp.iterdir():
            if file.is_file():
                file.chmod(mode)
        tmp.chmod(new_file_mode(directory=True))  # mkdtemp's is 0700: others could not read the checkpoint
        _sync(tmp)  # on disk before it replaces anything: a crash then leaves the old checkpoint or the new one
        if path.exists():  # the earlier checkpoint stays whole until the new one is in place
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            path.rename(old)  # onto the empty directory just made: rename replaces it
            moved_aside = True
        tmp.rename(path)
        _sync(path.parent, files=False)  # the renames themselves, before the earlier checkpoint is deleted
    except HydraHeadError:
        raise
    except OSError as err:
        raise CheckpointError(f"cannot save a checkpoint to {path}: {err}") from err
    except Exception as err:  # transformers' checks on save (a generation config it rejects, say), a tokenizer's
        raise CheckpointError(f"cannot save a checkpoint to {path}: {type(err).__name__}: {one_line(err)}") from err
    finally:  # also on Ctrl-C: no temporary left behind, and the earlier checkpoint back if it was moved aside
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if moved_aside and not path.exists():
            old.rename(path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return path


def _cast(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Floating-point tensors in `dtype`, each storage cast once: tensors that shared one (tied embeddings)
    share the cast, so save_pretrained still sees them as tied and writes one copy."""
    cast: dict[tuple, torch.Tensor] = {}
    out = {}
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            out[name] = tensor
            continue
        key = (tensor.device, tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
               tensor.stride(), tensor.dtype)
        if key not in cast:
            cast[key] = tensor.to(dtype)
        out[name] = cast[key]
    return out


def _model_card(model: Any) -> str:
    plan = model.hydrahead_plan
    return (f"# hydrahead hybrid ({model.config.model_type})\n\n"
            "A head-level hybrid written by hydrahead: softmax attention for the heads below, Gated DeltaNet\n"
            "for every other head.\n\n"
            "```python\nimport hydrahead\nmodel = hydrahead.from_pretrained(\"path/to/this/directory\")\n```\n\n"
            f"## Plan\n\n```\n{plan.summary()}\n```\n\n"
            f"## Options\n\n```json\n{json.dumps(model.hydrahead_options.to_dict(), indent=1, sort_keys=True)}\n```\n")


__all__ = ["check_model_dirs", "check_output_dir", "from_pretrained", "load_model", "load_tokenizer", "read_config",
           "resolve_device", "save_hybrid"]
