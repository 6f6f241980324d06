"""Tiny tokenizers built with `tokenizers`, wrapped for transformers: for tests and benchmarks (not shipped).

Scoring works with any Hugging Face tokenizer; these two exist so that probes can be built without a
download. `char_tokenizer` covers printable ASCII one character per token (97 ids, the vocabulary of
the tiny test models); `word_tokenizer` maps whitespace-separated words of a given list to one id each
(what the key-value recall probes of a tiny trained model need).
"""

from __future__ import annotations

import string
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

UNK = "<unk>"


def char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character: printable ASCII (95) + newline + <unk> = 97 ids."""
    chars = [c for c in string.printable if c not in "\t\r\x0b\x0c"]  # 94 visible + space + newline
    vocab = {UNK: 0, **{c: i + 1 for i, c in enumerate(chars)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")  # every character on its own
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=UNK)


def word_tokenizer(words: Iterable[str]) -> PreTrainedTokenizerFast:
    """One token per whitespace-separated word of `words` (ids in the given order after <unk>=0)."""
    vocab = {UNK: 0}
    for word in words:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=UNK)
