"""Evaluation fixtures: small tokenizers and tiny random teacher / hybrid checkpoints saved with one."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer
from transformers import PreTrainedTokenizerFast

import hydrahead
from hydrahead import HeadPlan, HybridOptions
from hydrahead.eval.tasks import TASKS, make_example
from tests.toy_tokenizer import char_tokenizer
from tests.conftest import make_teacher

SPECIAL = dict(pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")


def bpe_tokenizer() -> PreTrainedTokenizerFast:
    """BPE (tokens of at most 8 characters) trained in a blink on the task prompts: prompts 3-4x shorter than
    characters, so tiny models run the real templates at a few hundred tokens. Any ASCII text stays encodable."""
    chars = char_tokenizer()  # one token per character: sizes the training prompts
    corpus = []
    for name in TASKS:
        for sample in range(3):
            e = make_example(name, chars, 1024, 0.5, sample=sample, seed=99)
            corpus.append(e.prompt + " " + ", ".join(e.answers) + ".")
    backend = Tokenizer(BPE(unk_token="<unk>"))
    backend.decoder = decoders.Fuse()
    alphabet = [c for c in chars.get_vocab() if len(c) == 1]
    trainer = BpeTrainer(vocab_size=320, special_tokens=list(SPECIAL.values()), initial_alphabet=alphabet,
                         max_token_length=8, show_progress=False)
    backend.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL)


def tiny_models(tokenizer) -> dict:
    """{"teacher": plain Qwen3, "hybrid": its hybrid (one FA head per layer)}, vocabulary of `tokenizer`."""
    teacher = make_teacher("qwen3", vocab_size=len(tokenizer))
    cfg = teacher.config
    plan = HeadPlan(((0,), (2,)), cfg.num_attention_heads, cfg.num_key_value_heads)
    hybrid = hydrahead.convert(teacher, plan, HybridOptions.preset("paper", train_length=256)).eval()
    for model in (teacher, hybrid):
        # Random weights may emit EOS at once; without it every prompt generates its full budget.
        model.generation_config.eos_token_id = None
    return {"teacher": teacher, "hybrid": hybrid}



@pytest.fixture(scope="session")
def tokenizer():
    return bpe_tokenizer()


@pytest.fixture(scope="session")
def models(tokenizer):
    return tiny_models(tokenizer)


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory, tokenizer, models) -> dict[str, Path]:
    """Both models saved with the tokenizer, as `hydrahead convert` leaves them."""
    root = tmp_path_factory.mktemp("models")
    dirs = {}
    for name, model in models.items():
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        dirs[name] = root / name
    return dirs
