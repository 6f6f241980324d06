"""The hybrid cache: per layer, K/V of the FA branch's KV heads plus the GDN recurrent and conv state.

Built on transformers' own hybrid cache layers (`LinearAttentionAndFullAttentionLayer` for the dynamic
cache, `LinearAttentionAndStaticFullAttentionLayer` for the static one), so `generate`, beam reordering and
`cache_implementation="static"` keep working. transformers' own caches are refused (a hybrid model's `forward` and
`generate`), as are its offloaded and quantized ones, which have no hybrid form.

The layers of a hybrid talk to their cache layer through one small protocol, defined here and nowhere
else (`HybridStateMixin`): `conv_window` / `conv_inputs_before` (the short conv's left context), `recurrent_state` /
`store_recurrent_state` (the GDN state) and `advance` (count the tokens of a forward). Each layer counts
its own tokens because a layer may have no FA heads, so no keys to measure the length by, while
transformers derives positions and mask sizes from layer 0's length.

The static cache preallocates every buffer once and only ever writes into it in place (K/V by
`index_copy_`, states by `copy_`, the token counter by `add_`), so a decode step reads and writes fixed
addresses: what `torch.compile` and CUDA graphs need. The dynamic cache copies the last conv inputs into
its kept state too (a view of the window would keep the whole window alive), but keeps a kernel's new GDN
state tensor rather than copying it (one copy fewer per layer and step); with autograd on it always keeps
the new tensors, as transformers' `DynamicCache` concatenates K/V: a later forward's gradient flows back
through the states into the earlier ones, and no tensor autograd saved is overwritten.

A hybrid cache cannot be rolled back: the GDN state after n tokens does not give the state after n - k
(transformers' linear-attention layers can roll back only a conv state). So `crop`, which assisted and
prompt-lookup decoding call to drop rejected draft tokens, raises `CacheError`; the hybrid model refuses
those modes before generating (`HybridCausalLMMixin._validate_generation_mode`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.cache_utils import (
    Cache,
    DynamicCache,
    LinearAttentionAndFullAttentionLayer,
    LinearAttentionAndStaticFullAttentionLayer,
)
from transformers.utils import is_torchdynamo_compiling

from hydrahead.errors import CacheError, integer, shown
from hydrahead.layers.norm import forget_weight_tables

NO_ROLLBACK = (
    "a hybrid cache cannot be rolled back: assisted / prompt-lookup decoding is not supported (a GDN head's state "
    "cannot drop rejected draft tokens); generate without assistant_model or prompt_lookup_num_tokens, and do not "
    "make a hydrahead model another model's assistant")


class HybridStateMixin:
    """The cache protocol of a hybrid layer (mixed into both cache layer kinds)."""

    static_addresses = False  # True: states are written in place, never replaced (torch.compile, CUDA graphs)
    is_croppable = False  # see `crop`

    def replaces_states(self, kept: torch.Tensor | None) -> bool:
        """Whether a new state replaces the `kept` one instead of being copied into it: in a dynamic cache with
        autograd on, or while `kept` belongs to a graph. Copying into it would detach the new state from the
        earlier forwards' graph and overwrite a tensor autograd saved ("modified by an inplace operation")."""
        return not self.static_addresses and (torch.is_grad_enabled() or (kept is not None and kept.requires_grad))

    def conv_window(self, x: torch.Tensor, kernel_size: int) -> torch.Tensor:
        """x: (B, T, C) new conv inputs -> (B, kernel_size - 1 + T, C): the inputs the causal conv sees,
        zeros before the first token. Keeps the last kernel_size - 1 inputs (B, kernel_size - 1, C)."""
        keep = kernel_size - 1
        if not self.has_previous_state[0]:
            window = F.pad(x, (0, 0, keep, 0))
            self.keep_conv_inputs(window[:, window.shape[1] - keep :], kernel_size)
            return window
        window = torch.cat([self.conv_states[0], x], dim=1)
        # copied, not kept as a view: a view keeps the whole window alive (a decode step's: kernel_size inputs
        # held for the kernel_size - 1 the cache's byte count and the plan's figure say)
        self.keep_conv_inputs(window[:, window.shape[1] - keep :], kernel_size)
        return window

    def conv_inputs_before(self, x: torch.Tensor, kernel_size: int) -> torch.Tensor | None:
        """x: (B, T, C) new conv inputs -> the kernel_size - 1 inputs before them (B, kernel_size - 1, C), or None
        before the first token (zeros), for a conv that takes its left context apart from x (fla's). Keeps the
        last kernel_size - 1 inputs."""
        keep = kernel_size - 1
        previous = self.conv_states[0].clone() if self.has_previous_state[0] else None  # kept in place below
        if x.shape[1] >= keep:
            last = x[:, x.shape[1] - keep :]
        else:
            before = previous if previous is not None else x.new_zeros(x.shape[0], keep, x.shape[2])
            last = torch.cat([before, x], dim=1)[:, x.shape[1] :]
        self.keep_conv_inputs(last, kernel_size)
        return previous

    def keep_conv_inputs(self, last: torch.Tensor, kernel_size: int) -> None:
        """Keep `last` (B, kernel_size - 1, C) as the conv inputs seen last: copied into the kept tensor, or a copy
        of it kept (`replaces_states`; a copy, since `last` is a view of the whole input and would keep it alive)."""
        kept = self.conv_states[0] if self.is_conv_states_initialized[0] else None
        replace = self.replaces_states(kept)
        if kept is not None and not replace:
            kept.copy_(last)
        else:
            self.conv_states[0] = last.clone() if replace else self._static_buffer(last)
            self.conv_kernel_size[0] = kernel_size
            self.is_conv_states_initialized[0] = True
        if not self.has_previous_state[0]:  # set once: a compiled step then replays no Python-side write
            self.has_previous_state[0] = True

    def recurrent_state(self) -> torch.Tensor | None:
        """The GDN state (B, H, Dk, Dv) after the tokens seen so far, or None before the first."""
        return self.recurrent_states[0] if self.is_recurrent_states_initialized[0] else None

    def store_recurrent_state(self, state: torch.Tensor) -> None:
        """Keep `state` as the GDN state; a no-op when it already is the cached tensor (updated in place). A
        dynamic cache keeps a new state tensor itself: with autograd on, always (`replaces_states`); outside it,
        one of the same layout instead of copying it (a kernel's fresh output: one launch fewer per layer and
        step). A static cache copies, its address fixed."""
        kept = self.recurrent_states[0] if self.is_recurrent_states_initialized[0] else None
        if state is kept:
            return
        if self.replaces_states(kept):
            self.recurrent_states[0] = state
        elif kept is None:
            self.recurrent_states[0] = self._static_buffer(state)
        elif (not self.static_addresses and state.shape == kept.shape and state.dtype == kept.dtype
              and state.device == kept.device and state.is_contiguous()):
            self.recurrent_states[0] = state
        else:
            kept.copy_(state)
        self.is_recurrent_states_initialized[0] = True

    @staticmethod
    def _static_buffer(x: torch.Tensor) -> torch.Tensor:
        buffer = x.detach().clone(memory_format=torch.contiguous_format)
        if not is_torchdynamo_compiling():
            torch._dynamo.mark_static_address(buffer)
        return buffer

    def map_batch(self, fn) -> None:
        """Apply `fn`, an op on the batch axis (dim 0), to the K/V, where this layer has them (a layer without FA
        heads has none), and to every state. transformers' own methods test for K/V by the sequence length, which
        a hybrid layer counts with or without them. A static layer writes the results in place, its addresses
        fixed (so `fn` must keep the batch size)."""
        def apply(t: torch.Tensor) -> torch.Tensor:
            return t.copy_(fn(t)) if self.static_addresses else fn(t)

        if self.is_initialized:
            self.keys, self.values = apply(self.keys), apply(self.values)
        for i in range(self.number_of_states):
            if self.is_conv_states_initialized[i]:
                self.conv_states[i] = apply(self.conv_states[i])
            if self.is_recurrent_states_initialized[i]:
                self.recurrent_states[i] = apply(self.recurrent_states[i])

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Beam search: keep the beams `beam_idx` (B,) picked, in the K/V and the states alike."""
        self.map_batch(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def crop(self, tokens_to_remove: int) -> None:
        """Refused (`NO_ROLLBACK`): the GDN state cannot drop tokens it has absorbed, and transformers' crop
        would cut the conv state along the wrong axis (its layout is (B, C, K), ours (B, K - 1, C))."""
        raise CacheError(NO_ROLLBACK)


PLAIN_MODEL = ("a HybridHeadCache is a hydrahead model's cache (its FA heads' K/V and GDN states); a plain "
               "transformers model takes transformers' own: past_key_values=DynamicCache(config=model.config), or "
               "None (one is made)")


class HybridHeadLayer(HybridStateMixin, LinearAttentionAndFullAttentionLayer):
    """Dynamic cache layer: K/V grow by concatenation (transformers' `DynamicLayer`)."""

    def __init__(self) -> None:
        super().__init__(number_of_states=1)
        self.seen_tokens = 0

    def advance(self, num_tokens: int) -> None:
        self.seen_tokens += num_tokens

    def get_seq_length(self) -> int:
        return self.seen_tokens

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.seen_tokens + query_length, 0

    def reset(self) -> None:
        """Back to a fresh layer: no K/V, no states, no weight tables. (transformers' reset zeroes K/V but keeps
        their length, so the next forward would attend to zeroed keys after them.)"""
        self.keys = self.values = None
        self.is_initialized = False
        for i in range(self.number_of_states):
            self.conv_states[i] = self.recurrent_states[i] = None
            self.is_conv_states_initialized[i] = self.is_recurrent_states_initialized[i] = False
            self.has_previous_state[i] = False
        self.seen_tokens = 0
        forget_weight_tables(self)

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.map_batch(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.map_batch(lambda t: t[indices])


class HybridHeadStaticLayer(HybridStateMixin, LinearAttentionAndStaticFullAttentionLayer):
    """Static cache layer: K/V preallocated for `max_cache_len` tokens, written in place.

    `cumulative_length` (a 0-dim tensor with a static address) counts the tokens of every forward, FA heads
    or not; `update` writes K/V at that offset without moving it, `advance` moves it once per forward.
    `tokens` counts the same on the host, so the overflow check needs no device sync; compiled steps cannot
    count on the host, so after them the first eager write reads the device counter once.
    """

    static_addresses = True

    def __init__(self, max_cache_len: int) -> None:
        super().__init__(max_cache_len, number_of_states=1)
        self.tokens = 0
        self.tokens_stale = False  # True after compiled steps: `tokens` missed them

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length = key_states.shape[-2]
        if not is_torchdynamo_compiling() and self.tokens_stale:
            self.tokens, self.tokens_stale = int(self.cumulative_length), False
        if not is_torchdynamo_compiling() and self.tokens + length > self.max_cache_len:
            raise CacheError(
                f"the static cache holds {self.max_cache_len} tokens; writing {length} more after "
                f"{self.tokens} overflows it (make the cache larger, max_cache_len; or, to continue a generation "
                "on CUDA, where generate defaults to the static cache sized for one call, cache_implementation="
                "'dynamic')"
            )
        positions = torch.arange(length, device=self.keys.device) + self.cumulative_length.to(self.keys.device)
        self.keys.index_copy_(2, positions, key_states)
        self.values.index_copy_(2, positions, value_states)
        return self.keys, self.values

    def advance(self, num_tokens: int) -> None:
        self.cumulative_length.add_(num_tokens)
        if is_torchdynamo_compiling():
            self.tokens_stale = True
        else:
            self.tokens += num_tokens

    def reset(self) -> None:
        """Zero every buffer in place (addresses kept), count from 0, and drop the weight tables (the weights
        may change before the next generation)."""
        super().reset()
        self.tokens, self.tokens_stale = 0, False
        forget_weight_tables(self)

    def get_seq_length(self) -> torch.Tensor:
        return self.cumulative_length

    def get_max_length(self) -> int:
        """The tokens the layer holds (transformers' linear-attention mixin, first in the MRO, would say -1)."""
        return self.max_cache_len

    def to_device(self, device: torch.device) -> None:
        """Put the token counter where the model runs (before the first forward)."""
        if self.cumulative_length.device != device:
            self.cumulative_length = self.cumulative_length.to(device)
            torch._dynamo.mark_static_address(self.cumulative_length)

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise CacheError("a static hybrid cache has a fixed batch size; use the dynamic cache for this search")

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        raise CacheError("a static hybrid cache has a fixed batch size; use the dynamic cache for this search")


def cache_device(device: torch.device | str) -> torch.device:
    """`device` as a torch device this process can use, or CacheError naming the model's own (`model.device`)."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise CacheError(f"unknown device {device!r} for the cache; give the model's own, model.device") from err
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise CacheError(f"device {str(device)!r} is not available here; give the model's own, model.device")
    return device


class HybridHeadCache(DynamicCache):
    """One hybrid cache layer per decoder layer of `config`.

    Dynamic by default. With `max_cache_len`, static: FA K/V preallocated for that many tokens (what
    `generate(..., cache_implementation="static")` builds), for `torch.compile` and CUDA graphs; the
    static layers have no sliding window (a hybrid model refuses to build one for such a config).
    """

    filled_by: tuple | None = None  # the signature of the hybrid that fills it (`cache_signature`, set in its forward)

    def __init__(self, config, max_cache_len: int | None = None, device: torch.device | str | None = None) -> None:
        count = getattr(config, "num_hidden_layers", None)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise CacheError(f"HybridHeadCache takes the hybrid's config (model.config), got a {type(config).__name__}"
                             f" whose num_hidden_layers is {shown(count)}")
        if max_cache_len is not None:
            max_cache_len = integer(max_cache_len, "max_cache_len", CacheError)
            if max_cache_len < 1:
                raise CacheError(f"max_cache_len must be >= 1 position, got {max_cache_len}")
        if max_cache_len is None:
            layers = [HybridHeadLayer() for _ in range(count)]
        else:
            layers = [HybridHeadStaticLayer(max_cache_len) for _ in range(count)]
        Cache.__init__(self, layers=layers)
        if device is not None:
            self.to_device(cache_device(device))

    def reset(self) -> None:
        """Empty, for another generation: of any hybrid when dynamic; of the same hybrid when static (its tensors
        stay where they are, at their shapes, for CUDA graphs)."""
        super().reset()
        if not self.is_static:
            self.filled_by = None

    @property
    def is_static(self) -> bool:
        return isinstance(self.layers[0], HybridHeadStaticLayer)

    @property
    def batch_size(self) -> int:
        """transformers' property, right for hybrid layers: the sequences the cache holds, -1 before its first
        forward (transformers' reads an attribute that only static K/V layers set)."""
        layer = self.layers[0]
        if layer.is_initialized:
            return layer.keys.shape[0]
        state = layer.recurrent_state()
        return -1 if state is None else state.shape[0]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Refused: a hybrid's FA branch writes through its cache layer; what calls the cache's `update` is a
        plain transformers attention (a teacher's), whose K/V this cache would hold without ever counting their
        tokens, so the next forward would take them for positions 0, 1, ... (wrong rotary positions, silently)."""
        raise CacheError(PLAIN_MODEL)

    def to_device(self, device: torch.device) -> None:
        for layer in self.layers:
            if isinstance(layer, HybridHeadStaticLayer):
                layer.to_device(device)

    def nbytes(self) -> dict[str, int]:
        """Bytes held now: {'kv': ..., 'recurrent': ..., 'conv': ...} (a static cache's K/V at full size), as the
        memory its tensors keep alive: a view counts its whole storage, and a storage shared is counted once."""
        total = {"kv": 0, "recurrent": 0, "conv": 0}
        seen: set[int] = set()

        def held(tensor: torch.Tensor) -> int:
            storage = tensor.untyped_storage()
            if storage.data_ptr() == 0:  # on the meta device (or empty): no address to tell storages apart by
                return tensor.nbytes
            if storage.data_ptr() in seen:
                return 0
            seen.add(storage.data_ptr())
            return storage.nbytes()

        for layer in self.layers:
            if layer.is_initialized:
                total["kv"] += held(layer.keys) + held(layer.values)
            for i in range(layer.number_of_states):
                if layer.is_recurrent_states_initialized[i]:
                    total["recurrent"] += held(layer.recurrent_states[i])
                if layer.is_conv_states_initialized[i]:
                    total["conv"] += held(layer.conv_states[i])
        return total


def cache_nbytes(cache: Cache) -> dict[str, int]:
    """Bytes a generation cache holds now: a HybridHeadCache's {'kv', 'recurrent', 'conv'} (`nbytes`); any other
    transformers cache's K/V as {'kv': ...} (a static cache's at its full size), with 'recurrent' and 'conv' where
    its layers keep linear-attention states (transformers' own hybrids)."""
    if isinstance(cache, HybridHeadCache):
        return cache.nbytes()
    total = {"kv": 0}
    for layer in cache.layers:
        total["kv"] += sum(t.nbytes for t in (getattr(layer, "keys", None), getattr(layer, "values", None))
                           if isinstance(t, torch.Tensor))
        for name, key in (("recurrent_states", "recurrent"), ("conv_states", "conv")):
            states = getattr(layer, name, None)
            if isinstance(states, dict):
                total[key] = total.get(key, 0) + sum(t.nbytes for t in states.values() if isinstance(t, torch.Tensor))
    return total
