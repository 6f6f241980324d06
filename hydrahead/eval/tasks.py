"""RULER-style retrieval tasks: needle-in-a-haystack (NIAH) variants and variable tracking.

`make_example(task, tokenizer, length, depth, sample)` builds one prompt whose tokens plus the tokens it
may generate fit in `length`, with the answers a correct model must produce. Templates follow RULER
(Hsieh et al., 2024); the prompt ends with RULER's answer prefix, so a base model answers by continuing it.

| task          | hidden in the haystack                                  | asked for                       |
|---------------|---------------------------------------------------------|---------------------------------|
| single_number | 1 needle "...magic numbers for {key} is: {7 digits}."   | its value                       |
| single_word   | 1 needle, the value a word                              | its value                       |
| single_uuid   | 1 needle, the value a UUID                              | its value                       |
| multikey      | 4 needles with different keys (3 distractors)           | the value of one key            |
| multivalue    | 4 needles with the same key                             | all 4 values                    |
| multiquery    | 4 needles with different keys                           | the values of all 4 keys        |
| vt            | "VAR A = 12345." then "VAR B = VAR A." ... (4 hops)     | every variable holding 12345    |

Depth: the first needle that is asked for goes at `depth` of the haystack (0 = start, 1 = end); the other
needles go at seeded random depths. For `vt` the chain starts at `depth` and its hops are spread evenly from
there to the end. Needle content depends only on (seed, task, sample): every cell of a depth x length grid
asks the same question, only the hiding place and the amount of haystack around it change.

The haystack is generated prose-like sentences ("essay", the default, our stand-in for RULER's Paul Graham
essays), RULER's noise ("The grass is green. The sky is blue. ...") repeated, or the sentences of text files
(e.g. the essays themselves); it is cycled
as often as the length needs. Haystack sentences, needle keys and needle values come from
`hydrahead.needles`, shared with the head-scoring probes and the demo teacher's training documents; so
are the needle sentence, the question and answer prefix, and the placement of needles in the haystack. Word values never repeat a word of a key,
so echoing the question cannot score.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydrahead.errors import EvalError, HydraHeadError, integer, items, number, shown
from hydrahead.needles import (KIND, NEEDLE_TYPES, PROMPT, distinct, draw_keys, haystack_sentences, needle_sentence,
                               needle_value, place)

VT_TEMPLATE = (
    "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\n"
    "Question: Find all variables that are assigned the value {value} in the text above."
    " Answer: According to the chain(s) of variable assignment in the text above, {count} variables are "
    "assigned the value {value}, they are: "
)


@dataclass(frozen=True)
class TaskSpec:
    """One retrieval task. NIAH tasks hide `keys` x `values_per_key` needles; `hops > 0` makes it variable tracking."""

    name: str
    value_type: str = "number"  # needle values: "number" (7 digits), "word" or "uuid"
    keys: int = 1  # distinct keys hidden
    values_per_key: int = 1  # > 1: multi-value (all values of the asked key are expected)
    queries: int = 1  # keys asked for (the first `queries` keys); the rest are distractors
    hops: int = 0  # > 0: variable tracking, a chain of this many `VAR B = VAR A` re-assignments

    def __post_init__(self) -> None:
        """EvalError for a spec no prompt can be built from (a KeyError or IndexError deep in the prompt)."""
        if self.value_type not in NEEDLE_TYPES:
            raise EvalError(f"task {self.name}: value_type must be one of {', '.join(NEEDLE_TYPES)}, got "
                            f"{shown(self.value_type)}")
        for what in ("keys", "values_per_key", "queries"):
            if integer(getattr(self, what), f"task {self.name}: {what}", EvalError) < 1:
                raise EvalError(f"task {self.name}: {what} must be >= 1, got {getattr(self, what)}")
        if self.queries > self.keys:
            raise EvalError(f"task {self.name}: queries ({self.queries}) must be at most keys ({self.keys})")
        if integer(self.hops, f"task {self.name}: hops", EvalError) < 0:
            raise EvalError(f"task {self.name}: hops must be >= 0, got {self.hops}")


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("single_number"),
        TaskSpec("single_word", value_type="word"),
        TaskSpec("single_uuid", value_type="uuid"),
        TaskSpec("multikey", keys=4),
        TaskSpec("multivalue", values_per_key=4),
        TaskSpec("multiquery", keys=4, queries=4),
        TaskSpec("vt", hops=4),
    )
}


@dataclass(frozen=True)
class Example:
    """One prompt of the grid. `len(input_ids) + max_new_tokens <= length`."""

    task: str
    length: int  # token budget: prompt plus generation (RULER's max_seq_length)
    depth: float  # where the first asked needle sits, 0 (start) .. 1 (end)
    sample: int  # sample index within the (task, length, depth) cell
    prompt: str
    input_ids: tuple[int, ...]
    answers: tuple[str, ...]  # every string a right answer contains
    max_new_tokens: int


class Haystack:
    """Filler sentences, cycled as often as needed."""

    def __init__(self, sentences: Sequence[str], name: str) -> None:
        sentences = tuple(" ".join(s.split()) for s in sentences)
        sentences = tuple(s for s in sentences if s)
        if not sentences:
            raise EvalError(f"haystack {name!r} has no text")
        self.sentences, self.name = sentences, name

    @classmethod
    def noise(cls) -> Haystack:
        """RULER's repeated noise passage."""
        return cls(haystack_sentences("noise"), "noise")

    @classmethod
    def essay(cls, seed: int = 0) -> Haystack:
        """Generated prose-like sentences ("The quiet river follows ..."), our stand-in for RULER's essays."""
        return cls(haystack_sentences("essay", seed=seed), "essay")

    @classmethod
    def from_files(cls, paths: Iterable[str | Path]) -> Haystack:
        """Sentences of the given text files, in order (e.g. Paul Graham essays, as in RULER)."""
        paths = [Path(p) for p in paths]
        if folders := [str(p) for p in paths if p.is_dir()]:
            raise EvalError(f"haystack file(s) {', '.join(folders)} are directories: give the text files in them")
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise EvalError(f"haystack file(s) not found: {', '.join(missing)}")
        try:
            return cls(haystack_sentences("files", files=paths), name="+".join(p.name for p in paths))
        except HydraHeadError as err:
            raise EvalError(str(err)) from err

    @classmethod
    def named(cls, kind: str, files: Sequence[str | Path] = (), seed: int = 0) -> Haystack:
        """"noise", "essay" or "files" (with `files`)."""
        if kind == "files":
            return cls.from_files(files)
        if files:
            raise EvalError(f"haystack files are only read with haystack 'files', not {kind!r}")
        makers = {"noise": cls.noise, "essay": lambda: cls.essay(seed)}
        if kind not in makers:
            raise EvalError(f"haystack must be 'noise', 'essay' or 'files', got {kind!r}")
        return makers[kind]()

    def take(self, n: int) -> list[str]:
        return [self.sentences[i % len(self.sentences)] for i in range(n)]


def parse_tasks(names: str | Iterable[str]) -> list[TaskSpec]:
    """"single_number,vt" or a list of names (or "all") -> task specs, with a clear error for unknown names."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = list(names)
    if names == ["all"]:
        return list(TASKS.values())
    unknown = [n for n in names if n not in TASKS]
    if not names:
        raise EvalError(f"no task named; choose from {', '.join(TASKS)} (or 'all')")
    if unknown:
        raise EvalError(f"unknown task(s) {unknown}; choose from {', '.join(TASKS)} (or 'all')")
    return [TASKS[n] for n in dict.fromkeys(names)]  # a name given twice: once


def _and_join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + ", and " + items[-1]


def _needles(spec: TaskSpec, seed: int, sample: int) -> tuple[list[str], tuple[str, ...], dict[str, Any]]:
    """(needle sentences, answers, template fields). The first needle is the one placed at `depth`."""
    rng = random.Random(f"{seed}/{spec.name}/{sample}")
    taken: set[str] = set()
    if spec.hops:
        value = str(rng.randint(10_000, 99_999))
        names = distinct(rng, lambda r: "".join(r.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZ", k=5)), spec.hops + 1, taken)
        needles = [f"VAR {names[0]} = {value}."] + [f"VAR {b} = VAR {a}." for a, b in zip(names, names[1:])]
        return needles, tuple(names), {"value": value, "count": len(names)}
    kind = KIND[spec.value_type]
    keys = draw_keys(rng, spec.keys, taken)  # a word value is never part of a key
    values = [distinct(rng, lambda r: needle_value(spec.value_type, r), spec.values_per_key, taken) for _ in keys]
    needles = [needle_sentence(spec.value_type, k, v) for k, vs in zip(keys, values) for v in vs]
    answers = tuple(v for vs in values[: spec.queries] for v in vs)
    return needles, answers, {"kind": kind, "query": _and_join(keys[: spec.queries])}


def _depths(spec: TaskSpec, n: int, depth: float, rng: random.Random) -> list[float]:
    if spec.hops:  # the chain runs from `depth` to the end, evenly spaced
        return [depth + (1.0 - depth) * i / spec.hops for i in range(n)]
    return [depth] + [rng.random() for _ in range(n - 1)]


def _token_ids(tokenizer: Any, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def generation_budget(answer_tokens: int) -> int:
    """Tokens a model may generate: the answers in the expected format plus room for a few extra words."""
    return answer_tokens + max(8, answer_tokens // 2)


def make_example(
    task: str | TaskSpec,
    tokenizer: Any,
    length: int,
    depth: float,
    sample: int = 0,
    seed: int = 0,
    haystack: Haystack | None = None,
) -> Example:
    """One prompt of `task` for `tokenizer` that, with its generation budget, fills `length` tokens."""
    if task == "all":  # parse_tasks' first task alone would pass for it
        raise EvalError("make_example builds one task's prompt: give one task name (make_examples takes 'all')")
    spec = task if isinstance(task, TaskSpec) else parse_tasks([task])[0]
    if not 0.0 <= depth <= 1.0:
        raise EvalError(f"depth must be in [0, 1], got {depth}")
    haystack = haystack or Haystack.essay(seed)
    needles, answers, fields = _needles(spec, seed, sample)
    depths = _depths(spec, len(needles), depth, random.Random(f"{seed}/{spec.name}/{sample}/{length}/{depth}"))
    template = VT_TEMPLATE if spec.hops else PROMPT
    max_new = generation_budget(len(_token_ids(tokenizer, " " + ", ".join(answers) + ".", special=False)))
    budget = length - max_new

    def prompt_with(n: int) -> tuple[str, list[int]]:
        prompt = template.format(context=place(haystack.take(n), needles, depths), **fields)
        return prompt, _token_ids(tokenizer, prompt, special=True)

    best = prompt_with(0)
    if len(best[1]) > budget:
        raise EvalError(
            f"length {length} is too short for task {spec.name}: the template and needles take {len(best[1])} "
            f"tokens and the answer needs {max_new} more; use a length of at least {len(best[1]) + max_new}"
        )
    # Most filler sentences that fit: double until over budget, then bisect (token counts grow with n).
    lo, hi = 0, 1
    while len((candidate := prompt_with(hi))[1]) <= budget:
        if len(candidate[1]) <= len(best[1]):
            raise EvalError(f"the tokenizer does not encode more haystack into more tokens ({len(best[1])} "
                            f"tokens for {lo} and for {hi} sentences); is it truncating or empty?")
        lo, best, hi = hi, candidate, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        candidate = prompt_with(mid)
        if len(candidate[1]) <= budget:
            lo, best = mid, candidate
        else:
            hi = mid
    prompt, ids = best
    return Example(spec.name, length, float(depth), sample, prompt, tuple(ids), answers, max_new)


def _axis(values: Any, what: str, example: str) -> list:
    """One axis of the NIAH grid as a list without repeats; EvalError when it is empty or not a list (an empty
    axis gave no prompts and no error)."""
    given = items(values)
    if not given:
        raise EvalError(f"{what} must be a non-empty list such as {example}, got {shown(values)}")
    return list(dict.fromkeys(given))


def make_examples(
    tokenizer: Any,
    tasks: Iterable[str | TaskSpec],
    lengths: Iterable[int],
    depths: Iterable[float],
    samples: int = 4,
    seed: int = 0,
    haystack: Haystack | None = None,
    progress: bool = False,
) -> list[Example]:
    """The full grid: every task x length x depth x sample (`progress`: a bar over the prompts built). A task,
    length or depth given twice is one cell of the grid (its prompts would be the same ones again)."""
    from tqdm.auto import tqdm

    specs = list(dict.fromkeys(spec for t in _axis(tasks, "tasks", "['single_number']")  # "all": every task
                               for spec in ([t] if isinstance(t, TaskSpec) else parse_tasks([t]))))
    lengths = [integer(n, "each length", EvalError) for n in _axis(lengths, "lengths", "[1024, 4096]")]
    depths = _axis(depths, "depths", "[0.0, 0.5, 1.0]")
    for d in depths:  # checked, and passed on as given: a depth seeds its prompt's draws by its text (0, not 0.0)
        number(d, "each depth", EvalError)
    if haystack is not None and not isinstance(haystack, Haystack):
        raise EvalError(f"haystack must be a Haystack (Haystack.named('noise'), Haystack.essay(), "
                        f"Haystack.from_files(paths)) or None, got {shown(haystack)}")
    if integer(samples, "samples", EvalError) < 1:  # 0 gave no prompts and no error
        raise EvalError(f"samples must be >= 1 per cell of the grid, got {samples}")
    haystack = haystack or Haystack.essay(seed)
    grid = [(spec, length, depth, sample) for spec in specs for length in lengths for depth in depths
            for sample in range(samples)]
    return [make_example(spec, tokenizer, length, depth, sample, seed, haystack)
            for spec, length, depth, sample in tqdm(grid, desc="building prompts", unit="prompt", disable=not progress)]
