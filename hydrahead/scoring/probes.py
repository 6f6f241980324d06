"""Counterfactual needle-in-a-haystack probes, built from any Hugging Face tokenizer.

A `Probe` is a pair of token sequences that differ only in the queried needle's value: the clean
prompt x holds the answer a+, the corrupted prompt x' holds a distractor a- of the **same token length**
(checked; resampled otherwise), so every position lines up between the two runs. Both are teacher-forced
with the clean answer appended (minus its last token), so the readout positions see identical tokens
and the only difference between x and x' is the needle value (ours: the paper does not say which answer
the corrupted run is forced with). Answer positions where a+ and a- share a token (the leading space
of a character tokenizer) add zero to the readout.

Templates:
- "niah": the evaluation's RULER prompt (`hydrahead.needles`: the same intro, needle sentence, question
  and answer prefix), a haystack (essay, noise or user files) with one needle ("single_key") or
  `num_keys` needles of different keys ("multi_key"). Needle values: number, word or uuid.
- "kv_recall": for tiny models with tiny vocabularies: filler words `f<i>` with key-value pairs
  `k<i> v<j>` inserted, then the query `k<i> ->` answered by `v<j>`. The pieces are whole words, so a
  `word_tokenizer(kv_recall_words(config))` gives one token per piece.

Segments are tokenized one by one (`tokenizer(text, add_special_tokens=False)`) and concatenated, so a
needle value has the same ids in the context and in the answer whatever the tokenizer merges.
Sub-probes (the unit of kappa in Eq. 11) are (capability, needle type) pairs with `samples` pairs each.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from hydrahead.errors import ProbeError
from hydrahead.errors import NeedleError
from hydrahead.needles import (
    ANSWER_PREFIX,
    HAYSTACKS,
    INTRO,
    KIND,
    NEEDLE,
    NEEDLE_TYPES,
    QUESTION,
    haystack_sentences,
    needle_key,
    needle_value,
)

CAPABILITIES = ("single_key", "multi_key")
TEMPLATES = ("niah", "kv_recall")


@dataclass(frozen=True)
class ProbeConfig:
    """What probes to build. Plain values only, so it is saved with the scores and can be rebuilt."""

    template: str = "niah"  # "niah" or "kv_recall"
    capabilities: tuple[str, ...] = CAPABILITIES  # single_key: one needle; multi_key: num_keys needles
    needle_types: tuple[str, ...] = NEEDLE_TYPES  # niah only: number, word, uuid
    samples: int = 6  # counterfactual pairs per sub-probe (paper: rankings stable from 6)
    context_length: int = 1024  # prompt tokens, haystack included (filled to the sentence)
    depths: tuple[float, ...] | None = None  # needle depth in [0, 1]; None: spread evenly over the samples
    num_keys: int = 4  # needles in a multi_key probe, one of which is asked for
    haystack: str = "essay"  # niah: "essay", "noise" or "files"
    haystack_files: tuple[str, ...] = ()  # text files for haystack="files"
    seed: int = 0
    max_resample: int = 200  # tries to find a same-length distractor before giving up
    kv_keys: int = 8  # kv_recall: key words k0..k{n-1}
    kv_values: int = 16  # kv_recall: value words v0..v{n-1}
    kv_filler: int = 8  # kv_recall: filler words f0..f{n-1}
    answer_lead: int = 4  # with a model: formatting tokens it may write before the answer (answer_format.py); 0 = off

    def __post_init__(self) -> None:
        for name in ("capabilities", "needle_types", "haystack_files"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.depths is not None:
            object.__setattr__(self, "depths", tuple(float(d) for d in self.depths))
            if not self.depths or any(not 0.0 <= d <= 1.0 for d in self.depths):
                raise ProbeError(f"depths must be fractions in [0, 1], got {list(self.depths)}")
        if self.template not in TEMPLATES:
            raise ProbeError(f"template must be one of {TEMPLATES}, got {self.template!r}")
        bad = [c for c in self.capabilities if c not in CAPABILITIES]
        if bad or not self.capabilities:
            raise ProbeError(f"capabilities must be a non-empty subset of {CAPABILITIES}, got {list(self.capabilities)}")
        bad = [t for t in self.needle_types if t not in NEEDLE_TYPES]
        if bad or not self.needle_types:
            raise ProbeError(f"needle_types must be a non-empty subset of {NEEDLE_TYPES}, got {list(self.needle_types)}")
        if self.haystack not in HAYSTACKS:
            raise ProbeError(f"haystack must be one of {HAYSTACKS}, got {self.haystack!r}")
        if self.answer_lead < 0:
            raise ProbeError(f"answer_lead must be >= 0, got {self.answer_lead}")
        if self.samples < 1 or self.context_length < 8:
            raise ProbeError(f"need samples >= 1 and context_length >= 8, got {self.samples} and {self.context_length}")
        if self.num_keys < 2 and "multi_key" in self.capabilities:
            raise ProbeError(f"multi_key probes need num_keys >= 2, got {self.num_keys}")
        if self.template == "kv_recall" and (self.kv_keys < self.num_keys or self.kv_values < 2 or self.kv_filler < 1):
            raise ProbeError("kv_recall needs kv_keys >= num_keys, kv_values >= 2 and kv_filler >= 1")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in known.items()})


@dataclass(frozen=True)
class Probe:
    """One counterfactual pair. Token positions are the same in both sequences.

    clean_ids / corrupt_ids: (T,) prompt + answer[:-1], T = prompt_length + len(answer) - 1
    answer / distractor:     a+ / a- token ids, same length n
    needle_span:             [start, end) of the queried needle value in the prompt
    """

    clean_ids: tuple[int, ...]
    corrupt_ids: tuple[int, ...]
    answer: tuple[int, ...]
    distractor: tuple[int, ...]
    prompt_length: int
    needle_span: tuple[int, int]
    capability: str
    subprobe: str  # "single_key/number", ... : the unit kappa counts over
    depth: float = field(default=0.5)
    lead: tuple[int, ...] = ()  # formatting tokens the scored model writes before the answer, part of the prompt

    @property
    def length(self) -> int:
        return len(self.clean_ids)

    @property
    def readout_positions(self) -> list[int]:
        """Positions whose logits predict answer token j: prompt_length - 1 + j."""
        return [self.prompt_length - 1 + j for j in range(len(self.answer))]

    def input_ids(self, corrupted: bool = False, device: torch.device | str | None = None) -> torch.Tensor:
        ids = self.corrupt_ids if corrupted else self.clean_ids
        return torch.tensor([ids], dtype=torch.long, device=device)  # (1, T)


def default_context_length(model_config: Any) -> int:
    """ProbeConfig's default prompt length, or the model's `max_position_embeddings` if that is shorter:
    probes inside the window the model was trained for (a model answers nothing far beyond it)."""
    window = getattr(model_config, "max_position_embeddings", None)
    default = ProbeConfig.__dataclass_fields__["context_length"].default
    return min(default, window) if isinstance(window, int) and window >= 8 else default


def kv_recall_words(config: ProbeConfig) -> list[str]:
    """Every word a kv_recall probe can contain (for `word_tokenizer`)."""
    return ([f"k{i}" for i in range(config.kv_keys)] + [f"v{i}" for i in range(config.kv_values)]
            + [f"f{i}" for i in range(config.kv_filler)] + ["->"])


class _Encoder:
    """`tokenizer(text, add_special_tokens=False)` with a cache (haystack sentences repeat)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.cache: dict[str, list[int]] = {}
        bos = getattr(tokenizer, "bos_token_id", None)
        with_special = tokenizer("", add_special_tokens=True)["input_ids"]
        self.prefix = [bos] if bos is not None and with_special[:1] == [bos] else []

    def __call__(self, text: str) -> list[int]:
        if text not in self.cache:
            self.cache[text] = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return self.cache[text]


def _value_pair(encode: _Encoder, make_value, rng: random.Random, tries: int, what: str) -> tuple[str, list[int], list[int]]:
    """A value and a distractor whose token ids have the same length (and differ)."""
    for _ in range(tries):
        value, other = make_value(rng), make_value(rng)
        a, b = encode(f" {value}"), encode(f" {other}")
        if value != other and len(a) == len(b) and a != b:
            return value, a, b
    raise ProbeError(
        f"could not find a {what} distractor with the same token length in "
        f"{tries} tries: this tokenizer may not tell these values apart (e.g. a word-level vocabulary without them)"
    )


def _assemble(encode: _Encoder, sentences: list[str], start: int, budget: int, needles: list[tuple[float, list[list[int]]]],
              rng: random.Random) -> tuple[list[int], tuple[int, int]]:
    """Haystack sentences from `start` (cycling) up to `budget` tokens, with needles inserted at their depths.

    needles: (depth, [before, value, after] ids); the first one is the queried needle. Returns the ids and the
    queried value's [start, end) span.
    """
    chunks: list[list[int]] = []
    used, i = 0, start
    while True:
        ids = encode(f" {sentences[i % len(sentences)]}")
        if used + len(ids) > budget or i - start > 100 * len(sentences) + budget:
            break
        chunks.append(ids)
        used += len(ids)
        i += 1
    slots: dict[int, list[int]] = {}
    for n, (depth, _) in enumerate(needles):
        slots.setdefault(round(depth * len(chunks)), []).append(n)
    out: list[int] = []
    span = (0, 0)
    for index in range(len(chunks) + 1):
        order = slots.get(index, [])
        rng.shuffle(order)
        for n in order:
            before, value, after = needles[n][1]
            out += before
            if n == 0:
                span = (len(out), len(out) + len(value))
            out += value + after
        if index < len(chunks):
            out += chunks[index]
    return out, span


def _make_probe(prompt: list[int], span: tuple[int, int], answer: list[int], distractor: list[int],
                capability: str, subprobe: str, depth: float) -> Probe:
    clean = prompt + answer[:-1]
    corrupt = list(clean)
    corrupt[span[0]:span[1]] = distractor
    return Probe(tuple(clean), tuple(corrupt), tuple(answer), tuple(distractor), len(prompt), span,
                 capability, subprobe, depth)


def _niah_probe(encode: _Encoder, config: ProbeConfig, sentences: list[str], capability: str, kind: str,
                depth: float, rng: random.Random) -> Probe:
    plural = KIND[kind]
    n_needles = 1 if capability == "single_key" else config.num_keys
    keys: list[str] = []
    while len(keys) < n_needles:
        key = needle_key(rng)
        if key not in keys:
            keys.append(key)
    value, answer, distractor = _value_pair(encode, lambda r: needle_value(kind, r), rng, config.max_resample, kind)
    values = [answer] + [encode(f" {needle_value(kind, rng)}") for _ in keys[1:]]
    before, after = NEEDLE.split("{value}")  # the shared needle sentence, its value tokenised on its own
    needles = [
        (depth if n == 0 else rng.random(),
         [encode(" " + before.format(kind=plural, key=key).rstrip()), ids, encode(after)])
        for n, (key, ids) in enumerate(zip(keys, values))
    ]
    intro = encode(INTRO.format(kind=plural) + "\n")
    question = encode("\n" + QUESTION.format(kind=plural, query=keys[0]) + " "
                      + ANSWER_PREFIX.format(kind=plural, query=keys[0]))
    fixed = len(encode.prefix) + len(intro) + len(question) + sum(len(p) for _, parts in needles for p in parts)
    budget = config.context_length - fixed
    if budget < 0:
        raise ProbeError(f"context_length={config.context_length} is too short for a {capability} {kind} probe "
                         f"(needles and question alone take {fixed} tokens)")
    body, span = _assemble(encode, sentences, rng.randrange(len(sentences)), budget, needles, rng)
    offset = len(encode.prefix) + len(intro)
    prompt = encode.prefix + intro + body + question
    return _make_probe(prompt, (span[0] + offset, span[1] + offset), answer, distractor, capability,
                       f"{capability}/{kind}", depth)


def _kv_probe(encode: _Encoder, config: ProbeConfig, capability: str, depth: float, rng: random.Random) -> Probe:
    n_pairs = 1 if capability == "single_key" else config.num_keys
    keys = rng.sample(range(config.kv_keys), n_pairs)
    values = [rng.randrange(config.kv_values) for _ in keys]
    unused = [v for v in range(config.kv_values) if v not in values] or [v for v in range(config.kv_values) if v != values[0]]
    answer, distractor = encode(f" v{values[0]}"), encode(f" v{rng.choice(unused)}")
    if len(answer) != len(distractor) or answer == distractor:
        # another distractor of the same length (e.g. v3 vs v12 with a character tokenizer)
        same = [v for v in unused if len(encode(f" v{v}")) == len(answer) and encode(f" v{v}") != answer]
        if not same:
            raise ProbeError("kv_recall: no distractor value with the same token length; use word_tokenizer(kv_recall_words(config))")
        distractor = encode(f" v{rng.choice(same)}")
    needles = [(depth if n == 0 else rng.random(), [encode(f" k{k}"), encode(f" v{v}") if n else answer, []])
               for n, (k, v) in enumerate(zip(keys, values))]
    question = encode(f" k{keys[0]} ->")
    fixed = len(encode.prefix) + len(question) + sum(len(p) for _, parts in needles for p in parts)
    budget = config.context_length - fixed
    if budget < 0:
        raise ProbeError(f"context_length={config.context_length} is too short for {n_pairs} key-value pairs")
    filler = [f"f{rng.randrange(config.kv_filler)}" for _ in range(budget)]
    body, span = _assemble(encode, filler, 0, budget, needles, rng)
    offset = len(encode.prefix)
    prompt = encode.prefix + body + question
    return _make_probe(prompt, (span[0] + offset, span[1] + offset), answer, distractor, capability,
                       f"{capability}/kv", depth)


def build_probes(tokenizer: Any, config: ProbeConfig | None = None, *, model: Any = None, progress: bool = False,
                 **overrides: Any) -> list[Probe]:
    """The probe set of `config` (fields can be overridden by keyword): for each capability and needle type,
    `samples` counterfactual pairs at depths spread over the haystack. Deterministic given `config.seed`.

    With `model` (the model the probes are for), each probe lets through the formatting tokens that model
    writes before the answer (up to `config.answer_lead`; `answer_format.py`), so that a probe is solved
    teacher-forced exactly when greedy decoding would write the answer."""
    config = ProbeConfig(**{**(config.to_dict() if config else {}), **overrides}) if overrides else (config or ProbeConfig())
    encode = _Encoder(tokenizer)
    rng = random.Random(config.seed)
    try:
        sentences = haystack_sentences(config.haystack, config.haystack_files, seed=config.seed)
    except NeedleError as err:
        raise ProbeError(str(err)) from err
    kinds: Sequence[str] = config.needle_types if config.template == "niah" else ("kv",)
    probes = []
    for capability in config.capabilities:
        for kind in kinds:
            for sample in range(config.samples):
                depths = config.depths
                depth = depths[sample % len(depths)] if depths else (sample + 0.5) / config.samples
                if config.template == "niah":
                    probes.append(_niah_probe(encode, config, sentences, capability, kind, depth, rng))
                else:
                    probes.append(_kv_probe(encode, config, capability, depth, rng))
    if model is not None and config.answer_lead:
        from hydrahead.scoring.answer_format import follow_answer_format

        probes = follow_answer_format(model, tokenizer, probes, config.answer_lead, progress=progress)
    return probes


def subprobes(probes: Sequence[Probe]) -> dict[str, dict[str, list[int]]]:
    """capability -> sub-probe -> indices of its probes (the grouping of Eq. 11)."""
    groups: dict[str, dict[str, list[int]]] = {}
    for i, probe in enumerate(probes):
        groups.setdefault(probe.capability, {}).setdefault(probe.subprobe, []).append(i)
    return groups


def batches_by_length(probes: Sequence[Probe], max_tokens: int = 16384) -> list[list[Probe]]:
    """Probes grouped by length (no padding needed), at most `max_tokens` tokens per batch."""
    groups: dict[int, list[Probe]] = {}
    for probe in probes:
        groups.setdefault(probe.length, []).append(probe)
    out = []
    for length, group in groups.items():
        size = max(1, max_tokens // length)
        out += [group[i:i + size] for i in range(0, len(group), size)]
    return out
