import random

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from hydrahead.scoring import ProbeConfig, ProbeError, build_probes, kv_recall_words
from hydrahead.needles import essay_sentences
from hydrahead.scoring.probes import subprobes
from tests.toy_tokenizer import char_tokenizer, word_tokenizer

SMALL = dict(context_length=900, samples=2)


def bpe_tokenizer() -> PreTrainedTokenizerFast:
    """A real subword tokenizer, trained in-test: merges make token lengths of values differ."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    text = essay_sentences(300, seed=1) + [" ".join(str(random.Random(i).randrange(10**6, 10**7)) for i in range(50))]
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>"], show_progress=False,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


@pytest.mark.parametrize("make_tokenizer", [char_tokenizer, bpe_tokenizer], ids=["char", "bpe"])
def test_counterfactual_pairs_line_up(make_tokenizer):
    tok = make_tokenizer()
    probes = build_probes(tok, ProbeConfig(**SMALL))
    assert len(probes) == 2 * 3 * 2  # capabilities x needle types x samples
    for p in probes:
        start, end = p.needle_span
        assert len(p.answer) == len(p.distractor) == end - start and p.answer != p.distractor
        assert len(p.clean_ids) == len(p.corrupt_ids) == p.prompt_length + len(p.answer) - 1
        assert list(p.clean_ids[start:end]) == list(p.answer)  # the needle in the context is the answer
        assert list(p.corrupt_ids[start:end]) == list(p.distractor)
        # the two prompts differ only inside the needle span; the teacher-forced answer is the same
        assert [i for i, (a, b) in enumerate(zip(p.clean_ids, p.corrupt_ids)) if a != b] == [
            i for i in range(start, end) if p.answer[i - start] != p.distractor[i - start]]
        assert list(p.clean_ids[p.prompt_length:]) == list(p.answer[:-1])
        assert p.length <= SMALL["context_length"] + len(p.answer)
        assert p.length > 0.8 * SMALL["context_length"]  # the haystack fills the context


def test_needle_types_and_text():
    tok = char_tokenizer()
    probes = build_probes(tok, ProbeConfig(context_length=600, samples=1, capabilities=("single_key",)))
    values = {p.subprobe: tok.decode(p.answer).strip() for p in probes}
    assert values["single_key/number"].isdigit() and len(values["single_key/number"]) == 7
    assert values["single_key/word"].isalpha()
    assert [len(part) for part in values["single_key/uuid"].split("-")] == [8, 4, 4, 4, 12]
    text = tok.decode(probes[0].clean_ids)
    assert "One of the special magic numbers for" in text and text.count("special magic numbers for") == 3  # question + answer prefix name the key


def test_multi_key_has_several_needles_and_depths_spread():
    tok = char_tokenizer()
    config = ProbeConfig(context_length=900, samples=3, needle_types=("word",), num_keys=3)
    probes = build_probes(tok, config)
    multi = [p for p in probes if p.capability == "multi_key"]
    assert all(tok.decode(p.clean_ids).count("One of the special magic words for") == 3 for p in multi)
    assert [round(p.depth, 3) for p in multi] == [0.167, 0.5, 0.833]
    spans = [p.needle_span[0] / p.prompt_length for p in probes if p.capability == "single_key"]
    assert spans == sorted(spans)  # deeper needles sit later in the prompt
    assert subprobes(probes) == {"single_key": {"single_key/word": [0, 1, 2]}, "multi_key": {"multi_key/word": [3, 4, 5]}}


def test_deterministic_and_seeded():
    tok = char_tokenizer()
    a, b = build_probes(tok, **SMALL), build_probes(tok, **SMALL)
    c = build_probes(tok, **SMALL, seed=1)
    assert a == b and a != c


def test_haystack_from_files(tmp_path):
    (tmp_path / "a.txt").write_text("Alpha beta gamma. Delta epsilon!\nZeta eta theta? " * 40)
    probes = build_probes(char_tokenizer(), context_length=500, samples=1, haystack="files",
                          haystack_files=[str(tmp_path / "a.txt")], capabilities=("single_key",), needle_types=("number",))
    assert "Delta epsilon!" in char_tokenizer().decode(probes[0].clean_ids)
    with pytest.raises(ProbeError, match="not found"):
        build_probes(char_tokenizer(), haystack="files", haystack_files=[str(tmp_path / "missing.txt")])


def test_no_value_is_a_word_of_the_users_haystack(tmp_path):
    """Word values were kept out of keys and other needles only: a file holding " lemon" left the answer in
    the corrupted prompt, which weakens the counterfactual."""
    from hydrahead.needles import _WORD_VALUES

    allowed = {"bottle", "candle", "dragon", "guitar"}  # one length: a character tokenizer's pairs need it
    others = [w for w in _WORD_VALUES if w not in allowed]
    (tmp_path / "a.txt").write_text(" ".join(f"The {w}-tree sat here." for w in others) * 10)  # hyphened too
    tok = char_tokenizer()
    probes = build_probes(tok, context_length=500, samples=4, haystack="files",
                          haystack_files=[str(tmp_path / "a.txt")], capabilities=("single_key",), needle_types=("word",))
    for probe in probes:
        assert {tok.decode(probe.answer).strip(), tok.decode(probe.distractor).strip()} <= allowed


def test_kv_recall_template():
    config = ProbeConfig(template="kv_recall", context_length=20, samples=2, num_keys=3)
    tok = word_tokenizer(kv_recall_words(config))
    for p in build_probes(tok, config):
        words = tok.convert_ids_to_tokens(list(p.clean_ids))
        assert len(words) == 20 and words[-1] == "->" and "<unk>" not in words
        query = words[-2]
        assert words[p.needle_span[0] - 1] == query  # the queried pair is "k v"
        assert sum(w.startswith("k") for w in words[:-2]) == (1 if p.capability == "single_key" else 3)
        assert tok.convert_ids_to_tokens(list(p.distractor))[0] not in words  # the distractor is a fresh value


def test_corrupted_prompts_never_hold_the_answer():
    """Over many seeds: the answer value appears in no corrupted prompt, the distractor in no clean one,
    and neither is a word of a key (other needles' values were drawn without a distinctness check: ~7% of
    multi_key and ~18% of kv_recall corrupted prompts still held the answer)."""
    import re

    tok = char_tokenizer()
    for seed in range(30):
        for p in build_probes(tok, context_length=700, samples=3, needle_types=("word", "number"), seed=seed):
            answer, distractor = tok.decode(p.answer).strip(), tok.decode(p.distractor).strip()
            clean, corrupt = (tok.decode(ids[: p.prompt_length]) for ids in (p.clean_ids, p.corrupt_ids))
            word = r"(?<![\w-]){}(?![\w-])"
            assert not re.search(word.format(answer), corrupt), (seed, p.subprobe, answer)
            assert not re.search(word.format(distractor), clean), (seed, p.subprobe, distractor)
            key_words = {w for key in re.findall(r"for (\S+) is:", clean) for w in key.split("-")}
            assert len(key_words) >= 2 and not {answer, distractor} & key_words, (seed, p.subprobe)
    config = ProbeConfig(template="kv_recall", context_length=24, samples=4, num_keys=4)
    words = word_tokenizer(kv_recall_words(config))
    for seed in range(50):
        for p in build_probes(words, config, seed=seed):
            clean, corrupt = (words.convert_ids_to_tokens(list(ids[: p.prompt_length])) for ids in (p.clean_ids, p.corrupt_ids))
            values = [w for w in clean if w.startswith("v")]
            assert len(set(values)) == len(values) == (1 if p.capability == "single_key" else 4)
            assert words.convert_ids_to_tokens(list(p.answer))[0] not in corrupt, seed
            assert words.convert_ids_to_tokens(list(p.distractor))[0] not in clean, seed


def test_niah_probe_prompts_are_the_evaluations_text():
    """A probe's prompt is `needles.prompt(kind, key, needles.place(filler, needles, depths))` for its own
    filler sentences and needles: the evaluation's builder, character for character (it was assembled apart,
    with a space after the intro's newline)."""
    import re

    from hydrahead.needles import needle_sentence, prompt

    tok = char_tokenizer()
    for p in build_probes(tok, context_length=700, samples=2, haystack="noise", needle_types=("number", "word")):
        text = tok.decode(p.clean_ids[: p.prompt_length])
        kind = p.subprobe.split("/")[1]
        needles = re.findall(rf"One of the special magic {kind}s for \S+ is: \S+\.", text)
        key = re.search(rf"What are all the special magic {kind}s for (\S+) mentioned", text).group(1)
        context = text.split("\n")[1]
        pieces = re.split(r"(?<=[.!?]) ", context)
        assert [x for x in pieces if x in needles] == needles and all(
            x in needles or x in ("The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.",
                                  "There and back again.") for x in pieces)
        assert text == prompt(kind, key, " ".join(pieces))
        value = tok.decode(p.answer).strip()
        assert needle_sentence(kind, key, value) in needles  # the queried needle holds the answer


def test_probes_never_share_the_evaluations_filler():
    """Heads are chosen on probes and judged by the evaluation: the essay filler of the two comes from disjoint
    seeds (needles.PROBE_SEED_OFFSET), so no head is chosen on the text it is evaluated on. Before, both cut
    their filler from one pool, essay_sentences(4096, 0): the evaluation from its start, a probe from a random
    sentence on (the same text wherever the two ranges met)."""
    from hydrahead.needles import PROBE_SEED_OFFSET

    tok = char_tokenizer()
    evaluation = set(essay_sentences(4096, 0))  # every sentence the evaluation's default haystack can hold
    for seed in (0, 1):
        texts = [tok.decode(p.clean_ids) for p in build_probes(tok, ProbeConfig(**SMALL, seed=seed))]
        # the filler sentences ("The quiet river follows ..."; no template or needle sentence starts so)
        sentences = [s + "." for text in texts for s in text.replace("\n", " ").split(". ")[1:-1]
                     if s.startswith("The ")]
        own = set(essay_sentences(4096, PROBE_SEED_OFFSET + seed))
        assert len(sentences) > 40 and all(s in own for s in sentences)
        assert not own & evaluation and not any(s in evaluation for s in sentences)


@pytest.mark.parametrize("kwargs, match", [
    (dict(context_length=100), "too short"),
    (dict(needle_types=("date",)), "needle_types"),
    (dict(capabilities=("multi_value",)), "capabilities"),
    (dict(depths=(1.5,)), "depths"),
    (dict(template="qa"), "template"),
    (dict(haystack="files"), "needs at least one text file"),
    (dict(template="kv_recall", num_keys=4, kv_values=4), "kv_values > num_keys"),
    (dict(max_resample=-5), "max_resample must be >= 1 try, got -5"),  # blamed the tokenizer
])
def test_bad_probe_settings(kwargs, match):
    with pytest.raises(ProbeError, match=match):
        build_probes(char_tokenizer(), **{**SMALL, **kwargs})


@pytest.mark.parametrize("data, match", [
    ({"samples": 6.0}, r"samples must be an integer, got 6.0 \(a float\)"),
    ({"answer_lead": True}, "answer_lead must be an integer, got True"),
    ({"capabilities": "single_key"}, r"capabilities must be a list of names, got 'single_key' \(a string\)"),
    ({"haystack_files": [3]}, "haystack_files must be a list of file names"),
    ({"depths": ["0.5"]}, "depths must be a list of fractions"),
    ({"template": None}, "template must be a string, got None"),
    (["niah"], r"probe settings must be a mapping .* \(a list\)"),
])
def test_saved_probe_settings_of_the_wrong_type_are_named(data, match):
    """A score file's probe settings (or a caller's dict) with a value of the wrong type: one ProbeError naming
    the field, not a TypeError from inside the probe builder, nor a string split into characters."""
    with pytest.raises(ProbeError, match=match):
        ProbeConfig.from_dict(data)
    assert ProbeConfig.from_dict(ProbeConfig(samples=3).to_dict()) == ProbeConfig(samples=3)


def test_probe_settings_take_numpy_numbers_any_iterable_and_paths():
    from pathlib import Path

    import numpy as np

    config = ProbeConfig(samples=np.int64(4), depths=np.linspace(0.0, 1.0, 3), capabilities={"single_key"},
                         haystack="files", haystack_files=[Path("a.txt")])
    assert config == ProbeConfig(samples=4, depths=(0.0, 0.5, 1.0), capabilities=("single_key",), haystack="files",
                                 haystack_files=("a.txt",))
    assert type(config.samples) is int and ProbeConfig.from_dict(config.to_dict()) == config
    import torch

    assert ProbeConfig(samples=torch.tensor(3), depths=torch.tensor([0.0, 0.5])) == ProbeConfig(samples=3,
                                                                                             depths=(0.0, 0.5))
    for bad in (dict(depths=np.array(0.5)), dict(depths=[10**400]), dict(samples=np.float64(4.0))):
        with pytest.raises(ProbeError, match="must be"):  # a 0-d array is no list, a huge int no fraction
            ProbeConfig(**bad)


def test_tokenizer_that_cannot_make_distractors():
    words = word_tokenizer("the magic number for is".split())  # every value is <unk>
    with pytest.raises(ProbeError, match="same token length"):
        build_probes(words, context_length=200, samples=1, needle_types=("number",), capabilities=("single_key",))
