"""Let a model's own answer formatting through before a probe's teacher-forced answer.

A probe's prompt ends with the answer prefix ("... mentioned in the provided text are") and its answer is
the needle value (" 8056020"). A model trained on exactly that format continues with the value; a real
instruct model often writes a few formatting tokens first (": 8056020", a quote, a newline), so a probe
that teacher-forces " 8056020" right after the prefix reads its logits at positions where the model is
about to write ":" and counts a model that retrieves every needle as solving none (measured on
SmolLM2-135M-Instruct: 0 of 16 probes teacher-forced, 100% answered in `eval niah`).

`follow_answer_format` decodes greedily from each clean prompt for at most `max_tokens` steps and stops
where the model's next token is the answer's first token, with its leading space (" 805") or without it
("805", what BPE writes after a newline or a quote; the answer and distractor are then tokenised so, when
they keep one length). When every token written before it is
formatting (its text has no letter or digit, but for a list's first marker: ":\n1."), those tokens become the probe's `lead`: they are appended
to the prompt of both the clean and the corrupted run (positions still line up), and the readout positions
move past them. Otherwise (the model writes words, or never reaches the answer) the probe is left as it
is: the model does not answer it, and the probe says so. The lead is chosen on the clean run of the model
that is scored, with nothing ablated, so ablation and patching are measured at the positions where this
model writes the value.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection, Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from hydrahead.scoring.probes import Probe


_LIST_MARKER = re.compile(r"(^|\n)[ \t]*\d{1,2}[.)][ \t]*$")  # "\n1." before the first item of a list


def is_formatting(text: str) -> bool:
    """Text with no letter or digit (punctuation, whitespace, markup), except a list's first marker ("\n1.")."""
    return not any(c.isalnum() for c in _LIST_MARKER.sub(r"\1", text))


@torch.no_grad()
def model_lead(model: nn.Module, prompt: Sequence[int], firsts: Collection[int],
               max_tokens: int) -> tuple[list[int], int] | None:
    """(the tokens `model` writes greedily after `prompt` before one of `firsts`, that token), or None when it
    writes none of them within `max_tokens` steps."""
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt)], device=device)  # (1, T)
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
    lead: list[int] = []
    for step in range(max_tokens + 1):
        token = int(out.logits[0, -1].argmax())
        if token in firsts:
            return lead, token
        if step == max_tokens:
            break
        lead.append(token)
        out = model(input_ids=torch.tensor([[token]], device=device), past_key_values=out.past_key_values,
                    use_cache=True)
    return None


def with_lead(probe: Probe, lead: Sequence[int], answer: Sequence[int] | None = None,
              distractor: Sequence[int] | None = None) -> Probe:
    """`probe` with `lead` written between its prompt and its answer, in the clean and the corrupted run, and
    (optionally) the answer and distractor tokenised as the model writes them after the lead."""
    lead = tuple(int(t) for t in lead)
    answer = tuple(answer or probe.answer)
    distractor = tuple(distractor or probe.distractor)
    if not lead and answer == probe.answer:
        return probe
    n = probe.prompt_length
    needle_answer = probe.needle_answer or (probe.answer if answer != probe.answer else ())
    return dataclasses.replace(
        probe, clean_ids=probe.clean_ids[:n] + lead + answer[:-1], corrupt_ids=probe.corrupt_ids[:n] + lead + answer[:-1],
        answer=answer, distractor=distractor, prompt_length=n + len(lead), lead=lead, needle_answer=needle_answer)


def _unspaced(tokenizer: Any, ids: Sequence[int]) -> tuple[int, ...]:
    """A value's ids without its leading space (how BPE writes it after a newline or a quote)."""
    return tuple(tokenizer(tokenizer.decode(list(ids)).lstrip(), add_special_tokens=False)["input_ids"])


def follow_answer_format(model: nn.Module, tokenizer: Any, probes: Sequence[Probe], max_tokens: int = 4,
                         progress: bool = False) -> list[Probe]:
    """Each probe with the formatting tokens `model` writes before the answer (module docstring)."""
    out = []
    for probe in tqdm(probes, desc="answer format", disable=not progress):
        forms = {probe.answer[0]: (probe.answer, probe.distractor)}  # first token -> (answer, distractor)
        answer, distractor = _unspaced(tokenizer, probe.answer), _unspaced(tokenizer, probe.distractor)
        if answer and len(answer) == len(distractor) and answer != distractor and answer[0] not in forms:
            forms[answer[0]] = (answer, distractor)
        found = model_lead(model, probe.clean_ids[:probe.prompt_length], forms, max_tokens)
        if found is not None and (not found[0] or is_formatting(tokenizer.decode(found[0]))):
            probe = with_lead(probe, found[0], *forms[found[1]])
        out.append(probe)
    return out
