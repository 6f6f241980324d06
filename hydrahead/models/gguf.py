"""GGUF in: a llama.cpp model file wherever hydrahead takes a model directory, and its export to safetensors.

  find_gguf(path)                   the .gguf file `path` names (the file, or the only one in a directory), else None
  gguf_config(file)                 the transformers config the file's metadata states, as a config.json dict
  load_gguf_model(file, dtype)      the model, dequantised into an ordinary transformers model
  load_gguf_tokenizer(file)         the tokenizer stored in the file's metadata
  export_gguf(src, out, dtype=)     the model and tokenizer written as an ordinary safetensors checkpoint

Everything goes through transformers' own GGUF loader (`from_pretrained(dir, gguf_file=name)`), which
undoes llama.cpp's tensor names and q/k row order and dequantises every tensor. `read_config`, `load_model`,
`load_tokenizer` and `check_model_dirs` (loading.py) call these for a .gguf path, so every `--model` takes
one; the model math never knows the checkpoint was a GGUF. Reading one needs the `gguf` extra (the `gguf`
package, and `accelerate`, which transformers requires for GGUF), imported only when a .gguf is given.
"""

from __future__ import annotations

import copy
import importlib.util
import struct
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.errors import StrictDataclassError

from hydrahead.errors import CheckpointError, GgufNotInstalledError, HydraHeadError, one_line
from hydrahead.models.files import find_gguf
from hydrahead.models.shape import check_counts

# packages transformers needs to read a GGUF (the `gguf` extra in pyproject.toml)
REQUIRED = ("gguf", "accelerate")
# what transformers and the GGUF readers raise for a file they cannot read or a config they reject
# (ZeroDivisionError: a head count of 0)
LOAD_ERRORS = (OSError, RuntimeError, KeyError, IndexError, ValueError, TypeError, struct.error, StrictDataclassError,
               ArithmeticError)


def require_gguf() -> None:
    """GgufNotInstalledError, in one line naming the extra, when a package GGUF reading needs is missing."""
    missing = [name for name in REQUIRED if importlib.util.find_spec(name) is None]
    if missing:
        raise GgufNotInstalledError(f"reading a .gguf model needs the {' and '.join(missing)} package"
                                    f"{'s' if len(missing) > 1 else ''}: pip install 'hydrahead[gguf]'")


def gguf_config(file: Path) -> dict[str, Any]:
    """The config a GGUF file states (its metadata under transformers' names), as a config.json dict. Reads
    the header and tensor table only, so it is the cheap check before any weights are loaded: a truncated
    or foreign file gives a CheckpointError here."""
    require_gguf()
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(file.parent), gguf_file=file.name).to_dict()
        scaling = rope_scaling(file)
    except LOAD_ERRORS as err:
        raise CheckpointError(f"{file} is not a readable GGUF model: {one_line(err)}") from err
    if scaling:
        raise CheckpointError(f"{file} scales its RoPE ({scaling}), which transformers' GGUF loader drops: the "
                              "model would run with plain RoPE, another model than the file's; load the original "
                              "safetensors checkpoint instead")
    try:
        check_counts(config)
    except HydraHeadError as err:
        raise CheckpointError(f"{file} states an impossible model: {err}") from None
    return config


def rope_scaling(file: Path) -> str | None:
    """The RoPE scaling a GGUF file states (its `<arch>.rope.scaling.*` type other than none, or a `rope_freqs`
    tensor: Llama 3.1's frequency factors), or None. transformers 5.17 maps only `rope.freq_base` for the Llama,
    Mistral and Qwen files (it rebuilds scaling for gpt-oss alone)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(file))
    kind = next((f for name, f in reader.fields.items() if name.endswith(".rope.scaling.type")), None)
    if kind is not None and str(kind.contents()).lower() not in ("none", ""):
        factor = next((f.contents() for name, f in reader.fields.items() if name.endswith(".rope.scaling.factor")),
                      None)
        return f"type {kind.contents()}" + (f", factor {factor:g}" if isinstance(factor, (int, float)) else "")
    if any(tensor.name == "rope_freqs.weight" for tensor in reader.tensors):
        return "a rope_freqs tensor of per-frequency factors"
    return None


def load_gguf_model(file: Path, dtype: str | torch.dtype = "auto") -> Any:
    """The causal LM in a GGUF file, every tensor dequantised to `dtype` ("auto": float32 for the Llama,
    Mistral and Qwen files transformers dequantises on load). It is an ordinary transformers model: no
    quantizer, no `quantization_config`, so save_pretrained, conversion and training treat it like one
    loaded from safetensors."""
    require_gguf()
    from transformers import AutoModelForCausalLM, GgufConfig

    from hydrahead.models.loading import _checked  # imports us

    # dequantize=True is transformers' own way to a dense model: it drops the quantizer and the
    # quantization_config once the weights are in (else save_pretrained refuses the model). A tensor the file
    # lacks (a block_count above its blocks) is refused, not left random.
    model, _ = _checked(AutoModelForCausalLM, file, ("missing_keys",), LOAD_ERRORS, dtype=dtype,
                        quantization_config=GgufConfig(dequantize=True))
    # transformers puts the file's tensors in as they are: a metadata count that disagrees with them (an
    # embedding_length above the tensors' width) gives a model whose config is not its weights
    try:
        with torch.device("meta"):
            stated = type(model)(copy.deepcopy(model.config)).state_dict()
    except Exception:  # noqa: BLE001 - a class that cannot be built on the meta device: not checked
        return model
    for name, tensor in model.state_dict().items():
        if name in stated and tensor.shape != stated[name].shape:
            raise CheckpointError(f"{file} does not match its own metadata: {name} is {list(tensor.shape)} in the "
                                  f"file, {list(stated[name].shape)} by the model its metadata states")
    return model


def load_gguf_tokenizer(file: Path) -> Any:
    """The tokenizer (vocabulary, merges, special tokens, chat template) stored in a GGUF file's metadata."""
    require_gguf()
    from transformers import AutoTokenizer
    from transformers.integrations.gguf import read_gguf_metadata

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
        metadata, _ = read_gguf_metadata(str(file))
    except (*LOAD_ERRORS, AttributeError) as err:  # AttributeError: a file without the tokenizer's metadata
        gguf_config(file)  # a file that is not a whole GGUF at all is named as that, not as a bad tokenizer
        raise CheckpointError(f"no usable tokenizer in {file}: {one_line(err)}") from err
    # transformers 5.17's llama converter names the BOS token as EOS too (GGUFLlamaConverter.tokenizer), leaves
    # out the padding token (document-packed distillation needs one), and marks the tokenizer for a clean-up
    # step it then refuses for BPE (with a warning): set the special tokens from the file
    for name, key in (("bos", "bos"), ("eos", "eos"), ("pad", "padding")):
        token_id = metadata.get(f"tokenizer.ggml.{key}_token_id")
        if token_id is not None:
            setattr(tokenizer, f"{name}_token", tokenizer.convert_ids_to_tokens(token_id))
    # ... and ignores whether the file's tokenizer adds BOS / EOS to every text (Llama 3 and Mistral files do)
    for name in ("bos", "eos"):
        if f"tokenizer.ggml.add_{name}_token" in metadata:
            setattr(tokenizer, f"add_{name}_token", bool(metadata[f"tokenizer.ggml.add_{name}_token"]))
    tokenizer.clean_up_tokenization_spaces = False
    return tokenizer


def export_gguf(src: str | Path, out: str | Path, dtype: str | torch.dtype | None = None) -> Path:
    """Write the model and tokenizer of a GGUF file (`src`: the file, or a directory holding one) as an ordinary
    transformers checkpoint in `out`: safetensors weights in `dtype` (default float32, what dequantising gives),
    config.json, tokenizer and chat template. `out` is checked before any work and is complete or absent."""
    from hydrahead.models.loading import check_output_dir, load_model, load_tokenizer, save_hybrid  # imports us

    src = Path(src)
    if find_gguf(src) is None:
        raise CheckpointError(f"{src} is not a .gguf file or a directory holding one")
    out = check_output_dir(out, keep=[src])
    model = load_model(src, dtype or "auto")  # reads the config first: the check that the file is whole
    return save_hybrid(model, out, load_tokenizer(src))


__all__ = ["export_gguf", "find_gguf", "gguf_config", "load_gguf_model", "load_gguf_tokenizer"]
