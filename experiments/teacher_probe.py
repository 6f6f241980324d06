"""Where is the demo teacher on the way to retrieval? Copying first, then the key match.

Loads a model directory (a teacher run's <work>/run/<phase>/final, or an exported teacher) or a training
checkpoint (<work>/run/<phase>/checkpoint.safetensors, with --tokenizer; its model config and the code identifiers
come from --recipe, by default the package's, i.e. the shipped teacher's; the `checkpoint.pt` files of runs v1-v3,
in git history, are pickles, which hydrahead no longer reads) and prints:
- copying: next-token accuracy on the first and the second copy of random spans of needle words and
  digits, joined by four separators (the second copy is predictable only by copying; a model that copies
  after one separator only has learnt a marker, not induction);
- copying of spans of code identifiers (the vocabulary of the `copy` training documents), joined by " ":
  the same induction test on words whose earlier occurrence is unique;
- retrieval under teacher forcing, per question form of `hydrahead.needles.QUESTION_FORMS`: accuracy of the
  answer tokens after a one-needle haystack (digits of a number value; the word of a word value), and a few
  greedy answers.

The " | " separator is the one of the `repeat` documents that taught teacher run v1 its shortcut
(docs/history.md section 1); every probe runs on any model with a tokenizer.

Usage:
  python experiments/teacher_probe.py /work/teacher_work/run/retrieval/final
  python experiments/teacher_probe.py /work/teacher_work/run/retrieval/checkpoint.safetensors \
      --tokenizer /work/teacher_work/tokenizer
  python experiments/teacher_probe.py CHECKPOINT.safetensors --tokenizer TOK \
      --recipe experiments/teacher_runs/v3/teacher_recipe.yaml
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import torch


def load(path: str, tokenizer_dir: str | None, recipe: dict):
    from transformers import AutoConfig, AutoModelForCausalLM

    from hydrahead.models.loading import load_model, load_tokenizer

    from hydrahead.distill.checkpoint import read_payload

    if not path.endswith(".safetensors") or Path(path).is_dir():
        return load_model(path), load_tokenizer(tokenizer_dir or path)
    tokenizer = load_tokenizer(tokenizer_dir)
    spec = dict(recipe["pretrain"]["model"])
    config = AutoConfig.for_model(spec.pop("model_type"), vocab_size=len(tokenizer), **spec)
    model = AutoModelForCausalLM.from_config(config)
    state = read_payload(Path(path))
    model.load_state_dict(state["model"])
    print(f"checkpoint at step {state['state']['step']}, {state['state']['tokens'] / 1e6:.1f}M tokens")
    return model.eval(), tokenizer


def copy_accuracy(model, tok, spans: list[str], separator: str) -> tuple[float, float]:
    """Mean next-token accuracy on the first and on the second copy of each span (span + separator + span)."""
    first = second = 0.0
    for span in spans:
        ids = tok(span + separator + span)["input_ids"]
        half = len(tok(span)["input_ids"])
        pred = model(torch.tensor([ids])).logits[0, :-1].argmax(-1)
        target = torch.tensor(ids[1:])
        first += (pred[: half - 1] == target[: half - 1]).float().mean().item() / len(spans)
        second += (pred[-half + 2:] == target[-half + 2:]).float().mean().item() / len(spans)
    return first, second


@torch.no_grad()
def main() -> None:
    from hydrahead.needles import INTRO, QUESTION_FORMS, essay_sentences, needle_key, needle_sentence, needle_value
    from hydrahead.needles import place, question, vocabulary

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--tokenizer", default=None)
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--recipe", type=Path, default=None, help="the run's teacher recipe (default: the package's)")
    a = p.parse_args()
    from hydrahead.demo.teacher_recipe import RECIPE
    from hydrahead.errors import TeacherError
    from hydrahead.utils.io import read_yaml_mapping

    recipe = read_yaml_mapping(a.recipe or RECIPE, TeacherError, "teacher recipe")  # a plain mapping: old runs' too
    model, tok = load(a.model, a.tokenizer, recipe)
    rng = random.Random(4242)
    words = vocabulary() + [str(d) for d in range(10)] * 4
    for separator in (" | ", " ", ". ", "\n"):  # " | " is the separator of the `repeat` training documents
        first, second = copy_accuracy(model, tok, [" ".join(rng.choice(words) for _ in range(40))
                                                   for _ in range(a.samples)], separator)
        print(f"copying, spans joined by {separator!r}: next-token accuracy, first copy {first:.2f}, "
              f"second copy {second:.2f}")
    from hydrahead.demo.corpus import code_split
    from hydrahead.demo.teacher_data import identifiers

    names = identifiers(code_split(recipe["corpus"]["code_bytes"])[0])
    first, second = copy_accuracy(model, tok, [" " + " ".join(rng.choice(names) for _ in range(16))
                                               for _ in range(a.samples)], "")
    print(f"copying, 16 code identifiers written twice: next-token accuracy, first copy {first:.2f}, "
          f"second copy {second:.2f}")
    sentences = essay_sentences(200, seed=4242)
    for kind in ("number", "word"):
        for form in QUESTION_FORMS:
            hits, answers = 0.0, []
            for _ in range(a.samples):
                key, value = needle_key(rng), needle_value(kind, rng)
                context = place(rng.sample(sentences, 8), [needle_sentence(kind, key, value)], [rng.random()])
                text = INTRO.format(kind=kind + "s") + "\n" + context + "\n" + question(form, kind, key, value)
                ids = tok(text)["input_ids"]
                n = len(tok(" " + value + ".")["input_ids"])
                pred = model(torch.tensor([ids])).logits[0, -n - 1:-1].argmax(-1)
                target = torch.tensor(ids[-n:])
                scored = slice(1, n - 1) if kind == "number" else slice(0, n - 1)  # digits / the word
                hits += (pred[scored] == target[scored]).float().mean().item() / a.samples
                answers.append(f"{value}->{tok.decode(pred[:-1]).strip()}")
            print(f"{kind:6s} {form:7s} teacher-forced answer accuracy {hits:.2f}   e.g. {', '.join(answers[:3])}")


if __name__ == "__main__":
    main()
