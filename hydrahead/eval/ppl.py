"""Perplexity by position on long documents: does quality hold past the training length?

Each document long enough is cut to its first `length` tokens and scored in one pass: the NLL of token t
given tokens < t, for t = 1 .. length-1, summed into position buckets [0, b), [b, 2b), ... With
`chunk_size`, the pass runs as a prefill of `chunk_size` tokens at a time that carries the model's cache
(hybrid or plain), which gives the same numbers with activations and logits of one chunk in memory;
without it, one forward of the whole document. Documents shorter than `length` are skipped (and counted).

Bucket perplexity = exp(sum of NLL in the bucket / tokens in the bucket), over all documents.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from hydrahead.errors import EvalError, integer, shown
from hydrahead.eval.niah import check_models
from hydrahead.models.loading import check_vocabulary
from hydrahead.models.shape import check_positions
from hydrahead.utils.io import read_text

TEXT_SUFFIXES = (".txt", ".md")


@dataclass(frozen=True)
class Document:
    name: str
    text: str


@dataclass
class PerplexityResult:
    """Per-bucket NLL of one model over the documents: a raw result of the report."""

    model: str
    length: int
    bucket: int  # tokens per position bucket
    documents: list[str]  # names of the documents scored
    skipped: list[str]  # names of the documents shorter than `length`
    nll_sum: list[float]  # per bucket, summed over documents
    tokens: list[int]  # per bucket, predicted tokens counted
    per_document: list[list[float]] = field(default_factory=list)  # mean NLL per bucket, one row per document

    @property
    def buckets(self) -> list[tuple[int, int]]:
        return [(i * self.bucket, min((i + 1) * self.bucket, self.length)) for i in range(len(self.tokens))]

    @property
    def ppl(self) -> list[float]:
        return [math.exp(s / n) if n else float("nan") for s, n in zip(self.nll_sum, self.tokens)]

    @property
    def overall_ppl(self) -> float:
        return math.exp(sum(self.nll_sum) / max(1, sum(self.tokens)))


def load_documents(paths: Iterable[str | Path]) -> list[Document]:
    """Text documents from files and directories.

    A .txt or .md file is one document; a .jsonl file holds one JSON object per line with a "text" field; a
    directory contributes its .txt, .md and .jsonl files (sorted).
    """
    files: list[Path] = []
    missing = []
    if isinstance(paths, (str, Path)):  # one path, not its characters
        paths = [paths]
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.iterdir() if f.suffix in (*TEXT_SUFFIXES, ".jsonl")))
        elif p.is_file():
            if p.suffix not in (*TEXT_SUFFIXES, ".jsonl"):
                raise EvalError(f"data file {p} has an unsupported type {p.suffix!r}; use "
                                f"{', '.join((*TEXT_SUFFIXES, '.jsonl'))} files")
            files.append(p)
        else:
            missing.append(str(p))
    if missing:
        raise EvalError(f"data file(s) not found: {', '.join(missing)}")
    docs = []
    for f in files:
        if f.suffix != ".jsonl":
            docs.append(Document(f.name, read_text(f, EvalError, "data file")))
            continue
        for n, line in enumerate(read_text(f, EvalError, "data file").splitlines()):
            if not line.strip():
                continue
            try:
                text = json.loads(line)["text"]
            except (ValueError, RecursionError, KeyError, TypeError) as err:  # ValueError: JSON's
                raise EvalError(f"{f}:{n + 1}: expected a JSON object with a 'text' field ({err!r})") from err
            if not isinstance(text, str):
                raise EvalError(f"{f}:{n + 1}: 'text' must be a string, got {json.dumps(text)[:40]}")
            docs.append(Document(f"{f.name}:{n + 1}", text))
    if not docs:
        found = (f"{', '.join(f.name for f in files[:3])}{' ...' if len(files) > 3 else ''} "
                 f"hold{'s' if len(files) == 1 else ''} no text"
                 if files else f"expected {', '.join((*TEXT_SUFFIXES, '.jsonl'))} files")
        raise EvalError(f"no documents in {', '.join(map(str, paths))} ({found})")
    return docs


@torch.no_grad()
def token_nll(model: Any, input_ids: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
    """(T-1,) float32 NLL of input_ids[t] given input_ids[:t], for one sequence input_ids (T,)."""
    ids = input_ids.to(next(model.parameters()).device)[None]  # (1, T)
    T = ids.shape[1]
    if chunk_size is None or chunk_size >= T:
        logits = model(ids, use_cache=False).logits[0, :-1]  # (T-1, V)
        return F.cross_entropy(logits.float(), ids[0, 1:], reduction="none").cpu()
    out, cache = [], None
    for start in range(0, T - 1, chunk_size):
        end = min(start + chunk_size, T - 1)  # logits at positions start..end-1 predict tokens start+1..end
        step = model(ids[:, start:end], past_key_values=cache, use_cache=True)
        cache = step.past_key_values
        out.append(F.cross_entropy(step.logits[0].float(), ids[0, start + 1: end + 1], reduction="none").cpu())
    return torch.cat(out)


def default_bucket(length: int) -> int:
    """8 buckets per document (1k buckets at 8k), at least 2 positions each (position 0 is never predicted, so a
    first bucket of 1 would hold no token)."""
    return max(2, length // 8)


def check_bucket(bucket: int | None, what: str = "bucket") -> None:
    """EvalError for a bucket of one position: position 0 is never predicted, so the first bucket would hold no
    token (a NaN in every report). `what`: its name for the message (the CLI's flag)."""
    if bucket == 1:
        raise EvalError(f"{what} must be >= 2 positions: position 0 is never predicted, so a first bucket of 1 "
                        "position would hold no token")


def check_length(length: int) -> None:
    """EvalError unless `length` tokens hold a prediction (the first token is only context)."""
    if integer(length, "length", EvalError) < 2:
        raise EvalError(f"length must be at least 2 tokens, got {length}")


def evaluate_perplexity(
    model: Any,
    tokenizer: Any,
    documents: Sequence[Document],
    length: int,
    bucket: int | None = None,
    chunk_size: int | None = None,
    max_documents: int | None = None,
    label: str = "model",
    progress: bool = True,
) -> PerplexityResult:
    """NLL by position bucket of one model on the first `length` tokens of each long-enough document."""
    check_length(length)
    for what, value in (("bucket", bucket), ("chunk_size", chunk_size), ("max_documents", max_documents)):
        if value is not None and integer(value, what, EvalError) < 1:  # bucket 0 took the default; 0 documents
            raise EvalError(f"{what} must be >= 1 (or None), got {value}")  # blamed the documents' length
    check_bucket(bucket)
    if bad := [d for d in documents if not isinstance(d, Document)][:1]:
        raise EvalError(f"documents must be Document(name, text) items (load_documents(paths) makes them), got "
                        f"{shown(bad[0])}")
    check_vocabulary(tokenizer, model.config, getattr(tokenizer, "name_or_path", None), EvalError)
    check_positions(model.config, length, "length", label)
    bucket = bucket or default_bucket(length)
    n_buckets = (length - 1) // bucket + 1  # predicted positions are 1 .. length-1
    index = torch.div(torch.arange(1, length), bucket, rounding_mode="floor")  # (length-1,) bucket of each
    result = PerplexityResult(label, length, bucket, [], [], [0.0] * n_buckets, [0] * n_buckets)
    counts = torch.bincount(index, minlength=n_buckets)
    longest = 0  # tokens of the longest document skipped, for the error below
    for doc in tqdm(documents, desc=f"ppl {label}", unit="doc", disable=not progress):
        if max_documents is not None and len(result.documents) >= max_documents:
            break
        ids = tokenizer(doc.text, add_special_tokens=True)["input_ids"]
        if len(ids) < length:
            result.skipped.append(doc.name)
            longest = max(longest, len(ids))
            continue
        nll = token_nll(model, torch.tensor(ids[:length]), chunk_size)  # (length-1,)
        sums = torch.zeros(n_buckets, dtype=torch.float64).index_add_(0, index, nll.double())
        result.documents.append(doc.name)
        result.per_document.append((sums / counts).tolist())
        result.nll_sum = [a + b for a, b in zip(result.nll_sum, sums.tolist())]
        result.tokens = [a + int(b) for a, b in zip(result.tokens, counts)]
    if not result.documents:
        raise EvalError(
            f"no document has {length} tokens"
            + (f" ({len(result.skipped)} shorter skipped, the longest {longest} tokens)" if result.skipped else "")
            + "; give longer documents or a smaller --length"
        )
    return result


def perplexity(
    models: Mapping[str, Any],
    tokenizer: Any,
    documents: Sequence[Document],
    length: int,
    bucket: int | None = None,
    chunk_size: int | None = None,
    max_documents: int | None = None,
    progress: bool = True,
) -> list[PerplexityResult]:
    """`evaluate_perplexity` for every model in `models` (label -> model), on the same documents."""
    check_models(models)
    return [
        evaluate_perplexity(model, tokenizer, documents, length, bucket, chunk_size, max_documents, label, progress)
        for label, model in models.items()
    ]
