"""Hybrid model classes: each family's own transformers causal-LM class with `HybridAttention` in every layer.

`HydraHeadQwen3ForCausalLM` *is a* `Qwen3ForCausalLM` (same embeddings, MLPs, norms, head, generation
code); only `self_attn` differs. Its config is the teacher's config plus one `hydrahead` entry holding
the plan and the options, with model_type `hydrahead_<family>`, registered with the Auto classes when
`hydrahead` is imported, so `save_pretrained` / `AutoModelForCausalLM.from_pretrained` work as usual.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, StaticCache
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import Concatenate, WeightConverter
from transformers.generation import GenerationMode

from hydrahead.errors import CacheError, CheckpointError, GenerationError
from hydrahead.layers.context import ForwardContext, packed_documents
from hydrahead.layers.hybrid_attention import HybridAttention
from hydrahead.cache import NO_ROLLBACK, HybridHeadCache, HybridHeadStaticLayer
from hydrahead.models.families import FAMILIES, Family
from hydrahead.models.shape import head_dim
from hydrahead.options import HybridOptions
from hydrahead.plan import HeadPlan
from hydrahead.utils.memory import piece_sizes


def plan_and_options(config: Any) -> tuple[HeadPlan, HybridOptions]:
    spec = getattr(config, "hydrahead", None)
    if not isinstance(spec, dict) or "plan" not in spec or "options" not in spec:
        raise CheckpointError(
            f"config of model_type {getattr(config, 'model_type', '?')!r} has no valid 'hydrahead' entry "
            "(plan and options); was it written by hydrahead?"
        )
    return HeadPlan.from_dict(spec["plan"]), HybridOptions.from_dict(spec["options"])


# A forward of one token through a cache is a decode step: its token is taken as real in every row, so that a step
# needs no host sync to read the mask (hydrahead.layers.gdn). Padding must come in forwards of two or more tokens.
ONE_TOKEN_STEPS = ("prefill_chunk_size=1 with a padded batch is not supported: a hydrahead model takes the token of a "
                   "one-token forward as real in every row (a decode step); use prefill_chunk_size=2 or more")

CONTINUOUS_BATCHING = (
    "continuous batching (a paged KV cache) is not supported for hydrahead models: a GDN head's recurrent state "
    "has no paged form; use generate() or serve without --continuous-batching (requests then run one at a time)")


class HybridCausalLMMixin:
    """Shared behaviour of every hybrid causal-LM class (mixed in before the family's class)."""

    family: Family

    def __init__(self, config) -> None:
        super().__init__(config)
        plan, options = plan_and_options(config)
        plan.validate(config)
        if getattr(config, "head_dim", None) is None:
            config.head_dim = head_dim(config)
        for i, layer in enumerate(self.model.layers):
            layer.self_attn = HybridAttention(
                config, i, plan.fa_heads[i], plan.fa_kv_heads[i], options,
                qkv_bias=self.family.qkv_bias(config), o_bias=self.family.o_bias(config),
                qk_norm=self.family.qk_norm, sliding_window=self.family.sliding_window(config, i),
            )
        self.hydrahead_plan, self.hydrahead_options = plan, options
        # the widest activation per token, for CPU inference pieces: the MLP's, or a branch's fused q | k | v
        self.widest_activation = max(config.intermediate_size, config.hidden_size, *(
            branch.qkv_proj.out_features for layer in self.model.layers
            for branch in (layer.self_attn.fa, layer.self_attn.gdn) if branch is not None))
        # what the shapes of a cache's K/V, states and conv windows depend on (`HybridHeadCache.filled_by`)
        self.cache_signature = (plan.fa_heads, plan.num_heads, plan.num_kv_heads, config.head_dim,
                                options.conv_size, options.gdn_shared_kv)

    def save_pretrained(self, save_directory, is_main_process: bool = True, *args, **kwargs):
        """transformers' save_pretrained, plus the modeling code that `trust_remote_code=True` loads
        without hydrahead (models/remote_code.py) and its `auto_map` in config.json, written by the rank that
        transformers lets write the checkpoint. Always in the current layout: transformers would otherwise
        "revert" the fused projections into the old names (splitting them into equal parts, which they are not)."""
        kwargs["save_original_format"] = False
        super().save_pretrained(save_directory, is_main_process, *args, **kwargs)
        if self.should_save_on_this_rank(is_main_process):
            self._add_remote_code(save_directory)

    def _upload_modified_files(self, working_dir, *args, **kwargs):
        """transformers' upload to the Hub (`push_to_hub`, `save_pretrained(push_to_hub=True)`), with the remote
        code and `auto_map` written first: `save_pretrained` uploads before it returns, so without this a pushed
        hybrid would lack the code that loads it without hydrahead."""
        # only where transformers saved the checkpoint (`push_to_hub` called on every process under
        # torch.distributed saves config.json on one of them)
        if (Path(working_dir) / "config.json").is_file():
            self._add_remote_code(working_dir)
        return super()._upload_modified_files(working_dir, *args, **kwargs)

    def _add_remote_code(self, directory) -> None:
        try:
            from hydrahead.models.remote_code import add_remote_code
        except ImportError:  # running from a checkpoint's bundled copy (no hydrahead here): its files are ours
            _copy_bundled_code(Path(directory), self)
            return
        add_remote_code(directory, self)

    # position_ids and logits_to_keep must stay named parameters: generate() only derives padding-aware
    # positions, and asks a prefill for the last position's logits only, for models whose forward() declares them.
    # inputs_embeds is named too: generate() takes it only from a model whose forward and
    # prepare_inputs_for_generation declare it.
    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, use_cache=None,
                linear_attention_mask=None, logits_to_keep=0, inputs_embeds=None, **kwargs):
        if inputs_embeds is not None:
            kwargs["inputs_embeds"] = inputs_embeds
        use_cache = self.config.use_cache if use_cache is None else use_cache
        compiling = torch.compiler.is_compiling()  # the host-side checks below are skipped in a compiled step
        if past_key_values is not None and not isinstance(past_key_values, HybridHeadCache):
            raise CacheError(foreign_cache(past_key_values))
        if past_key_values is not None and len(past_key_values.layers) != self.config.num_hidden_layers:
            raise CacheError(f"the cache has {len(past_key_values.layers)} layers and the model "
                             f"{self.config.num_hidden_layers}: build it from this model's config")
        if past_key_values is not None and not compiling:
            if past_key_values.filled_by not in (None, self.cache_signature):
                raise CacheError("the cache holds the states of a hybrid with another plan or head shape: give each "
                                 "model its own HybridHeadCache (a dynamic one may be reset() first)")
        inputs = input_ids if input_ids is not None else kwargs.get("inputs_embeds")
        if past_key_values is not None and inputs is not None:
            if (held := past_key_values.batch_size) not in (-1, inputs.shape[0]):
                raise CacheError(f"the cache holds {held} sequences and this forward gives {inputs.shape[0]}: a cache "
                                 "continues the batch it was filled with; give a new HybridHeadCache for another batch")
        if inputs is not None and isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2 \
                and not compiling:
            check_padding_mask(attention_mask, inputs.shape[:2], past_key_values)
        if attention_mask is not None and not (isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2) \
                and linear_attention_mask is None and not compiling:  # the FA heads would follow it (a 4D tensor, or
            shape = (tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor)  # a per-layer-type dict)
                     else type(attention_mask).__name__)  # and the GDN heads take every token as real
            raise GenerationError(
                f"attention_mask has shape {shape}: a hybrid's GDN heads read padding from a "
                "2D mask (B, past + T), which a 4D mask does not give them (nor a pattern other than causal: "
                "packed documents are told by position_ids); pass the 2D mask, or it as linear_attention_mask "
                "beside the 4D one")
        kwargs["logits_to_keep"] = logits_to_keep
        pieces = inference_piece(self, inputs, attention_mask, position_ids, past_key_values, use_cache, kwargs)
        if pieces is not None:
            return self._forward_in_pieces(pieces, input_ids, attention_mask, position_ids, past_key_values,
                                           use_cache, linear_attention_mask, kwargs)
        if use_cache and past_key_values is None:
            past_key_values = HybridHeadCache(self.config)
        if past_key_values is not None and not compiling:
            past_key_values.filled_by = self.cache_signature  # its states are this model's from now on
        if linear_attention_mask is None and isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2:
            linear_attention_mask = attention_mask  # (B, past + T): the GDN branch reads its last T columns
        kwargs.setdefault("hydrahead_context", ForwardContext())  # worked out once, shared by every layer
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=use_cache,
            linear_attention_mask=linear_attention_mask,
            **kwargs,
        )

    def _forward_in_pieces(self, pieces, input_ids, attention_mask, position_ids, past_key_values, use_cache,
                           linear_attention_mask, kwargs):
        """`forward` over a long prompt as consecutive forwards of `pieces` tokens through the cache (as
        transformers' chunked prefill runs them; see `inference_piece`): the outputs of one forward, up to
        rounding, with piece-sized temporaries. Logits (those `logits_to_keep` keeps), hidden states and the
        loss are put together from the pieces; the cache is returned when `use_cache` asked for it."""
        cache = past_key_values if past_key_values is not None else HybridHeadCache(self.config)
        kwargs.pop("hydrahead_context", None)  # each piece works out its own
        return_dict = kwargs.pop("return_dict", None)
        return_dict = self.config.return_dict if return_dict is None else return_dict
        embeds, keep = kwargs.pop("inputs_embeds", None), kwargs.pop("logits_to_keep", 0)
        labels, cache_position = kwargs.pop("labels", None), kwargs.pop("cache_position", None)
        T = (input_ids if input_ids is not None else embeds).shape[1]
        keep = T if keep == 0 else min(keep, T)

        def upto(mask, end):  # a 2D mask's columns (past + T) up to this piece's end
            return mask[:, : mask.shape[1] - T + end] if mask is not None else None

        logits = hidden = out = None
        for start, end in zip(itertools.accumulate([0] + pieces[:-1]), itertools.accumulate(pieces)):
            kept = max(0, end - max(start, T - keep))  # this piece's share of the last `keep` tokens
            out = self.forward(
                input_ids=input_ids[:, start:end] if input_ids is not None else None,
                inputs_embeds=embeds[:, start:end] if embeds is not None else None,
                attention_mask=upto(attention_mask, end), linear_attention_mask=upto(linear_attention_mask, end),
                position_ids=position_ids[..., start:end] if position_ids is not None else None,
                cache_position=cache_position[start:end] if cache_position is not None else None,
                past_key_values=cache, use_cache=True,
                logits_to_keep=kept if kept else torch.empty(0, dtype=torch.long), return_dict=True, **kwargs)
            if logits is None:  # the outputs of one forward, filled piece by piece (no second copy)
                logits = out.logits.new_empty(out.logits.shape[0], keep, out.logits.shape[-1])
                if out.hidden_states is not None:
                    hidden = tuple(h.new_empty(h.shape[0], T, *h.shape[2:]) for h in out.hidden_states)
            if kept:
                logits[:, end - kept - (T - keep) : end - (T - keep)] = out.logits
            for whole, h in zip(hidden or (), out.hidden_states or ()):
                whole[:, start:end] = h
        loss = None
        if labels is not None:
            loss_kwargs = {k: kwargs[k] for k in ("num_items_in_batch", "ignore_index", "shift_labels") if k in kwargs}
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **loss_kwargs)
        out = type(out)(loss=loss, logits=logits, past_key_values=cache if use_cache else None, hidden_states=hidden)
        return out if return_dict else out.to_tuple()

    def generate(self, *args, **kwargs):
        """transformers' generate; on CUDA, by default, on the static cache, whose fixed addresses let
        transformers compile the decode step and replay it as a CUDA graph (its auto-compile: a plain eager
        step launches every small kernel from Python). Passing a cache, `cache_implementation`, or
        `disable_compile=True` keeps the caller's choice; beam search and assisted decoding stay dynamic. That
        static cache is sized for this call: to continue a generation through `out.past_key_values`, generate
        with `cache_implementation="dynamic"` (or pass a static HybridHeadCache with room). (On the CPU a long
        prompt's prefill runs in pieces inside `forward`, see `inference_piece`.)"""
        if graph_decode_applies(self, kwargs):
            kwargs["cache_implementation"] = "static"
        config = generation_config_of(self, kwargs)
        mask = kwargs.get("attention_mask")
        if kwargs.get("prefill_chunk_size", getattr(config, "prefill_chunk_size", None)) == 1 \
                and isinstance(mask, torch.Tensor) and not bool(mask.all()):
            raise CacheError(ONE_TOKEN_STEPS)
        return super().generate(*args, **kwargs)

    # Continuous batching keeps every request's K/V in one paged cache; a GDN head's state is a fixed-size matrix
    # per sequence that has no paged form. Refused, never run on a cache that would compute something else.
    # Without `init_continuous_batching` (hasattr is False), `transformers serve --continuous-batching` falls
    # back to sequential generation with its own warning.
    @property
    def init_continuous_batching(self):
        raise AttributeError(CONTINUOUS_BATCHING)

    def generate_batch(self, *args, **kwargs):
        """Refused: see CONTINUOUS_BATCHING (also what `generate(cache_implementation="paged")` calls)."""
        raise CacheError(CONTINUOUS_BATCHING)

    def continuous_batching_context_manager(self, *args, **kwargs):
        raise CacheError(CONTINUOUS_BATCHING)

    def _validate_generation_mode(self, generation_mode, generation_config, generation_mode_kwargs):
        """As transformers', and refuses assisted decoding (an assistant model, prompt lookup, MTP) and serving as
        another model's assistant before anything runs: both roll the cache back after rejected draft tokens, which
        a hybrid cache cannot (NO_ROLLBACK; its `crop` refuses too, the last line of defence)."""
        super()._validate_generation_mode(generation_mode, generation_config, generation_mode_kwargs)
        if generation_mode == GenerationMode.ASSISTED_GENERATION or generation_config.is_assistant:
            raise CacheError(NO_ROLLBACK)

    def _static_cache(self, max_cache_len: int) -> HybridHeadCache:
        if has_sliding_window(self):
            raise CacheError("the static hybrid cache does not support sliding-window attention yet; "
                             "use the dynamic cache (the default)")
        return HybridHeadCache(self.config, max_cache_len=max_cache_len, device=self.device)

    def _prepare_cache_for_generation(self, generation_config, model_kwargs, generation_mode, batch_size,
                                      max_cache_length):
        """As transformers', with a HybridHeadCache where it would build a DynamicCache (so no transformers cache
        ever reaches `forward`), the static one through `_prepare_static_cache`; a cache the caller passes must be
        a HybridHeadCache, and the offloaded and quantized caches, which have no hybrid form, are refused."""
        user_cache = model_kwargs.get("past_key_values")
        if user_cache is not None and not isinstance(user_cache, HybridHeadCache):
            raise CacheError(foreign_cache(user_cache))
        implementation = generation_config.cache_implementation
        if user_cache is None and generation_config.use_cache is not False and implementation in (
                None, "dynamic", "offloaded", "quantized"):
            if implementation in ("offloaded", "quantized"):
                raise CacheError(f"cache_implementation={implementation!r} is not supported for hydrahead models (a "
                                 "GDN head's recurrent state has no such form); use 'dynamic' (the CPU's default) or "
                                 "'static'")
            model_kwargs["past_key_values"] = HybridHeadCache(self.config)
            return
        super()._prepare_cache_for_generation(generation_config, model_kwargs, generation_mode, batch_size,
                                              max_cache_length)

    def _prepare_static_cache(self, cache_implementation, batch_size, max_cache_len, prefill_chunk_size,
                              model_kwargs):
        """generate(..., cache_implementation="static") gets a static HybridHeadCache (same sizing rule)."""
        if "offloaded" in cache_implementation:
            raise CacheError("an offloaded static cache is not supported for hydrahead models; use 'static'")
        length = max(max_cache_len, getattr(self, "_previous_max_cache_length", -1))
        self._previous_max_cache_length = length
        return self._static_cache(length)

    def prepare_inputs_for_generation(self, input_ids, *args, attention_mask=None, inputs_embeds=None, **kwargs):
        """As transformers', plus the 2D padding mask of the current tokens for the GDN branch: with a
        static cache transformers turns `attention_mask` into a 4D FA mask, which has lost it."""
        inputs = super().prepare_inputs_for_generation(input_ids, *args, attention_mask=attention_mask,
                                                       inputs_embeds=inputs_embeds, **kwargs)
        if isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2:
            T = inputs["input_ids"].shape[1] if inputs.get("input_ids") is not None else inputs["inputs_embeds"].shape[1]
            inputs["linear_attention_mask"] = attention_mask[:, -T:].clone(memory_format=torch.contiguous_format)
        return inputs


def foreign_cache(cache) -> str:
    """The message for a transformers cache handed to a hybrid: refused, empty or not, in `forward` and `generate`.
    A hybrid cannot compute in it, and a substitute would leave the caller's object empty, so a loop that passes
    the same object again would restart from position 0 without a word."""
    static = "hydrahead.HybridHeadCache(model.config, max_cache_len=N) for a static one, " \
        if isinstance(cache, StaticCache) else ""
    return (f"a hydrahead model keeps its FA K/V and GDN states in a HybridHeadCache, not a {type(cache).__name__}: "
            f"pass past_key_values=hydrahead.HybridHeadCache(model.config), {static}or None (one is made and "
            "returned as outputs.past_key_values)")


def generation_config_of(model, kwargs: dict):
    """The generation config that `generate(**kwargs)` starts from: the one passed, else the model's."""
    return kwargs["generation_config"] if kwargs.get("generation_config") is not None else model.generation_config


def graph_decode_applies(model, kwargs: dict) -> bool:
    """Whether `generate(**kwargs)` on `model` defaults to the static cache (and so to compiled decode)."""
    config = generation_config_of(model, kwargs)
    if model.device.type != "cuda" or kwargs.get("past_key_values") is not None:
        return False
    if kwargs.get("cache_implementation") is not None or getattr(config, "cache_implementation", None) is not None:
        return False
    if kwargs.get("disable_compile", getattr(config, "disable_compile", False)):
        return False
    # greedy or sampled decoding on a cache: no beams, no assistant model or prompt lookup, use_cache on
    if (kwargs.get("num_beams") or getattr(config, "num_beams", 1) or 1) > 1:
        return False
    if kwargs.get("use_cache", getattr(config, "use_cache", True)) is False:
        return False
    if kwargs.get("assistant_model") is not None or kwargs.get("prompt_lookup_num_tokens") is not None:
        return False
    return not has_sliding_window(model)


def check_padding_mask(mask: torch.Tensor, batch_tokens: torch.Size, cache: HybridHeadCache | None) -> None:
    """A 2D attention mask has a row per sequence and a column per cached and input token (the GDN heads read its
    last columns as the input's padding), or GenerationError. The cached count is checked where the host knows it
    without a sync: always for a dynamic cache; for a static one, unless compiled steps have run since it last
    counted (then only the rows). Not while compiling: a count read there would be a guard."""
    (B, T), (rows, columns) = batch_tokens, mask.shape
    layer = cache.layers[0] if cache is not None else None
    if isinstance(layer, HybridHeadStaticLayer):
        past = None if layer.tokens_stale else layer.tokens
    else:
        past = 0 if layer is None else layer.get_seq_length()
    if rows != B or (isinstance(past, int) and columns != past + T):
        needs = f"({B}, {past} + {T})" if isinstance(past, int) else f"{B} rows"
        raise GenerationError(f"attention_mask has shape {tuple(mask.shape)}; this forward needs {needs}: a row per "
                              "sequence, a column per cached token, then one per input token")


def has_sliding_window(model) -> bool:
    """Whether any layer of a hybrid attends within a sliding window (no static cache, no comparison of its cache
    with the teacher's full-length K/V)."""
    return any(model.family.sliding_window(model.config, i) for i in range(model.config.num_hidden_layers))


def inference_piece(model, x, attention_mask, position_ids, past_key_values, use_cache,
                    kwargs: dict) -> list[int] | None:
    """The pieces' token counts when `model.forward` runs a long input in pieces, else None (one forward).

    On the CPU, in inference (no autograd), an input longer than one piece runs as forwards of one piece each
    through the cache, each piece's largest temporary (B x piece x the widest activation: the MLP's, or a
    branch's fused q | k | v, `widest_activation`) within
    `utils.memory.PIECE_BYTES`, so that glibc serves it from its heap, reused, instead of a fresh mapping whose
    pages fault in on first write (a cost larger than the arithmetic on the project machine: a 16K prefill of
    a Qwen3-1.7B-shaped hybrid 26-27 s in pieces, 30-34 s in one forward; docs/benchmarks.md). `generate`'s prefill
    gets it through `forward`. Pieces need a cache, so `use_cache=False` builds one and drops it. One forward
    instead: another device, autograd on, while compiling, attention weights asked for, a mask other than a 2D
    tensor (4D, or the per-layer-type dict transformers builds for a static cache), `logits_to_keep` given as
    indices (or with labels), packed rows (position_ids restarting, without a cache or a mask: the GDN heads
    restart per document only in one forward)."""
    if x is None or x.device.type != "cpu" or model.device.type != "cpu" or torch.is_grad_enabled() \
            or torch.compiler.is_compiling():
        return None
    B, T = x.shape[:2]
    pieces = piece_sizes(B * model.widest_activation * model.dtype.itemsize, T)
    if len(pieces) == 1 or kwargs.get("output_attentions"):
        return None
    keep = kwargs.get("logits_to_keep", 0)
    if not isinstance(keep, int) or (keep and kwargs.get("labels") is not None):
        return None
    if attention_mask is not None and not (isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2):
        return None
    if not use_cache and attention_mask is None and packed_documents(position_ids, B, T) is not None:
        return None
    return pieces


# Checkpoints written before the projections were fused (hydrahead 0.1) load into the fused layout: each
# branch's separate q/k/v rows concatenated in that order, and the GDN branch's a and b rows.
FUSED_PROJECTIONS = [
    WeightConverter([f"self_attn.{branch}.{p}_proj.{kind}" for p in "qkv"], f"self_attn.{branch}.qkv_proj.{kind}",
                    operations=[Concatenate(dim=0)])
    for branch in ("fa", "gdn") for kind in ("weight", "bias")
] + [WeightConverter(["self_attn.gdn.a_proj.weight", "self_attn.gdn.b_proj.weight"], "self_attn.gdn.ab_proj.weight",
                     operations=[Concatenate(dim=0)])]


REMOTE_CODE_ENTRY = "modeling_hydrahead"  # the module config.json's auto_map names (models/remote_code.py)


def _copy_bundled_code(directory: Path, model) -> None:
    """In a checkpoint's bundled copy (loaded with trust_remote_code where hydrahead is not installed): the copy's
    files, beside this module, into the checkpoint `model` was saved to, and the auto_map that names its entry."""
    import json
    import shutil

    here = Path(__file__).parent
    for file in [here / f"{REMOTE_CODE_ENTRY}.py", *here.glob("hydrahead_*.py")]:
        if file.is_file():
            shutil.copyfile(file, directory / file.name)
    config_file = directory / "config.json"
    config = json.loads(config_file.read_text())
    config["auto_map"] = {"AutoConfig": f"{REMOTE_CODE_ENTRY}.{type(model.config).__name__}",
                          "AutoModelForCausalLM": f"{REMOTE_CODE_ENTRY}.{type(model).__name__}"}
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _not_registered(cls, auto_class: str = "") -> None:
    """`register_for_auto_class`, a no-op for the hybrid classes: transformers calls it on a class loaded with
    trust_remote_code, and every later save in the process then copied the file that defines the class (a stray
    hybrid.py, which a later save refused as a foreign file; without hydrahead, an auto_map naming the copy's
    internals instead of its entry). A hybrid's save writes its code and auto_map itself (`_add_remote_code`)."""


def _make_classes(family: Family) -> tuple[type, type]:
    name = family.causal_lm_class.__name__.replace("ForCausalLM", "")
    config_class = type(
        f"HydraHead{name}Config",
        (family.config_class,),
        {"model_type": f"hydrahead_{family.key}", "__module__": __name__,
         "register_for_auto_class": classmethod(_not_registered)},
    )
    model_class = type(
        f"HydraHead{name}ForCausalLM",
        (HybridCausalLMMixin, family.causal_lm_class),
        {"config_class": config_class, "family": family, "__module__": __name__,
         "_no_split_modules": getattr(family.causal_lm_class, "_no_split_modules", None),
         "register_for_auto_class": classmethod(_not_registered)},
    )
    return config_class, model_class


HYBRID_CLASSES: dict[str, tuple[type, type]] = {key: _make_classes(f) for key, f in FAMILIES.items()}
# Module-level names, so the classes pickle and can be imported by name.
HydraHeadQwen3Config, HydraHeadQwen3ForCausalLM = HYBRID_CLASSES["qwen3"]
HydraHeadQwen2Config, HydraHeadQwen2ForCausalLM = HYBRID_CLASSES["qwen2"]
HydraHeadLlamaConfig, HydraHeadLlamaForCausalLM = HYBRID_CLASSES["llama"]
HydraHeadMistralConfig, HydraHeadMistralForCausalLM = HYBRID_CLASSES["mistral"]

for _config_class, _model_class in HYBRID_CLASSES.values():
    AutoConfig.register(_config_class.model_type, _config_class, exist_ok=True)
    AutoModelForCausalLM.register(_config_class, _model_class, exist_ok=True)
    register_checkpoint_conversion_mapping(_config_class.model_type, list(FUSED_PROJECTIONS), overwrite=True)


def expose_in_transformers(*classes: type) -> None:
    """Make hybrid classes attributes of the `transformers` module. `transformers serve` (5.17,
    cli/serving/model_manager.py `_load_model`) finds a checkpoint's class as `getattr(transformers,
    config.architectures[0])`, not through the Auto classes or `auto_map`; a saved hybrid's modeling code calls
    this when it is loaded, and so does `hydrahead serve`. Names transformers has are never replaced.

    transformers re-executes its own `__init__` (processing_utils' `direct_transformers_import`), so the module
    object the model manager imported may no longer be `sys.modules["transformers"]`: both get the names."""
    import sys

    modules = [sys.modules.get("transformers"),
               getattr(sys.modules.get("transformers.cli.serving.model_manager"), "transformers", None)]
    for module in {id(m): m for m in modules if m is not None}.values():
        for cls in classes:
            if not hasattr(module, cls.__name__):
                setattr(module, cls.__name__, cls)


def is_hybrid(model: Any) -> bool:
    return isinstance(model, HybridCausalLMMixin)
