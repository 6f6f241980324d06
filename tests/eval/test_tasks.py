"""RULER task generators: prompts fill the token budget, hold their needles where asked, and are reproducible."""

import re

import pytest

from hydrahead.eval import EvalError, Haystack, make_example, make_examples, parse_tasks
from hydrahead.eval.tasks import TASKS

LENGTH = 400


@pytest.mark.parametrize("task", list(TASKS))
def test_prompt_fills_budget_and_holds_answers(tokenizer, task):
    e = make_example(task, tokenizer, LENGTH, 0.5, sample=1)
    total = len(e.input_ids) + e.max_new_tokens
    assert LENGTH - 40 < total <= LENGTH  # one more filler sentence (at most ~30 tokens) would not fit
    assert tokenizer.decode(e.input_ids) == e.prompt
    assert e.answers and all(a in e.prompt for a in e.answers)


def test_needle_sits_at_the_requested_depth(tokenizer):
    first, last = (make_example("single_number", tokenizer, 600, d) for d in (0.0, 1.0))
    (value,) = first.answers
    assert first.answers == last.answers  # same question, different hiding place
    context = lambda p: p[p.index("afterwards.\n"): p.index("\nWhat are all")]  # noqa: E731
    a, b = context(first.prompt), context(last.prompt)
    assert a.index(value) < 0.2 * len(a)
    assert b.index(value) > 0.8 * len(b)


def test_same_needles_across_grid_and_reproducible(tokenizer):
    grid = make_examples(tokenizer, ["multikey"], [300, 500], [0.0, 0.5], samples=2, seed=3)
    assert len(grid) == 2 * 2 * 2
    by_sample = {s: {e.answers for e in grid if e.sample == s} for s in (0, 1)}
    assert all(len(answers) == 1 for answers in by_sample.values())
    assert by_sample[0] != by_sample[1]
    again = make_examples(tokenizer, ["multikey"], [300, 500], [0.0, 0.5], samples=2, seed=3)
    assert again == grid
    assert make_example("multikey", tokenizer, 300, 0.0, seed=4).answers != grid[0].answers


def test_multikey_has_distractors(tokenizer):
    e = make_example("multikey", tokenizer, LENGTH, 0.5)
    needles = re.findall(r"One of the special magic numbers for (\S+) is: (\d+)\.", e.prompt)
    assert len(needles) == 4 and len({k for k, _ in needles}) == 4
    key = re.search(r"numbers for (\S+) mentioned", e.prompt)[1]
    assert [v for k, v in needles if k == key] == list(e.answers)


def test_multivalue_and_multiquery(tokenizer):
    mv = make_example("multivalue", tokenizer, LENGTH, 0.5)
    needles = re.findall(r"numbers for (\S+) is: (\d+)\.", mv.prompt)
    assert len(needles) == 4 and len({k for k, _ in needles}) == 1
    assert sorted(v for _, v in needles) == sorted(mv.answers)
    mq = make_example("multiquery", tokenizer, LENGTH, 0.5)
    needles = dict(re.findall(r"numbers for (\S+) is: (\d+)\.", mq.prompt))
    question = mq.prompt[mq.prompt.index("What are all"):]
    assert len(needles) == 4 and all(k in question for k in needles)
    assert sorted(needles.values()) == sorted(mq.answers)


def test_variable_tracking_chain(tokenizer):
    e = make_example("vt", tokenizer, LENGTH, 0.25)
    statements = re.findall(r"VAR (\w+) = (VAR \w+|\d+)\.", e.prompt)
    assert [name for name, _ in statements] == list(e.answers)
    value = statements[0][1]
    assert value.isdigit() and f"assigned the value {value}" in e.prompt
    assert all(rhs == f"VAR {prev}" for (_, rhs), (prev, _) in zip(statements[1:], statements))


@pytest.mark.parametrize("kind", ["word", "uuid"])
def test_value_types(tokenizer, kind):
    e = make_example(f"single_{kind}", tokenizer, LENGTH, 0.5)
    pattern = r"[a-z]+" if kind == "word" else r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    assert re.fullmatch(pattern, e.answers[0])
    assert f"magic {kind}s for" in e.prompt


def test_word_values_are_not_words_of_keys(tokenizer):
    for sample in range(30):
        e = make_example("single_word", tokenizer, LENGTH, 0.5, sample=sample)
        key = re.search(r"words for (\S+) mentioned", e.prompt)[1]
        assert e.answers[0] not in key.split("-")


def test_haystack_from_files(tokenizer, tmp_path):
    essay = tmp_path / "essay.txt"
    essay.write_text("Startups grow fast.  Most ideas\nlook bad at first! Why? Nobody knows.")
    e = make_example("single_number", tokenizer, LENGTH, 0.5, haystack=Haystack.from_files([essay]))
    assert "Most ideas look bad at first! Why? Nobody knows. Startups grow fast." in e.prompt
    assert "grass" not in e.prompt
    with pytest.raises(EvalError, match="not found"):
        Haystack.from_files([tmp_path / "missing.txt"])


def test_haystack_kinds(tokenizer, tmp_path):
    noise = make_example("vt", tokenizer, LENGTH, 0.5, haystack=Haystack.named("noise"))
    assert "The grass is green. The sky is blue." in noise.prompt
    essay = make_example("vt", tokenizer, 2 * LENGTH, 0.5)  # the default
    assert "grass" not in essay.prompt and essay.prompt.count(". The ") > 5
    assert Haystack.named("essay", seed=1).sentences != Haystack.named("essay", seed=2).sentences
    with pytest.raises(EvalError, match="'noise', 'essay' or 'files'"):
        Haystack.named("poems")
    with pytest.raises(EvalError, match="only read with haystack 'files'"):
        Haystack.named("noise", files=[tmp_path / "x.txt"])


def test_errors(tokenizer):
    with pytest.raises(EvalError, match="too short for task multiquery.*at least"):
        make_example("multiquery", tokenizer, 64, 0.5)
    with pytest.raises(EvalError, match="depth"):
        make_example("single_number", tokenizer, LENGTH, 1.5)
    with pytest.raises(EvalError, match="unknown task"):
        parse_tasks("single_number,needle")
    assert [t.name for t in parse_tasks("all")] == list(TASKS)
    # "all" in a list is every task (it was the first alone), and no single prompt
    assert {e.task for e in make_examples(tokenizer, ["all"], [LENGTH], [0.5], samples=1)} == set(TASKS)
    with pytest.raises(EvalError, match="make_example builds one task's prompt"):
        make_example("all", tokenizer, LENGTH, 0.5)
    with pytest.raises(EvalError, match=r"such as \['single_number'\]"):  # a name parse_tasks takes
        make_examples(tokenizer, [], [LENGTH], [0.5])
    assert [t.name for t in parse_tasks("vt, multikey")] == ["vt", "multikey"]


@pytest.mark.parametrize("lengths, depths, samples, message", [
    ([], [0.5], 1, r"lengths must be a non-empty list such as \[1024, 4096\], got \[\]"),
    (320, [0.5], 1, "lengths must be a non-empty list .*got 320"),
    ([300], [], 1, "depths must be a non-empty list"),
    ([300], [0.5], 0, "samples must be >= 1"),
    ([300], [0.5], 1.5, "samples must be an integer, got 1.5"),
    (["300"], [0.5], 1, "each length must be an integer, got '300'"),
])
def test_an_empty_or_malformed_grid_is_refused(tokenizer, lengths, depths, samples, message):
    """An empty axis or no samples gave no prompts and no error (niah then returned [])."""
    with pytest.raises(EvalError, match=message):
        make_examples(tokenizer, ["multikey"], lengths, depths, samples=samples)
    with pytest.raises(EvalError, match="tasks must be a non-empty list"):
        make_examples(tokenizer, [], [300], [0.5], samples=1)


def test_what_no_prompt_can_be_built_from_is_one_line(tokenizer, tmp_path):
    from hydrahead.eval.tasks import TaskSpec

    for kwargs, message in [({"value_type": "words"}, "value_type must be one of number, word, uuid, got 'words'"),
                            ({"keys": 0}, "keys must be >= 1, got 0"),  # an IndexError in the prompt
                            ({"keys": 2, "queries": 3}, r"queries \(3\) must be at most keys \(2\)"),
                            ({"hops": -1}, "hops must be >= 0"), ({"keys": 1.5}, "keys must be an integer")]:
        with pytest.raises(EvalError, match=f"task x: {message}"):
            TaskSpec("x", **kwargs)
    for depths, message in ((["0.5"], "each depth must be a number, got '0.5'"),
                            ([None], "each depth must be a number, got None")):
        with pytest.raises(EvalError, match=message):
            make_examples(tokenizer, ["single_number"], [LENGTH], depths, samples=1)
    # a depth is checked and passed on as given: 0 seeds its prompt's draws as make_example(depth=0) does
    assert make_examples(tokenizer, ["multikey"], [LENGTH], [0], samples=1)[0].prompt == \
        make_example("multikey", tokenizer, LENGTH, 0).prompt
    with pytest.raises(EvalError, match="haystack must be a Haystack .*got 'noise'"):
        make_examples(tokenizer, ["single_number"], [LENGTH], [0.5], samples=1, haystack="noise")
    with pytest.raises(EvalError, match="are directories: give the text files in them"):
        Haystack.from_files([tmp_path])  # was "not found"


def test_the_callers_tokenizer_is_left_as_it_was(tokenizer, models):
    from hydrahead.eval import evaluate_niah

    padding = tokenizer.padding_side
    evaluate_niah(models["teacher"], tokenizer, make_examples(tokenizer, ["single_number"], [300], [0.5], samples=1),
                  progress=False)
    assert tokenizer.padding_side == padding == "right"  # set to "left" for the batches: its own copy's


def test_a_task_length_or_depth_given_twice_is_one_cell(tokenizer):
    """`--lengths 256,256 --depths 0,0`: the report said 1 sample per cell and counted 8 (found by a review)."""
    once = make_examples(tokenizer, ["multikey"], [300], [0.5], samples=2, seed=3)
    twice = make_examples(tokenizer, ["multikey", "multikey"], [300, 300], [0.5, 0.5], samples=2, seed=3)
    assert [e.prompt for e in twice] == [e.prompt for e in once]
