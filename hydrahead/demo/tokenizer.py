"""A byte-level BPE tokenizer trained on the demo corpus with `tokenizers`, wrapped for transformers.

Digits are split one per token, as in the Llama and Qwen tokenizers: a 7-digit needle value is then the
same 7 tokens wherever it appears, instead of whatever merges the code corpus happened to favour. Words
in `whole_words` (the demo's needle and haystack vocabulary) are shown to the trainer often enough to be
single tokens, so a word needle is one token to copy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL = {"eos_token": "<|endoftext|>", "pad_token": "<|pad|>"}
WHOLE_WORD_REPEATS = 300  # enough occurrences for BPE to merge every listed word at a vocabulary of 512+


def train_tokenizer(texts: Iterable[str], vocab_size: int, whole_words: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    word_list = [" " + " ".join(whole_words) + "\n"] * WHOLE_WORD_REPEATS if whole_words else []
    tok.train_from_iterator(list(texts) + word_list, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL)
