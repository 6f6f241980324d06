"""Text from a model, with what it took: `hydrahead generate`.

    model, tokenizer = hydrahead.load_model("hybrid/"), hydrahead.load_tokenizer("hybrid/")
    result = hydrahead.generate_text(model, tokenizer, "The key is 7261. The key is", max_new_tokens=16,
                                     stream=lambda text: print(text, end="", flush=True))
    print(result.summary())

One prompt, through the model's own `generate`, called as a user's code calls it: a hybrid's default on CUDA
is the static cache and the graph-captured decode step, on the CPU the dynamic cache (`cache` chooses).
Measured from outside, by a streamer that notes the time of each new token: the time to the first token
(prefill and the first token's choice), the first decode step (on CUDA with the static cache, transformers
compiles the decode step then), the decode rate after it (the median step, robust to a step that records a
CUDA graph or recompiles), and the cache generate returns, in bytes, with what the plan implies and what the
teacher's K/V would hold for the same positions. What a checkpoint's generation config could change is
passed explicitly (one beam, a cache, no prompt lookup, top_p and top_k when sampling); the
tokenizer's EOS ends a generation as well as the config's.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from hydrahead.errors import GenerationError, integer, number, one_line, shown
from hydrahead.utils.units import counted

if TYPE_CHECKING:
    import torch

CACHES = ("auto", "dynamic", "static")  # (this module imports torch only when it runs: the CLI's --help reads it)


@dataclass
class GenerationResult:
    """What `generate_text` produced and measured. Times in seconds from the call; bytes of the cache `generate`
    returned."""

    text: str
    token_ids: list[int]  # the new tokens
    prompt_tokens: int
    new_tokens: int
    stopped: str  # "eos" (the model ended it), "length" (max_new_tokens), "other" (a stop string, max_time)
    chat: bool  # the prompt went through the chat template
    decoding: dict[str, Any]  # what was asked of generate: do_sample, temperature, top_p, top_k
    token_times_s: list[float]  # when each new token arrived, from the call
    device: str
    dtype: str
    cache: str  # the cache's class, "static" or "dynamic"
    cache_positions: int  # positions written to the cache (a static cache: its full size)
    cache_bytes: dict[str, int] = field(default_factory=dict)  # {'kv', 'recurrent', 'conv'} (a plain model: 'kv')
    plan_cache_bytes: int | None = None  # a hybrid: the plan's K/V bytes per token x cache_positions + its state
    teacher_kv_bytes: int | None = None  # a hybrid without sliding windows: the teacher's K/V there, same dtype
    peak_memory_bytes: int | None = None  # CUDA: the most memory allocated during the call
    warmed_up: bool = False  # an untimed generation ran first (one-time compilation left out)

    @property
    def first_token_s(self) -> float:
        """From the call to the first new token: the prefill and the first token's choice."""
        return self.token_times_s[0]

    @property
    def first_step_s(self) -> float | None:
        """The first decode step (to the second token: on CUDA with the static cache, transformers compiles then)."""
        return self.token_times_s[1] - self.token_times_s[0] if self.new_tokens > 1 else None

    @property
    def decode_step_s(self) -> float | None:
        """The median time of the decode steps after the first (None with fewer than three new tokens): robust to a
        step or two that compile or record a CUDA graph."""
        gaps = [b - a for a, b in zip(self.token_times_s[1:], self.token_times_s[2:])]
        return statistics.median(gaps) if gaps else None

    @property
    def prompt_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.first_token_s

    @property
    def decode_tokens_per_s(self) -> float | None:
        return 1 / self.decode_step_s if self.decode_step_s else None

    def to_dict(self) -> dict[str, Any]:
        derived = ("first_token_s", "first_step_s", "decode_step_s", "prompt_tokens_per_s", "decode_tokens_per_s")
        return {**asdict(self), **{name: getattr(self, name) for name in derived}}

    def summary(self) -> str:
        """A few lines for a person: the prompt and its prefill, the decode rate, the cache against the teacher's."""
        lines = [f"prompt: {self.prompt_tokens:,} tokens{' (chat template)' if self.chat else ''}; first token after "
                 f"{_s(self.first_token_s)} ({self.prompt_tokens_per_s:,.0f} prompt tokens/s)"
                 f"{'' if not self.warmed_up else ', after an untimed warm-up run'}"]
        end = {"eos": "the model's end of text", "length": "max_new_tokens"}.get(self.stopped, "a stop condition")
        decode = f"{counted(self.new_tokens, 'new token')} (stopped at {end})"
        if self.decode_step_s is not None:
            decode += (f"; {self.decode_tokens_per_s:,.1f} tokens/s (the median step after the first, which took "
                       f"{_s(self.first_step_s)})")
        elif self.first_step_s is not None:
            decode += f"; one decode step, {_s(self.first_step_s)}"
        lines.append(decode)
        held = sum(self.cache_bytes.values())
        cache = f"cache ({self.cache}): {_mb(held)} after {self.cache_positions:,} positions"
        if self.plan_cache_bytes is not None:
            parts = {"kv": "FA K/V", "recurrent": "GDN state", "conv": "conv window"}
            cache += ": " + " + ".join(f"{name} {_mb(self.cache_bytes.get(key, 0))}" for key, name in parts.items())
            cache += (", as the plan implies" if held == self.plan_cache_bytes
                      else f"; the plan implies {_mb(self.plan_cache_bytes)}")
            if self.teacher_kv_bytes:
                share = 100 * held / self.teacher_kv_bytes
                cache += f"; the teacher's K/V: {_mb(self.teacher_kv_bytes)} ({share:.1f}%)"
                kv = self.cache_bytes.get("kv", 0)
                saved = (self.teacher_kv_bytes - kv) / self.cache_positions  # K/V bytes per position
                if share > 100 and saved > 0:  # a short context: the fixed-size state outweighs the K/V saved
                    cache += (f": the GDN state has a fixed size, and the hybrid's cache is the smaller from "
                              f"{math.ceil((held - kv) / saved):,} positions on")
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
        ids = render_chat(tokenizer, prompt, GenerationError, "give the prompt as plain text (--no-chat)",
                          return_dict=True, return_tensors="pt")["input_ids"]
    else:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
    if ids.shape[1] == 0:
        raise GenerationError("the prompt encodes to no tokens")
    return ids, chat


def render_chat(tokenizer: Any, prompt: str, error: type[Exception], advice: str, template: str | None = None,
                **kwargs) -> Any:
    """`tokenizer.apply_chat_template` on one user message (with the generation prompt), or `error` naming the
    template and `advice` when the template fails on it (instruct templates call raise_exception)."""
    import jinja2

    try:
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], chat_template=template,
                                             add_generation_prompt=True, **kwargs)
    except (jinja2.TemplateError, ValueError, TypeError, KeyError, IndexError) as err:
        raise error(f"the chat template failed on a user message: {one_line(err)}; {advice}") from None


class _Clock:
    """A streamer (transformers' protocol: `put`, `end`) that notes when each new token arrives (on CUDA generate
    hands it over after copying it to the host, so the step is done) and hands the new text to `stream` as
    transformers' TextStreamer cuts it (whole words)."""

    def __init__(self, tokenizer: Any, stream: Callable[[str], None] | None) -> None:
        from transformers import TextStreamer

        self.times: list[float] = []
        self.text = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True) if stream else None
        if self.text is not None:
            self.text.on_finalized_text = lambda text, stream_end=False: stream(text)
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if self.prompt_seen:  # generate's first call hands over the prompt, every later one the new token(s)
            self.times.extend([time.perf_counter()] * value.numel())
        self.prompt_seen = True
        if self.text is not None:
            self.text.put(value)

    def end(self) -> None:
        if self.text is not None:
            self.text.end()


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id that ends a generation: the model's generation config's and the tokenizer's EOS (an instruct
    tokenizer's end-of-turn token is not always in the config)."""
    configured = model.generation_config.eos_token_id
    configured = [configured] if isinstance(configured, int) else list(configured or ())
    return sorted(set(configured) | ({tokenizer.eos_token_id} - {None}))


def decoding_settings(temperature: float, top_p: float = 1.0, top_k: int = 0) -> dict[str, Any]:
    """generate's decoding arguments for these values (greedy at temperature 0), or GenerationError."""
    temperature, top_p = (number(value, name, GenerationError) for name, value in (("temperature", temperature),
                                                                                    ("top_p", top_p)))
    top_k = integer(top_k, "top_k", GenerationError)
    if not (temperature >= 0 and math.isfinite(temperature)) or not 0 < top_p <= 1 or top_k < 0:
        raise GenerationError(f"temperature must be a finite number >= 0, top_p in (0, 1] and top_k >= 0; got "
                              f"{temperature}, {top_p} and {top_k}")
    if temperature == 0 and (top_p != 1 or top_k != 0):
        raise GenerationError("top_p and top_k apply when sampling: give a temperature above 0 as well")
    if temperature > 0:  # top_k 0 turns the checkpoint's (or transformers' default 50) off
        return {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": top_k}
    return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}


def generate_text(model: Any, tokenizer: Any, prompt: str, *, max_new_tokens: int = 128, temperature: float = 0.0,
                  top_p: float = 1.0, top_k: int = 0, seed: int = 0, chat: bool | None = None, cache: str = "auto",
                  warmup: bool = False, stream: Callable[[str], None] | None = None) -> GenerationResult:
    """Generate from one prompt with `model.generate` and measure it (see the module's docstring).

    `temperature` 0 is greedy; above 0 samples, from `seed`, with `top_p` and `top_k` (0: off) as given (not the
    checkpoint's); the checkpoint's other settings (a repetition penalty, say) apply as they do in `generate`.
    `cache`: "auto" is generate's own choice (a hybrid's on CUDA: static, compiled decode), "dynamic" or "static"
    ask for that cache. `warmup` runs the generation once, untimed, first, so that one-time work (fla's Triton
    kernels compiled and tuned for these shapes, the compiled decode step) is not in the figures. `stream`
    receives the new text as it is generated. GenerationError for a request generate would refuse."""
    import torch

    from hydrahead.cache import cache_nbytes
    from hydrahead.models.footprint import footprint
    from hydrahead.models.hybrid import has_sliding_window, is_hybrid
    from hydrahead.models.loading import check_vocabulary
    from hydrahead.models.shape import check_positions

    if not (hasattr(model, "generate") and hasattr(model, "config")):  # a path, say: AttributeError 'config'
        raise GenerationError(f"model must be a transformers causal LM (hydrahead.load_model(path)), got "
                              f"{shown(model)}")
    if not (callable(tokenizer) and hasattr(tokenizer, "decode")):
        raise GenerationError(f"tokenizer must be a transformers tokenizer (hydrahead.load_tokenizer(path)), got "
                              f"{shown(tokenizer)}")
    if cache not in CACHES:
        raise GenerationError(f"unknown cache {cache!r}; choose one of {', '.join(CACHES)}")
    if integer(max_new_tokens, "max_new_tokens", GenerationError) < 1:  # a float (nan, inf) never ends
        raise GenerationError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if not isinstance(prompt, str):
        raise GenerationError(f"the prompt must be a string, got {shown(prompt)}")
    if chat is not None and not isinstance(chat, bool):
        raise GenerationError(f"chat must be None, True or False, got {shown(chat)}")
    if not 0 <= integer(seed, "seed", GenerationError) < 2**64:  # 1.5 seeded 1; None and 2**64 failed in torch
        raise GenerationError(f"seed must be a whole number from 0 to 2**64 - 1 (the CLI's and recipes' range), "
                              f"got {seed}")
    if not isinstance(warmup, bool):
        raise GenerationError(f"warmup must be True or False, got {shown(warmup)}")
    if stream is not None and not callable(stream):
        raise GenerationError(f"stream must be a function of the new text (or None), got {shown(stream)}")
    decoding = decoding_settings(temperature, top_p, top_k)
    check_vocabulary(tokenizer, model.config, getattr(tokenizer, "name_or_path", None), GenerationError)
    ids, chat = prompt_ids(tokenizer, prompt, chat)
    check_positions(model.config, ids.shape[1] + max_new_tokens,
                    f"{ids.shape[1]} prompt tokens + {max_new_tokens} new ones =")
    device = model.device
    eos = eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else None)
    # one sequence, one token a step, on a cache: whatever the checkpoint's generation config says
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "eos_token_id": eos or None, "pad_token_id": pad,
                              "num_beams": 1, "use_cache": True, "prompt_lookup_num_tokens": None, **decoding}
    if cache != "auto":
        kwargs["cache_implementation"] = cache
    inputs = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}

    def run(streamer):
        if temperature > 0:
            torch.manual_seed(seed)
        with torch.no_grad():
            try:
                return model.generate(**inputs, streamer=streamer, return_dict_in_generate=True, tokenizer=tokenizer,
                                      **kwargs)  # the tokenizer: for the checkpoint's stop strings, if it has any
            except ValueError as err:  # transformers' refusal of a setting (the checkpoint's generation config)
                raise GenerationError(f"generate refused the request: {one_line(err)}") from err

    if warmup:
        run(_Clock(tokenizer, None))
    clock = _Clock(tokenizer, stream)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    out = run(clock)
    new = out.sequences[0, ids.shape[1]:].cpu()
    held = out.past_key_values
    static = [layer.max_cache_len for layer in held.layers if hasattr(layer, "max_cache_len")]
    positions = max(static) if static else int(held.get_seq_length())
    stopped = ("eos" if len(new) and int(new[-1]) in eos else "length" if len(new) == max_new_tokens else "other")
    result = GenerationResult(
        text=tokenizer.decode(new, skip_special_tokens=True), token_ids=new.tolist(), prompt_tokens=ids.shape[1],
        new_tokens=len(new),
        stopped=stopped, chat=chat, decoding=decoding, token_times_s=[t - start for t in clock.times],
        device=str(device), dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
        cache=f"{type(held).__name__}, {'static' if static else 'dynamic'}", cache_positions=positions,
        cache_bytes=cache_nbytes(held), warmed_up=warmup,
        peak_memory_bytes=torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None)
    if is_hybrid(model):
        figures = footprint(model)
        result.plan_cache_bytes = figures["kv_bytes_per_token"] * positions + figures["state_bytes_per_sequence"]
        if not has_sliding_window(model):
            # (a teacher with sliding windows keeps fewer positions on those layers: no comparison is made)
            result.teacher_kv_bytes = figures["teacher_kv_bytes_per_token"] * positions
    return result
