"""The shared needle module: scoring probes, evaluation prompts and teacher documents say the same thing."""

import random
import re
from pathlib import Path

import hydrahead
from hydrahead.needles import ANSWER_PREFIX, INTRO, QUESTION, needle_sentence, place
from tests.toy_tokenizer import char_tokenizer


def _check_prompt(text: str, kind: str) -> None:
    plural = kind + "s"
    key, value = re.search(rf"One of the special magic {plural} for (\S+) is: (\S+)\.", text).groups()
    assert needle_sentence(kind, key, value) in text
    assert text.lstrip().startswith(INTRO.format(kind=plural))
    assert text.endswith(QUESTION.format(kind=plural, query=key) + " " + ANSWER_PREFIX.format(kind=plural, query=key))


def test_probes_and_evaluation_prompts_are_built_from_the_same_templates():
    from hydrahead.eval.tasks import make_example
    from hydrahead.scoring import ProbeConfig, build_probes

    tok = char_tokenizer()
    for probe in build_probes(tok, ProbeConfig(context_length=500, samples=1, needle_types=("number", "word"),
                                               capabilities=("single_key",))):
        _check_prompt(tok.decode(probe.clean_ids[: probe.prompt_length]), probe.subprobe.split("/")[1])
    for task, kind in (("single_number", "number"), ("single_word", "word")):
        _check_prompt(make_example(task, tok, 500, 0.5).prompt, kind)


def test_training_documents_ask_in_the_evaluations_words():
    from hydrahead.demo.teacher_data import multiquery_document
    from hydrahead.needles import essay_sentences

    tok = char_tokenizer()
    docs = [multiquery_document(random.Random(i), tok, 2000, essay_sentences(50, 0)) for i in range(40)]
    asked = [re.findall(r"What are all the special magic (\w+) for (\S+) mentioned in the provided text\? "
                        r"The special magic \1 for \2 mentioned in the provided text are (\S+)\.", d) for d in docs]
    assert any(asked)
    for doc, questions in zip(docs, asked):
        for plural, key, value in questions:
            assert needle_sentence(plural[:-1], key, value) in doc  # every answer is a needle of the document


def test_place_puts_needles_at_their_depths():
    filler = [f"s{i}." for i in range(4)]
    assert place(filler, ["A", "B"], [0.0, 1.0]) == "A s0. s1. s2. s3. B"
    assert place(filler, ["A"], [0.5]) == "s0. s1. A s2. s3."


def test_no_other_module_writes_needle_prompt_text():
    root = Path(hydrahead.__file__).parent
    writers = [p.relative_to(root).as_posix() for p in root.rglob("*.py")
               if re.search(r"[\"'][^\"'\n]*special magic", p.read_text())]
    assert writers == ["needles.py"]


def test_recall_documents_repeat_spans_apart_without_a_marker():
    from hydrahead.demo.teacher_data import recall_document
    from hydrahead.needles import essay_sentences

    sentences = essay_sentences(50, 0)
    for seed in range(20):
        doc = recall_document(random.Random(seed), ["apple", "river", "7", "3"], sentences)
        assert "|" not in doc
        parts = [p for p in re.split(r"(?<=\.) ", doc) if p and p not in {s for s in sentences}]
        spans = [p for p in parts if not p.startswith("The ")]
        assert all(spans.count(s) == 2 for s in spans)  # every span appears exactly twice
        assert all(a != b for a, b in zip(spans, spans[1:]))  # never right after itself


def test_copy_documents_draw_their_spans_from_code_identifiers():
    from hydrahead.demo.teacher_data import identifiers, teacher_documents

    code = ["def parse_header(stream, limit):\n    return stream.read(limit)\n", "class TokenBuffer:\n    pass\n"]
    words = identifiers(code)
    assert words == sorted(set(words)) and {"parse_header", "TokenBuffer", "stream", "limit"} <= set(words)
    assert "def" in words and "a" not in words  # 3-15 letters
    docs = teacher_documents(None, code, counts={"copy": 5}, niah_tasks=[], max_tokens=256, seed=0)
    assert len(docs) == 5 and all(any(w in doc for w in words) for doc in docs)
