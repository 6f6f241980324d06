"""Training data: local text / JSONL / Parquet files -> tokens -> fixed-length packed sequences -> batches.

Documents are read with `datasets` (streaming readers, so nothing is copied into its cache), tokenised
with the teacher's tokenizer, and joined into one stream with EOS after every document (the document
boundary); the stream is cut into sequences of the stage's length. Attention is not masked at document
boundaries (standard packed pre-training); the EOS token marks them.

Two sources of sequences, one protocol (`iter_from(start)` yields the global sequence order from index
`start`, each sequence its real tokens only, at most `seq_len` of them):
  PackedCorpus    (data.streaming = false) the token stream is written once to a cache file and memory
                  mapped; epoch e visits all sequences in a permutation seeded by (seed, stage, e), so
                  any position is reached by arithmetic.
  StreamingPacked (data.streaming = true) documents pass through datasets' shuffle buffer and are packed
                  on the fly; a resumed run re-reads and skips the consumed prefix (exact, but it costs
                  the tokenisation of that prefix).
`BatchLoader` takes `batch_size` global sequences per micro-step and keeps this rank's slice of them,
so N processes together see exactly the batches one process would, as a `Batch`: token ids padded to
`seq_len` (with the tokenizer's pad token) and each row's real length, the one record of where padding is
(never the token value: a pad token may be the EOS). `DataPosition` is what a checkpoint stores to resume
the stream.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch

from hydrahead.errors import DataError
from hydrahead.distill.losses import real_positions
from hydrahead.distill.recipe import DataConfig
from hydrahead.models.convert import calibration_rows
from hydrahead.utils.io import atomic_write

BUILDERS = {".txt": "text", ".text": "text", ".md": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
TOKENIZE_BATCH = 1024  # documents per tokenizer call
TOKEN_DTYPE = np.uint32


# ----------------------------------------------------------------------------------------------- files
def resolve_files(patterns: list[str], key: str) -> list[Path]:
    """Expand globs, in order; raise DataError for a pattern that matches nothing, an empty file, an
    unsupported suffix, or a mix of file types (`key` names the recipe key in the message)."""
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(str(Path(pattern).expanduser()))) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise DataError(f"{key}: no file matches {pattern!r}")
        for match in matches:
            path = Path(match)
            if not path.is_file():
                raise DataError(f"{key}: data file not found: {path}")
            if path.suffix.lower() not in BUILDERS:
                raise DataError(
                    f"{key}: {path} has an unsupported type {path.suffix!r}; use one of {', '.join(sorted(BUILDERS))}"
                )
            if path.stat().st_size == 0:
                raise DataError(f"{key}: data file is empty: {path}")
            if BUILDERS[path.suffix.lower()] in ("text", "json"):
                _check_text(path, key)
            files.append(path)
    builders = {BUILDERS[f.suffix.lower()] for f in files}
    if len(builders) > 1:
        raise DataError(f"{key}: mixes file types ({', '.join(sorted(builders))}); use one type per list")
    return files


def _check_text(path: Path, key: str) -> None:
    """DataError when a text or JSON data file starts like a binary one (NUL bytes, not UTF-8)."""
    import codecs

    with open(path, "rb") as f:
        head = f.read(2**16)
    if b"\x00" in head:
        raise DataError(f"{key}: {path} is a binary file, not {path.suffix} text")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as err:
        raise DataError(f"{key}: {path} is not UTF-8 text (byte {err.start})") from err


def _open_stream(files: list[Path], config: DataConfig, cache_dir: Path):
    """A datasets IterableDataset over `files` (streaming: read in place, no Arrow cache written; datasets'
    lock files go to `cache_dir`, not the user's home)."""
    import datasets

    builder = BUILDERS[files[0].suffix.lower()]
    kwargs: dict[str, Any] = {"sample_by": config.txt_sample_by} if builder == "text" else {}
    datasets.disable_progress_bars()
    try:
        return datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train", streaming=True,
                                     cache_dir=str(cache_dir / "datasets"), **kwargs)
    except Exception as err:  # datasets raises many types for unreadable files
        raise DataError(f"could not read {[str(f) for f in files]}: {err}") from err


def iter_documents(stream, files: list[Path], config: DataConfig) -> Iterator[str]:
    """The text of each document of a datasets stream; DataError when the text field is missing."""
    field = "text" if BUILDERS[files[0].suffix.lower()] == "text" else config.text_field
    try:
        for example in stream:
            if field not in example:
                raise DataError(
                    f"{[str(f) for f in files]}: records have no field {field!r} (fields: {', '.join(example)}); "
                    "set data.text_field"
                )
            text = example[field]
            if isinstance(text, str) and text.strip():
                yield text
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"could not read {[str(f) for f in files]}: {err}") from err


# ----------------------------------------------------------------------------------------------- tokens
class Tokenize:
    """Documents -> token ids, each document followed by EOS (its boundary in the packed stream)."""

    def __init__(self, tokenizer, eos_id: int) -> None:
        self.tokenizer, self.eos_id = tokenizer, int(eos_id)

    def __call__(self, documents: Iterator[str]) -> Iterator[list[int]]:
        while batch := list(itertools.islice(documents, TOKENIZE_BATCH)):
            for ids in self.tokenizer(batch, add_special_tokens=True)["input_ids"]:
                yield ids if ids and ids[-1] == self.eos_id else [*ids, self.eos_id]

    def fingerprint(self) -> str:
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        spec = backend.to_str() if backend is not None else repr(sorted(self.tokenizer.get_vocab().items()))
        return hashlib.sha256(f"{type(self.tokenizer).__name__}|{self.eos_id}|{spec}".encode()).hexdigest()[:16]


def token_cache(files: list[Path], config: DataConfig, tokenize: Tokenize, cache_dir: Path) -> Path:
    """The cache file for these files read this way with this tokenizer (the name changes when any does)."""
    stats = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    key = json.dumps([stats, config.text_field, config.txt_sample_by, tokenize.fingerprint()])
    return cache_dir / f"tokens-{hashlib.sha256(key.encode()).hexdigest()[:20]}.bin"


def build_token_cache(files: list[Path], config: DataConfig, tokenize: Tokenize, path: Path) -> None:
    """Tokenise `files` in order into `path` (raw uint32), atomically; DataError if they hold no text."""
    def write(tmp: Path) -> None:
        count = 0
        with open(tmp, "wb") as out:
            docs = iter_documents(_open_stream(files, config, path.parent), files, config)
            for ids in tokenize(docs):
                out.write(np.asarray(ids, dtype=TOKEN_DTYPE).tobytes())
                count += len(ids)
        if count == 0:
            raise DataError(f"{[str(f) for f in files]} hold no text (no documents with a non-empty text field)")

    atomic_write(path, write)


def load_tokens(path: Path) -> np.ndarray:
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r")


# ----------------------------------------------------------------------------------------------- sources
class SequenceSource(Protocol):
    seq_len: int
    pad_id: int | None  # what pads a sequence shorter than seq_len; None: every sequence is full

    def iter_from(self, start: int) -> Iterator[np.ndarray]:
        """Global sequences (each (n,) int, 1 <= n <= seq_len: its real tokens) in training order, beginning
        at global index `start`."""
        ...


def calibration_ids(source: SequenceSource, rows: int = 2, length: int = 512) -> torch.Tensor:
    """(rows, min(length, source.seq_len)) token ids: the source's first sequences in training order, joined
    (padding never enters) and cut into rows (`convert.calibration_rows`). Conversion's calibration batch: the
    heads' mean output and RMS on text like the training data, not on random tokens. A source repeats its
    sequences, epoch after epoch, so a small corpus still fills the rows."""
    tokens = itertools.chain.from_iterable(sequence.tolist() for sequence in source.iter_from(0))
    return calibration_rows(tokens, rows, min(length, source.seq_len))


def document_rows(tokens: np.ndarray, seq_len: int, eos_id: int) -> np.ndarray:
    """(N, 2) [start, end) spans of the token stream, one per row of `seq_len`, that never cut a document
    (EOS-terminated) which fits in a row: a document that does not fit in what is left of the current row
    starts the next one. A longer document is cut into full rows and its tail starts a row. Rows are
    contiguous spans because documents keep their order; each is padded to `seq_len` when read."""
    ends = np.flatnonzero(np.asarray(tokens) == eos_id) + 1
    if len(ends) == 0 or ends[-1] != len(tokens):
        ends = np.append(ends, len(tokens))  # a final document without EOS
    rows: list[tuple[int, int]] = []
    row_start = doc_start = 0
    for end in ends.tolist():
        if end - row_start > seq_len and doc_start > row_start:  # does not fit after what the row holds
            rows.append((row_start, doc_start))
            row_start = doc_start
        while end - row_start > seq_len:  # longer than a row: full rows
            rows.append((row_start, row_start + seq_len))
            row_start += seq_len
        doc_start = end
    if doc_start > row_start:
        rows.append((row_start, doc_start))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2)


class PackedCorpus:
    """A memory-mapped token stream cut into sequences of `seq_len`; epoch e is a seeded permutation.

    With `rows` ((N, 2) spans from `document_rows`), sequence i is span i (shorter than `seq_len` when the
    next document did not fit; `BatchLoader` pads it with `pad_id`) instead of the i-th slice of `seq_len`
    tokens."""

    def __init__(self, tokens: np.ndarray, seq_len: int, seed: tuple[int, ...], shuffle: bool = True,
                 rows: np.ndarray | None = None, pad_id: int | None = None) -> None:
        self.tokens, self.seq_len, self.seed, self.shuffle = tokens, seq_len, seed, shuffle
        if rows is not None and pad_id is None:
            raise ValueError("document rows need a pad_id")
        self.rows, self.pad_id = rows, pad_id
        # without rows, the tail shorter than one sequence is dropped
        self.num_sequences = len(rows) if rows is not None else len(tokens) // seq_len
        self._order: tuple[int, np.ndarray] | None = None

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_sequences)
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng([*self.seed, epoch]).permutation(self.num_sequences))
        return self._order[1]

    def sequence(self, index: int) -> np.ndarray:
        epoch, i = divmod(index, self.num_sequences)
        j = int(self.order(epoch)[i])
        if self.rows is None:
            return np.asarray(self.tokens[j * self.seq_len : (j + 1) * self.seq_len], dtype=np.int64)
        start, end = self.rows[j]
        return np.asarray(self.tokens[start:end], dtype=np.int64)

    def iter_from(self, start: int) -> Iterator[np.ndarray]:
        for index in itertools.count(start):
            yield self.sequence(index)


class StreamingPacked:
    """Documents through datasets' shuffle buffer (reseeded every epoch), packed on the fly."""

    pad_id = None  # every sequence is full

    def __init__(self, files: list[Path], config: DataConfig, tokenize: Tokenize, seq_len: int, seed: int,
                 cache_dir: Path) -> None:
        self.files, self.config, self.tokenize, self.seq_len, self.seed = files, config, tokenize, seq_len, seed
        self.cache_dir = cache_dir

    def _sequences(self) -> Iterator[np.ndarray]:
        stream = _open_stream(self.files, self.config, self.cache_dir).shuffle(seed=self.seed, buffer_size=self.config.shuffle_buffer)
        buffer: list[int] = []
        for epoch in itertools.count():
            stream.set_epoch(epoch)
            documents = 0
            for ids in self.tokenize(iter_documents(stream, self.files, self.config)):
                documents += 1
                buffer.extend(ids)  # the buffer carries over epochs: a small corpus simply repeats
                while len(buffer) >= self.seq_len:
                    yield np.asarray(buffer[: self.seq_len], dtype=np.int64)
                    del buffer[: self.seq_len]
            if documents == 0:
                raise DataError(f"{[str(f) for f in self.files]} hold no text (no documents with a non-empty text field)")

    def iter_from(self, start: int) -> Iterator[np.ndarray]:
        return itertools.islice(self._sequences(), start, None)


# ----------------------------------------------------------------------------------------------- batches
@dataclass
class DataPosition:
    """How many global sequences the stage has consumed: all a resumed run needs to continue the stream."""

    sequences: int = 0

    def state_dict(self) -> dict[str, int]:
        return {"sequences": self.sequences}

    @classmethod
    def from_state_dict(cls, state: dict[str, int]) -> DataPosition:
        return cls(sequences=int(state["sequences"]))


class Batch(NamedTuple):
    """One micro-step's sequences on one process."""

    input_ids: torch.Tensor  # (B, T) int64; position t >= lengths[b] is padding
    lengths: torch.Tensor  # (B,) int64: how many leading positions of each row are real tokens

    @classmethod
    def full(cls, input_ids: torch.Tensor) -> Batch:
        """Rows without padding."""
        B, T = input_ids.shape
        return cls(input_ids, torch.full((B,), T, dtype=torch.long, device=input_ids.device))

    @classmethod
    def pad(cls, rows: list[np.ndarray], seq_len: int, pad_id: int | None) -> Batch:
        """Rows of real tokens, each padded to `seq_len` with `pad_id`."""
        lengths = [len(row) for row in rows]
        if any(n < 1 or n > seq_len for n in lengths) or (pad_id is None and any(n < seq_len for n in lengths)):
            raise ValueError(f"sequence lengths {lengths} do not fit seq_len {seq_len} (pad_id {pad_id})")
        ids = np.full((len(rows), seq_len), 0 if pad_id is None else pad_id, dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
        return cls(torch.from_numpy(ids), torch.tensor(lengths, dtype=torch.long))

    def real(self) -> torch.Tensor:
        """(B, T) bool: True at real tokens, False at padding."""
        return real_positions(self.lengths, self.input_ids.shape[1])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return Batch(self.input_ids.to(device, non_blocking=non_blocking),
                     self.lengths.to(device, non_blocking=non_blocking))


class BatchLoader:
    """Per micro-step: the next `batch_size` global sequences, of which this rank keeps its contiguous
    share (batch_size / world_size), as a `Batch` of (local_batch, seq_len) token ids and their lengths."""

    def __init__(self, source: SequenceSource, batch_size: int, rank: int = 0, world_size: int = 1,
                 position: DataPosition | None = None) -> None:
        if batch_size % world_size:
            raise DataError(f"batch_size {batch_size} is not divisible by the {world_size} processes")
        self.source, self.batch_size = source, batch_size
        self.local = batch_size // world_size
        self.offset = rank * self.local
        self.position = DataPosition(position.sequences if position else 0)
        self._iter = source.iter_from(self.position.sequences)

    def next(self) -> Batch:
        batch = list(itertools.islice(self._iter, self.batch_size))
        self.position.sequences += self.batch_size
        return Batch.pad(batch[self.offset : self.offset + self.local], self.source.seq_len, self.source.pad_id)


# ----------------------------------------------------------------------------------------------- preparation
class Corpora:
    """Builds (once, on the main process) and opens the token caches of a run's train and eval files."""

    def __init__(self, config: DataConfig, tokenize: Tokenize, cache_dir: Path, is_main: bool,
                 barrier: Callable[[], None], pad_id: int | None = None) -> None:
        self.config, self.tokenize, self.cache_dir = config, tokenize, cache_dir
        self.is_main, self.barrier = is_main, barrier
        if config.packing == "documents" and pad_id is None:
            raise DataError("data.packing documents needs a tokenizer with a pad token")
        self.pad_id = pad_id if config.packing == "documents" else None
        if is_main and cache_dir.is_dir():
            self._remove_stale_temporaries()

    def _remove_stale_temporaries(self, age_s: float = 600.0) -> None:
        """Half-written token caches a killed run left behind (untouched for `age_s`: a run sharing this
        cache that is writing one now keeps touching it)."""
        import time

        for tmp in self.cache_dir.glob(".tokens-*.tmp"):
            try:
                if tmp.is_file() and time.time() - tmp.stat().st_mtime > age_s:
                    tmp.unlink()
            except OSError:
                pass

    def tokens(self, files: list[Path]) -> np.ndarray:
        """The files' token cache, built by the main process; a failed build reaches the barrier first, so that
        the other processes stop too rather than wait for the main one."""
        path = token_cache(files, self.config, self.tokenize, self.cache_dir)
        error = None
        if self.is_main and not path.is_file():
            try:
                build_token_cache(files, self.config, self.tokenize, path)
            except BaseException as err:  # noqa: BLE001 - raised below, after the barrier
                error = err
        self.barrier()
        if error is not None:
            raise error
        if not path.is_file():
            raise DataError(f"the main process could not build the token cache {path} (its error says why)")
        return load_tokens(path)

    def train_source(self, files: list[Path], seq_len: int, seed: int, stage_index: int, key: str) -> SequenceSource:
        if self.config.streaming:
            source: SequenceSource = StreamingPacked(files, self.config, self.tokenize, seq_len, seed * 10 + stage_index,
                                                      self.cache_dir)
            next(source.iter_from(0), None)  # reads until one sequence exists, or raises DataError
            return source
        tokens = self.tokens(files)
        if self.pad_id is not None:
            return PackedCorpus(tokens, seq_len, seed=(seed, stage_index), pad_id=self.pad_id,
                                rows=document_rows(tokens, seq_len, self.tokenize.eos_id))
        if len(tokens) < seq_len:
            raise DataError(f"{key}: the data holds {len(tokens)} tokens, fewer than one sequence of seq_len {seq_len}")
        return PackedCorpus(tokens, seq_len, seed=(seed, stage_index))

    @staticmethod
    def check_batch(source: SequenceSource, batch_size: int, key: str, data_key: str) -> None:
        """DataError when one micro-step's `batch_size` sequences are more than the data holds: every step
        would repeat sequences within itself (and a large batch is the OOM killer's, without a message). A
        streamed source is not counted."""
        count = getattr(source, "num_sequences", None)
        if count is not None and batch_size > count:
            raise DataError(f"{key} {batch_size} is more sequences than {data_key} hold ({count} of seq_len "
                            f"{source.seq_len}), so each step would repeat sequences; lower {key} to at most "
                            f"{count}, or add data")

    def eval_batches(self, files: list[Path], seq_len: int, count: int) -> torch.Tensor | None:
        """The first `count` held-out sequences in file order, (n, seq_len); None without eval files."""
        if not files:
            return None
        corpus = PackedCorpus(self.tokens(files), seq_len, seed=(0,), shuffle=False)
        n = min(count, corpus.num_sequences)
        if n == 0:
            raise DataError(f"data.eval_files hold fewer tokens than one sequence of seq_len {seq_len}")
        return torch.from_numpy(np.stack([corpus.sequence(i) for i in range(n)]))


def document_eos(tokenizer: Any, model_dir: str | Path) -> int:
    """The token that marks document boundaries: the tokenizer's EOS, else the model config's (DataError
    when neither has one)."""
    eos = tokenizer.eos_token_id
    if eos is None and (Path(model_dir) / "config.json").is_file():
        from hydrahead.models.loading import read_config

        config_eos = read_config(model_dir).get("eos_token_id")
        eos = config_eos[0] if isinstance(config_eos, list) and config_eos else config_eos
    if not isinstance(eos, int):
        raise DataError(f"the tokenizer of {model_dir} has no EOS token to mark document boundaries")
    return eos
