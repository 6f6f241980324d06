"""Text from a model, with what it took: `hydrahead generate`.

    model, tokenizer = hydrahead.load_model("hybrid/"), hydrahead.load_tokenizer("hybrid/")
    result = hydrahead.generate_text(model, tokenizer, "The key is 7261. The key is", max_new_tokens=16,
                                     stream=lambda text: print(text, end="", flush=True))
    print(result.summary())

One prompt, through the model's own `generate`, called as a user's code calls it: a hybrid's default on CUDA
is the static cache and the graph-captured decode step, on the CPU the dynamic cache (`cache` chooses).
Measured from outside, by a streamer that notes the time of each new token: the time to the first token
(prefill and the first token's choice), the first decode step (on CUDA with the static cache, transformers
compiles the decode step then), the decode rate after it, and the cache generate returns, in bytes, with
what the plan implies and what the teacher's K/V would hold for the same tokens.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from hydrahead.errors import GenerationError

if TYPE_CHECKING:
    import torch

CACHES = ("auto", "dynamic", "static")  # (this module imports torch only when it runs: the CLI's --help reads it)


@dataclass
class GenerationResult:
    """What `generate_text` produced and measured. Times in seconds; bytes of the cache `generate` returned."""

    text: str
    prompt_tokens: int
    new_tokens: int
    stopped: str  # "eos" (the model ended it) or "length" (max_new_tokens)
    chat: bool  # the prompt went through the chat template
    first_token_s: float  # from the call to the first new token: the prefill and the first token's choice
    first_step_s: float | None  # the first decode step (the second token); None with one new token
    decode_s: float | None  # the decode steps after it (tokens 3..n); None with fewer than three new tokens
    device: str
    dtype: str
    cache: str  # the cache's class, "static" or "dynamic"
    cache_tokens: int  # the positions the cache holds (a static cache: its full size)
    cache_bytes: dict[str, int] = field(default_factory=dict)  # {'kv', 'recurrent', 'conv'} (a plain model: 'kv')
    plan_cache_bytes: int | None = None  # a hybrid: the plan's K/V bytes per token x cache_tokens + its state
    teacher_kv_bytes: int | None = None  # a hybrid: the teacher's K/V for cache_tokens, in the same dtype
    peak_memory_bytes: int | None = None  # CUDA: the most memory allocated during the call

    @property
    def prompt_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.first_token_s

    @property
    def decode_tokens_per_s(self) -> float | None:
        """New tokens per second after the first decode step (None with fewer than three new tokens)."""
        return (self.new_tokens - 2) / self.decode_s if self.decode_s else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "prompt_tokens_per_s": self.prompt_tokens_per_s,
                "decode_tokens_per_s": self.decode_tokens_per_s}

    def summary(self) -> str:
        """A few lines for a person: the prompt and its prefill, the decode rate, the cache against the teacher's."""
        lines = [f"prompt: {self.prompt_tokens:,} tokens{' (chat template)' if self.chat else ''}; first token after "
                 f"{_s(self.first_token_s)} ({self.prompt_tokens_per_s:,.0f} prompt tokens/s)"]
        end = "the model's end of text" if self.stopped == "eos" else "max_new_tokens"
        decode = f"{self.new_tokens:,} new token{'s' if self.new_tokens != 1 else ''} (stopped at {end})"
        if self.decode_tokens_per_s is not None:
            decode += (f"; {self.decode_tokens_per_s:,.1f} tokens/s after the first decode step, which took "
                       f"{_s(self.first_step_s)}")
        elif self.first_step_s is not None:
            decode += f"; one decode step, {_s(self.first_step_s)}"
        lines.append(decode)
        held = sum(self.cache_bytes.values())
        cache = f"cache ({self.cache}): {_mb(held)} for {self.cache_tokens:,} positions"
        if self.plan_cache_bytes is not None:
            parts = {"kv": "FA K/V", "recurrent": "GDN state", "conv": "conv window"}
            cache += ": " + " + ".join(f"{name} {_mb(self.cache_bytes.get(key, 0))}" for key, name in parts.items())
            cache += (", as the plan implies" if held == self.plan_cache_bytes
                      else f"; the plan implies {_mb(self.plan_cache_bytes)}")
            if self.teacher_kv_bytes:
                cache += f"; the teacher's K/V: {_mb(self.teacher_kv_bytes)} ({100 * held / self.teacher_kv_bytes:.1f}%)"
        lines.append(cache)
        where = f"on {self.device} in {self.dtype}"
        if self.peak_memory_bytes is not None:
            where += f"; peak memory {self.peak_memory_bytes / 2**30:.2f} GiB"
        lines.append(where)
        return "\n".join(lines)


def _s(seconds: float) -> str:
    return f"{seconds:,.2f} s" if seconds >= 1 else f"{1e3 * seconds:.1f} ms"


def _mb(n: int) -> str:
    return f"{n / 1e6:,.2f} MB" if n >= 10_000 else f"{n:,} bytes"


def prompt_ids(tokenizer: Any, prompt: str, chat: bool | None = None) -> tuple[torch.Tensor, bool]:
    """(the prompt's token ids as (1, T), whether the chat template made them). `chat` None: the template when
    the tokenizer has one (an instruct model), else the text as it is; True refuses a tokenizer without one."""
    if not prompt.strip():
        raise GenerationError("the prompt is empty")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if chat and not has_template:
        raise GenerationError("this checkpoint has no chat template: give the prompt as plain text (no --chat)")
    chat = has_template if chat is None else chat
    if chat:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_dict=True, return_tensors="pt")["input_ids"]
    else:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
    if ids.shape[1] == 0:
        raise GenerationError("the prompt encodes to no tokens")
    return ids, chat


class _Clock:
    """A streamer (transformers' protocol: `put`, `end`) that notes when each new token arrives and hands the
    new text to `stream` as transformers' TextStreamer cuts it (whole words)."""

    def __init__(self, tokenizer: Any, stream: Callable[[str], None] | None) -> None:
        from transformers import TextStreamer

        self.times: list[float] = []
        self.text = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True) if stream else None
        if self.text is not None:
            self.text.on_finalized_text = lambda text, stream_end=False: stream(text)
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if self.prompt_seen:  # generate's first call hands over the prompt, every later one a new token
            self.times.append(time.perf_counter())
        self.prompt_seen = True
        if self.text is not None:
            self.text.put(value)

    def end(self) -> None:
        if self.text is not None:
            self.text.end()


def generate_text(model: Any, tokenizer: Any, prompt: str, *, max_new_tokens: int = 128, temperature: float = 0.0,
                  top_p: float = 1.0, seed: int = 0, chat: bool | None = None, cache: str = "auto",
                  stream: Callable[[str], None] | None = None) -> GenerationResult:
    """Generate from one prompt with `model.generate` and measure it (see the module's docstring).

    `temperature` 0 is greedy; above 0 samples (with `top_p`, from `seed`). `cache`: "auto" is generate's own
    choice (a hybrid's on CUDA: static, compiled decode), "dynamic" or "static" ask for that cache. `stream`
    receives the new text as it is generated."""
    import torch

    from hydrahead.cache import cache_nbytes
    from hydrahead.models.footprint import footprint
    from hydrahead.models.hybrid import is_hybrid
    from hydrahead.models.loading import check_vocabulary
    from hydrahead.models.shape import check_positions

    if cache not in CACHES:
        raise GenerationError(f"unknown cache {cache!r}; choose one of {', '.join(CACHES)}")
    if max_new_tokens < 1:
        raise GenerationError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if not temperature >= 0 or not 0 < top_p <= 1:  # `not >=` also refuses NaN
        raise GenerationError(f"temperature must be >= 0 and top_p in (0, 1], got {temperature} and {top_p}")
    check_vocabulary(tokenizer, model.config, getattr(tokenizer, "name_or_path", "the tokenizer"), GenerationError)
    ids, chat = prompt_ids(tokenizer, prompt, chat)
    check_positions(model.config, ids.shape[1] + max_new_tokens,
                    f"{ids.shape[1]} prompt tokens + {max_new_tokens} new ones =")
    device = model.device
    eos = model.generation_config.eos_token_id
    eos = eos if eos is not None else tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if isinstance(eos, list) else eos)
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "eos_token_id": eos, "pad_token_id": pad}
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
        torch.manual_seed(seed)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if cache != "auto":
        kwargs["cache_implementation"] = cache
    clock = _Clock(tokenizer, stream)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(ids.to(device), attention_mask=torch.ones_like(ids).to(device), streamer=clock,
                             return_dict_in_generate=True, **kwargs)
    new = out.sequences[0, ids.shape[1]:].cpu()
    times = clock.times
    held = out.past_key_values
    static = any(hasattr(layer, "max_cache_len") for layer in held.layers)
    positions = max((layer.max_cache_len for layer in held.layers if hasattr(layer, "max_cache_len")),
                    default=int(held.get_seq_length()))
    eos_ids = {eos} if isinstance(eos, int) else set(eos or ())
    result = GenerationResult(
        text=tokenizer.decode(new, skip_special_tokens=True), prompt_tokens=ids.shape[1], new_tokens=len(new),
        stopped="eos" if len(new) and int(new[-1]) in eos_ids else "length", chat=chat,
        first_token_s=times[0] - start, first_step_s=times[1] - times[0] if len(times) > 1 else None,
        decode_s=times[-1] - times[1] if len(times) > 2 else None, device=str(device),
        dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
        cache=f"{type(held).__name__}, {'static' if static else 'dynamic'}", cache_tokens=positions,
        cache_bytes=cache_nbytes(held),
        peak_memory_bytes=torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None)
    if is_hybrid(model):
        figures = footprint(model)
        result.plan_cache_bytes = figures["kv_bytes_per_token"] * positions + figures["state_bytes_per_sequence"]
        result.teacher_kv_bytes = figures["teacher_kv_bytes_per_token"] * positions
    return result
