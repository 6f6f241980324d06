"""A tiny Llama and its tokenizer written as a GGUF file the way llama.cpp's `convert_hf_to_gguf.py` writes one
(F32 tensors, llama.cpp's tensor names and q/k row order, a byte-level BPE vocabulary): what the GGUF tests
load back, so that no download is needed.

    model, tokenizer = write_tiny_gguf(tmp_path / "tiny.gguf")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from tests.conftest import make_teacher

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
SENTENCES = (
    "The grass is green. The sky is blue and the sun is bright.",
    "A quick brown fox jumps over the lazy dog, then sleeps in the shade.",
    "Paris is the capital of France; Rome is the capital of Italy.",
    "Numbers like 42 and 7 appear in stories about old friends.",
)
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# HF parameter (in layer i) -> llama.cpp tensor name (in block i)
LAYER_TENSORS = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
}


def byte_bpe_tokenizer(vocab_size: int = 97) -> PreTrainedTokenizerFast:
    """A GPT-2 style byte-level BPE trained on a few sentences (only the characters they use, so it stays
    under 100 ids), with ChatML special tokens and the chat template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(SENTENCES, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS),
                                                           show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIALS[1], eos_token=SPECIALS[2],
                                   chat_template=CHAT_TEMPLATE)


def add_tokenizer(writer: Any, tokenizer: PreTrainedTokenizerFast, add_bos: bool | None,
                  token_list: bool = True) -> None:
    """The tokenizer's metadata, as llama.cpp writes a byte-level BPE's (`token_list=False`: all but the list of
    tokens, a damaged file's)."""
    import gguf

    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = sorted(backend["model"]["vocab"].items(), key=lambda item: item[1])
    assert [i for _, i in vocab] == list(range(len(vocab)))
    writer.add_tokenizer_model("gpt2")
    if token_list:
        writer.add_token_list([token for token, _ in vocab])
    writer.add_token_types([gguf.TokenType.CONTROL if token in SPECIALS else gguf.TokenType.NORMAL
                            for token, _ in vocab])
    writer.add_token_merges([" ".join(pair) for pair in backend["model"]["merges"]])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.eos_token_id)  # as SmolLM2's file: padding with <|im_end|>
    if add_bos is not None:
        writer.add_add_bos_token(add_bos)
    writer.add_chat_template(tokenizer.chat_template)


def permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's q/k row order (`LlamaModel.permute` in convert_hf_to_gguf.py): within each head, the
    rotary halves interleaved. (out, in) -> (out, in)."""
    rows = weight.shape[0] // heads // 2
    return weight.reshape(heads, 2, rows, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def write_gguf(path: str | Path, model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast,
               add_bos: bool | None = None, rope_scaling: str | None = None, rope_freqs: bool = False,
               counts: dict[str, int] | None = None, tokenizer_metadata: str = "all") -> Path:
    """`model` (a LlamaForCausalLM without attention bias) and `tokenizer` (byte-level BPE) as an F32 GGUF;
    `add_bos`: the file says whether its tokenizer puts BOS before every text (None: it says nothing);
    `rope_scaling` (a llama.cpp scaling type, factor 4) and `rope_freqs` (Llama 3.1's frequency factors tensor):
    what the model itself does not do, for the loader's refusal. `counts` states other values than the model's
    for embedding_length, block_count, head_count or head_count_kv, and `tokenizer_metadata` ("all", "no token
    list", "none") leaves the tokenizer's metadata out, in part or whole: a damaged file's metadata."""
    import gguf

    config, path = model.config, Path(path)
    counts = {"embedding_length": config.hidden_size, "block_count": config.num_hidden_layers,
              "head_count": config.num_attention_heads, "head_count_kv": config.num_key_value_heads,
              **(counts or {})}
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(counts["embedding_length"])
    writer.add_block_count(counts["block_count"])
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(counts["head_count"])
    writer.add_head_count_kv(counts["head_count_kv"])
    writer.add_rope_dimension_count(config.head_dim)  # transformers reads it as head_dim
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    if rope_scaling is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType(rope_scaling))
        writer.add_rope_scaling_factor(4.0)

    if tokenizer_metadata != "none":
        add_tokenizer(writer, tokenizer, add_bos, token_list=tokenizer_metadata != "no token list")

    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    for i in range(config.num_hidden_layers):
        for hf_name, gguf_name in LAYER_TENSORS.items():
            weight = state[f"model.layers.{i}.{hf_name}.weight"]
            if gguf_name == "attn_q":
                weight = permute(weight, config.num_attention_heads)
            elif gguf_name == "attn_k":
                weight = permute(weight, config.num_key_value_heads)
            writer.add_tensor(f"blk.{i}.{gguf_name}.weight", weight)
    if rope_freqs:
        writer.add_tensor("rope_freqs.weight", np.ones(config.head_dim // 2, dtype=np.float32))
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    if not config.tie_word_embeddings:  # llama.cpp leaves `output` out when it is the embedding
        writer.add_tensor("output.weight", state["lm_head.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_tiny_gguf(path: str | Path, tie_word_embeddings: bool = False,
                    seed: int = 0, **config: Any) -> tuple[torch.nn.Module, PreTrainedTokenizerFast]:
    """A tiny random Llama (conftest's shape unless `config` says otherwise; no attention bias: llama.cpp's llama
    has none) with a byte-level BPE, written to `path` as GGUF; returns the model and tokenizer written."""
    tokenizer = byte_bpe_tokenizer()
    model = make_teacher("llama", seed=seed, attention_bias=False, vocab_size=len(tokenizer),
                         tie_word_embeddings=tie_word_embeddings,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **config)
    write_gguf(path, model, tokenizer)
    return model, tokenizer
