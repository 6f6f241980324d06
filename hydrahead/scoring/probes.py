"""Counterfactual needle-in-a-haystack probes, built from any Hugging Face tokenizer.

A `Probe` is a pair of token sequences that differ only in the queried needle's value: the clean
prompt x holds the answer a+, the corrupted prompt x' holds a distractor a- of the **same token length**
(checked; resampled otherwise), so every position lines up between the two runs. Both are teacher-forced
with the clean answer appended (minus its last token), so the readout positions see identical tokens
and the only difference between x and x' is the needle value (ours: the paper does not say which answer
the corrupted run is forced with). Answer positions where a+ and a- share a token (the leading space
of a character tokenizer) add zero to the readout.

Templates:
- "niah": the evaluation's RULER prompt, built by the evaluation's builder (`hydrahead.needles.prompt`
  around `needles.place`: the same text, character for character, for the same filler, needles and
  depths), a haystack (essay, noise or user files) with one needle ("single_key") or `num_keys` needles
  of different keys ("multi_key"). Needle values: number, word or uuid. Keys and values are drawn as the
  evaluation draws them (`needles.draw_keys`, `needles.distinct`): no value repeats and none is a word of
  a key or of a user's haystack files, so the corrupted prompt holds the answer nowhere, nor the clean one
  the distractor.
- "kv_recall": for tiny models with tiny vocabularies: filler words `f<i>` with key-value pairs
  `k<i> v<j>` inserted (`needles.place`), then the query `k<i> ->` answered by `v<j>`; values distinct.
  The pieces are whole words, so a `word_tokenizer(kv_recall_words(config))` gives one token per piece.

The prompt text is tokenized in three segments (`tokenizer(text, add_special_tokens=False)`): before the
queried value, the value (with its leading space), after it; so the value has the same ids in the context
and in the answer whatever the tokenizer merges, and the distractor takes exactly its place.
Sub-probes (the unit of kappa in Eq. 11) are (capability, needle type) pairs with `samples` pairs each.
"""

from __future__ import annotations

import itertools
import os
import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from hydrahead.errors import NeedleError, ProbeError, ScoringError, integer, items, shown
from hydrahead.models.shape import positions
from hydrahead.needles import (
    HAYSTACKS,
    NEEDLE_TYPES,
    PROBE_SEED_OFFSET,
    arrangement,
    distinct,
    draw_keys,
    haystack_sentences,
    needle_sentence,
    needle_value,
    place,
    prompt,
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
        # Types are checked before values (a score file or a caller's dict may hold anything): a string where a
        # list belongs would be split into characters, a float count would fail deep inside the probe builder.
        # Integers and reals of any kind (numpy's, 0-d tensors), any iterable for a list, paths for file names.
        for name in ("template", "haystack"):
            if not isinstance(getattr(self, name), str):
                raise ProbeError(f"{name} must be a string, got {shown(getattr(self, name))}")
        for name in ("samples", "context_length", "num_keys", "seed", "max_resample", "kv_keys", "kv_values",
                     "kv_filler", "answer_lead"):
            object.__setattr__(self, name, integer(getattr(self, name), name, ProbeError))
        for name, kinds, what in (("capabilities", str, "names"), ("needle_types", str, "names"),
                                  ("haystack_files", (str, os.PathLike), "file names")):
            given = items(getattr(self, name))
            if given is None or not all(isinstance(v, kinds) for v in given):
                raise ProbeError(f"{name} must be a list of {what}, got {shown(getattr(self, name))}")
            object.__setattr__(self, name, tuple(os.fspath(v) for v in given))
        if self.depths is not None:
            given = items(self.depths)
            depths = None if given is None else [_real(d) for d in given]
            if depths is None or None in depths:
                raise ProbeError(f"depths must be a list of fractions in [0, 1], got {shown(self.depths)}")
            object.__setattr__(self, "depths", tuple(depths))
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
        if self.max_resample < 1:  # -5 failed later, blaming the tokenizer
            raise ProbeError(f"max_resample must be >= 1 try, got {self.max_resample}")
        if self.samples < 1 or self.context_length < 8:
            raise ProbeError(f"need samples >= 1 and context_length >= 8, got {self.samples} and {self.context_length}")
        if self.num_keys < 2 and "multi_key" in self.capabilities:
            raise ProbeError(f"multi_key probes need num_keys >= 2, got {self.num_keys}")
        pairs = self.num_keys if "multi_key" in self.capabilities else 1
        if self.template == "kv_recall" and (self.kv_keys < pairs or self.kv_values < pairs + 1 or self.kv_filler < 1):
            raise ProbeError("kv_recall needs kv_keys >= num_keys, kv_values > num_keys (every pair's value and the "
                             "distractor distinct) and kv_filler >= 1")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeConfig:
        """The config `to_dict` wrote (keys it does not know are ignored); ProbeError for anything else."""
        if not isinstance(data, dict):
            raise ProbeError(f"probe settings must be a mapping of field to value, got {shown(data)}")
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})  # lists become tuples there


def _real(value: Any) -> float | None:
    """A number as a float (numpy's, 0-d tensors), or None for anything else (a string, a bool, a list)."""
    if isinstance(value, (bool, str, bytes)) or not hasattr(value, "__float__") or getattr(value, "ndim", 0):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


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
    # the answer's ids as the needle holds them (with their leading space), where `answer` is the model's own
    # tokenisation after its lead (unspaced, after a newline or a quote); empty: `answer` is the needle's
    needle_answer: tuple[int, ...] = ()

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
    window = positions(model_config)[0]  # a transformers config or a config.json dict
    default = ProbeConfig.__dataclass_fields__["context_length"].default
    return min(default, window) if isinstance(window, int) and window >= 8 else default


def kv_recall_words(config: ProbeConfig) -> list[str]:
    """Every word a kv_recall probe can contain (for `word_tokenizer`)."""
    return ([f"k{i}" for i in range(config.kv_keys)] + [f"v{i}" for i in range(config.kv_values)]
            + [f"f{i}" for i in range(config.kv_filler)] + ["->"])


class _Encoder:
    """`tokenizer(text, add_special_tokens=False)` with a cache (haystack sentences and values repeat; a
    whole prompt does not: `cache=False`)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.cache: dict[str, list[int]] = {}
        bos = getattr(tokenizer, "bos_token_id", None)
        with_special = tokenizer("", add_special_tokens=True)["input_ids"]
        self.prefix = [bos] if bos is not None and with_special[:1] == [bos] else []

    def __call__(self, text: str, cache: bool = True) -> list[int]:
        if not cache:
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if text not in self.cache:
            self.cache[text] = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return self.cache[text]


def _value_pair(encode: _Encoder, make_value, rng: random.Random, tries: int, what: str,
                taken: set[str]) -> tuple[str, list[int], list[int]]:
    """A value and a distractor, both new to `taken` (then added to it), whose token ids have the same
    length and differ: (value, its ids, the distractor's ids)."""
    for _ in range(tries):
        value, other = make_value(rng), make_value(rng)
        if value in taken or other in taken or value == other:
            continue
        a, b = encode(f" {value}"), encode(f" {other}")
        if len(a) == len(b) and a != b:
            taken.update((value, other))
            return value, a, b
    raise ProbeError(
        f"could not find a {what} distractor with the same token length in "
        f"{tries} tries: this tokenizer may not tell these values apart (e.g. a word-level vocabulary without them)"
    )


def _fit(encode: _Encoder, config: ProbeConfig, text, pool: list[str], value: list[int],
         what: str) -> tuple[list[int], list[int]]:
    """The prompt around the queried value, (ids before it, ids after it), with the most filler sentences
    of `pool` whose tokens fit `config.context_length`. `text(filler)` -> the prompt's text before and after
    the value with these filler sentences; the sentences' own token counts give the first guess."""
    def ids(n: int) -> tuple[list[int], list[int]]:
        return _ids(encode, text(pool[:n]))

    def fits(parts: tuple[list[int], list[int]]) -> bool:
        return len(parts[0]) + len(value) + len(parts[1]) <= config.context_length

    best = ids(0)
    if not fits(best):
        raise ProbeError(f"context_length={config.context_length} is too short for {what} (needles and question "
                         f"alone take {len(best[0]) + len(value) + len(best[1])} tokens); give a longer "
                         "--context-length, or leave such probes out (--needle-types, --capabilities, --num-keys)")
    n, used = 0, len(best[0]) + len(value) + len(best[1])
    while n < len(pool) and used + len(encode(f" {pool[n]}")) <= config.context_length:
        used += len(encode(f" {pool[n]}"))
        n += 1
    while n > 0 and not fits(candidate := ids(n)):  # joined text may take a token more than its pieces
        n -= 1
    if n:
        best = candidate
    while n < len(pool) and fits(candidate := ids(n + 1)):  # or fewer
        best, n = candidate, n + 1
    return best


def _ids(encode: _Encoder, text: tuple[str, str]) -> tuple[list[int], list[int]]:
    """The ids of the prompt's text before and after the queried value."""
    return encode.prefix + encode(text[0], cache=False), encode(text[1], cache=False)


def _split(filler: list[str], needles: list[str], depths: list[float], value: str) -> tuple[str, str]:
    """`place(filler, needles, depths)` cut around the queried value (the last " value" of needle 0):
    the text before it and after it."""
    order = arrangement(len(filler), depths)
    pieces = [*filler, *needles]
    at = order.index(len(filler))  # needle 0's place in the joined pieces
    start = sum(len(pieces[j]) + 1 for j in order[:at]) + needles[0].rindex(f" {value}")
    context = place(filler, needles, depths)
    return context[:start], context[start + len(value) + 1:]


def _make_probe(before: list[int], after: list[int], answer: list[int], distractor: list[int],
                capability: str, subprobe: str, depth: float) -> Probe:
    prompt = before + answer + after
    span = (len(before), len(before) + len(answer))
    clean = prompt + answer[:-1]
    corrupt = list(clean)
    corrupt[span[0]:span[1]] = distractor
    return Probe(tuple(clean), tuple(corrupt), tuple(answer), tuple(distractor), len(prompt), span,
                 capability, subprobe, depth)


def _niah_probe(encode: _Encoder, config: ProbeConfig, sentences: list[str], capability: str, kind: str,
                depth: float, rng: random.Random, filler_words: frozenset[str] = frozenset()) -> Probe:
    """The evaluation's prompt (`needles.prompt` around `needles.place`), keys and values drawn as the
    evaluation draws them (`needles.draw_keys` / `distinct`: no value repeats, none is a word of a key), and no
    value a word of the haystack (`filler_words`: a user's files may hold " lemon"), so the corrupted prompt
    holds the answer nowhere and the clean one the distractor nowhere."""
    n_needles = 1 if capability == "single_key" else config.num_keys
    taken: set[str] = set()
    keys = draw_keys(rng, n_needles, taken)

    def make(r: random.Random) -> str:  # redrawn while a word of the haystack (the built-in ones hold none)
        for _ in range(10_000):
            if (value := needle_value(kind, r)) not in filler_words:
                return value
        raise NeedleError(f"every {kind} value is a word of the haystack files; give other files")

    value, answer, distractor = _value_pair(encode, make, rng, config.max_resample, kind, taken)
    values = [value, *distinct(rng, make, n_needles - 1, taken)]
    needles = [needle_sentence(kind, key, v) for key, v in zip(keys, values)]
    depths = [depth] + [rng.random() for _ in keys[1:]]
    start = rng.randrange(len(sentences))
    pool = [sentences[(start + i) % len(sentences)] for i in range(config.context_length)]  # each >= 1 token

    head, tail = prompt(kind, keys[0], "\0").split("\0")  # the template around the context

    def text(filler: list[str]) -> tuple[str, str]:
        before, after = _split(filler, needles, depths, value)
        return head + before, after + tail

    before, after = _fit(encode, config, text, pool, answer, f"a {capability} {kind} probe")
    return _make_probe(before, after, answer, distractor, capability, f"{capability}/{kind}", depth)


def _kv_probe(encode: _Encoder, config: ProbeConfig, capability: str, depth: float, rng: random.Random) -> Probe:
    """Pairs "k<i> v<j>" placed among filler words (`needles.place`), then "k<i> ->": keys and values
    distinct (`needles.distinct`), the distractor a value of no pair (drawn as before the values were
    distinct: a single-pair probe is unchanged, and with it the tests' trained recall model)."""
    n_pairs = 1 if capability == "single_key" else config.num_keys
    keys = rng.sample(range(config.kv_keys), n_pairs)
    taken: set[str] = set()

    def make_value(r: random.Random) -> str:
        return f"v{r.randrange(config.kv_values)}"

    values = distinct(rng, make_value, n_pairs, taken)
    answer = encode(f" {values[0]}")
    unused = [f"v{v}" for v in range(config.kv_values) if f"v{v}" not in taken]
    distractor = encode(f" {rng.choice(unused)}")
    if len(answer) != len(distractor) or answer == distractor:
        # another distractor of the same length (e.g. v3 vs v12 with a character tokenizer)
        same = [encode(f" {v}") for v in unused if len(encode(f" {v}")) == len(answer) and encode(f" {v}") != answer]
        if not same:
            raise ProbeError("kv_recall: no distractor value with the same token length; use word_tokenizer(kv_recall_words(config))")
        distractor = rng.choice(same)
    needles = [f"k{k} {v}" for k, v in zip(keys, values)]
    depths = [depth] + [rng.random() for _ in keys[1:]]

    def text(filler: list[str]) -> tuple[str, str]:
        before, after = _split(filler, needles, depths, values[0])
        return before, after + f" k{keys[0]} ->"

    empty = _ids(encode, text([]))  # filler words are one token each: draw as many as fit
    pool = [f"f{rng.randrange(config.kv_filler)}"
            for _ in range(config.context_length - len(empty[0]) - len(answer) - len(empty[1]))]

    before, after = _fit(encode, config, text, pool, answer, f"{n_pairs} key-value pairs")
    return _make_probe(before, after, answer, distractor, capability, f"{capability}/kv", depth)


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
        # essay filler from the probes' own seeds, never the evaluation's (needles.PROBE_SEED_OFFSET)
        sentences = haystack_sentences(config.haystack, config.haystack_files, seed=PROBE_SEED_OFFSET + config.seed)
    except NeedleError as err:
        raise ProbeError(str(err)) from err
    kinds: Sequence[str] = config.needle_types if config.template == "niah" else ("kv",)
    filler_words = frozenset(part.lower() for t in sentences for w in re.findall(r"[\w-]+", t)  # lemon-tree: both
                             for part in (w, *w.split("-"))) if config.haystack == "files" else frozenset()
    probes = []
    for capability in config.capabilities:
        for kind in kinds:
            for sample in range(config.samples):
                depths = config.depths
                depth = depths[sample % len(depths)] if depths else (sample + 0.5) / config.samples
                try:
                    if config.template == "niah":
                        probes.append(_niah_probe(encode, config, sentences, capability, kind, depth, rng,
                                                  filler_words))
                    else:
                        probes.append(_kv_probe(encode, config, capability, depth, rng))
                except NeedleError as err:  # too few distinct values for the needles asked for
                    raise ProbeError(f"{capability} {kind} probes: {err}") from err
    if model is not None:
        check_probe_ids(probes, model)  # before the model runs on them
    if model is not None and config.answer_lead:
        from hydrahead.scoring.answer_format import follow_answer_format

        probes = follow_answer_format(model, tokenizer, probes, config.answer_lead, progress=progress)
    return probes


def check_probe_ids(probes: Sequence[Probe], model: Any) -> None:
    """ScoringError when a probe holds a token id the model has no embedding for (probes built with another
    model's tokenizer): an IndexError deep inside the embedding otherwise."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    vocab = getattr(embeddings, "num_embeddings", None)
    if vocab is None:  # not a causal LM: the runner says so
        return
    ids = [i for p in probes for i in itertools.chain(p.clean_ids, p.corrupt_ids, p.answer, p.distractor)]
    bad = [i for i in (min(ids, default=0), max(ids, default=0)) if not 0 <= i < vocab]
    if bad:
        raise ScoringError(f"a probe holds token id {bad[0]} but the model has {vocab} embeddings (0..{vocab - 1}): "
                           "build the probes with the model's own tokenizer")


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
