import numpy as np
import pytest
import torch

from hydrahead.distill import DataError
from hydrahead.distill.data import Batch, BatchLoader, Corpora, DataPosition, Tokenize, resolve_files
from hydrahead.distill.recipe import DataConfig
from tests.distill.conftest import make_documents, make_tokenizer, write_corpus

DOCS = make_documents(40, seed=3)


def corpora(tmp_path, **config) -> tuple[Corpora, Tokenize]:
    tokenizer = make_tokenizer()
    tokenize = Tokenize(tokenizer, tokenizer.eos_token_id)
    cfg = DataConfig(train_files=["unused"], **config)
    return Corpora(cfg, tokenize, tmp_path / "cache", is_main=True, barrier=lambda: None), tokenize


def expected_stream(tokenize: Tokenize) -> list[int]:
    return [t for ids in tokenize(iter(DOCS)) for t in ids]


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".parquet"])
def test_formats_give_the_same_token_stream_with_eos_boundaries(tmp_path, suffix):
    files = [write_corpus(tmp_path / f"data{suffix}", DOCS)]
    c, tokenize = corpora(tmp_path)
    tokens = c.tokens(resolve_files([str(files[0])], "data.train_files"))
    stream = expected_stream(tokenize)
    assert tokens.tolist() == stream
    eos = tokenize.eos_id
    assert stream.count(eos) == len(DOCS) and stream[-1] == eos  # one EOS after every document
    assert len(list((tmp_path / "cache").glob("tokens-*.bin"))) == 1


def test_packed_order_is_deterministic_and_covers_every_sequence(tmp_path):
    path = write_corpus(tmp_path / "d.jsonl", DOCS)
    c, tokenize = corpora(tmp_path)
    files = resolve_files([str(path)], "k")
    a = c.train_source(files, seq_len=16, seed=0, stage_index=0, key="k")
    b = c.train_source(files, seq_len=16, seed=0, stage_index=0, key="k")
    other = c.train_source(files, seq_len=16, seed=1, stage_index=0, key="k")
    n = a.num_sequences
    first = [s.tolist() for s in _take(a.iter_from(0), n)]
    assert first == [s.tolist() for s in _take(b.iter_from(0), n)]
    assert first != [s.tolist() for s in _take(other.iter_from(0), n)]
    stream = expected_stream(tokenize)
    chunks = sorted(stream[i * 16 : (i + 1) * 16] for i in range(n))
    assert sorted(first) == chunks  # one epoch = a permutation of all packed sequences
    second_epoch = [s.tolist() for s in _take(a.iter_from(n), n)]
    assert sorted(second_epoch) == chunks and second_epoch != first


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


@pytest.mark.parametrize("streaming", [False, True], ids=["cached", "streaming"])
def test_ranks_split_the_global_batch_and_resume_continues(tmp_path, streaming):
    path = write_corpus(tmp_path / "d.jsonl", DOCS)
    c, _ = corpora(tmp_path, streaming=streaming, shuffle_buffer=7)
    source = c.train_source(resolve_files([str(path)], "k"), seq_len=12, seed=0, stage_index=1, key="k")
    single = BatchLoader(source, batch_size=4)
    ranks = [BatchLoader(source, batch_size=4, rank=r, world_size=2) for r in range(2)]
    for _ in range(3):
        batch = single.next()
        parts = [r.next() for r in ranks]
        assert torch.equal(torch.cat([p.input_ids for p in parts]), batch.input_ids)
        assert torch.equal(torch.cat([p.lengths for p in parts]), batch.lengths)
    assert single.position == DataPosition(12)
    resumed = BatchLoader(source, batch_size=4, position=DataPosition.from_state_dict(single.position.state_dict()))
    for _ in range(5):  # past the end of the first epoch
        assert torch.equal(resumed.next().input_ids, single.next().input_ids)


def test_streaming_is_deterministic(tmp_path):
    path = write_corpus(tmp_path / "d.txt", DOCS)
    c, tokenize = corpora(tmp_path, streaming=True, shuffle_buffer=5)
    files = resolve_files([str(path)], "k")
    a = [s.tolist() for s in _take(c.train_source(files, 10, 0, 0, "k").iter_from(0), 30)]
    b = [s.tolist() for s in _take(c.train_source(files, 10, 0, 0, "k").iter_from(0), 30)]
    assert a == b
    assert set(np.concatenate(a).tolist()) <= set(expected_stream(tokenize))


def test_eval_sequences_are_in_file_order(tmp_path):
    path = write_corpus(tmp_path / "e.txt", DOCS)
    c, tokenize = corpora(tmp_path)
    batch = c.eval_batches(resolve_files([str(path)], "k"), seq_len=8, count=3)
    stream = expected_stream(tokenize)
    assert batch.tolist() == [stream[0:8], stream[8:16], stream[16:24]]


def test_bad_files(tmp_path):
    with pytest.raises(DataError, match="data.train_files: data file not found: .*nope.jsonl"):
        resolve_files([str(tmp_path / "nope.jsonl")], "data.train_files")
    with pytest.raises(DataError, match="no file matches"):
        resolve_files([str(tmp_path / "*.parquet")], "data.train_files")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="data file is empty: .*empty.jsonl"):
        resolve_files([str(tmp_path / "empty.jsonl")], "data.train_files")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported type '.csv'"):
        resolve_files([str(tmp_path / "x.csv")], "k")
    (tmp_path / "wrong.jsonl").write_text('{"content": "hello"}\n')
    c, _ = corpora(tmp_path)
    with pytest.raises(DataError, match="no field 'text' \\(fields: content\\); set data.text_field"):
        c.tokens(resolve_files([str(tmp_path / "wrong.jsonl")], "k"))
    (tmp_path / "blank.txt").write_text("\n\n\n")
    with pytest.raises(DataError, match="hold no text"):
        c.tokens(resolve_files([str(tmp_path / "blank.txt")], "k"))
    short = write_corpus(tmp_path / "short.jsonl", ["the cat sees a book ."])
    with pytest.raises(DataError, match="stages.align.train_files: the data holds 7 tokens, fewer than one sequence"):
        c.train_source(resolve_files([str(short)], "k"), 32, 0, 0, "stages.align.train_files")


def test_document_rows_never_cut_a_document_that_fits():
    from hydrahead.distill.data import PackedCorpus, document_rows

    eos, pad = 0, 1
    docs = [[5] * 3, [6] * 4, [7] * 2, [8] * 11]  # 4, 5, 3 and 12 tokens with EOS, rows of 8
    tokens = np.array([t for d in docs for t in d + [eos]], dtype=np.uint32)
    corpus = PackedCorpus(tokens, 8, seed=(0,), shuffle=False, rows=document_rows(tokens, 8, eos), pad_id=pad)
    rows = [corpus.sequence(i).tolist() for i in range(corpus.num_sequences)]
    assert rows == [
        [5, 5, 5, 0],  # the next document does not fit: it starts a new row
        [6, 6, 6, 6, 0, 7, 7, 0],
        [8] * 8, [8, 8, 8, 0],  # longer than a row: cut, its tail starts a row
    ]
    batch = BatchLoader(corpus, batch_size=4).next()  # padded to the row length, lengths kept
    assert batch.input_ids.tolist() == [r + [pad] * (8 - len(r)) for r in rows]
    assert batch.lengths.tolist() == [4, 8, 8, 4]


def test_calibration_rows_join_the_first_sequences_without_padding_and_repeat_a_small_corpus():
    from hydrahead.distill.data import PackedCorpus, calibration_ids, document_rows

    eos, pad = 0, 1
    tokens = np.array([5, 5, 5, eos, 6, 6, 6, 6, eos, 7, 7, eos], dtype=np.uint32)
    corpus = PackedCorpus(tokens, 8, seed=(0,), shuffle=False, rows=document_rows(tokens, 8, eos), pad_id=pad)
    stream = [5, 5, 5, 0, 6, 6, 6, 6, 0, 7, 7, 0]  # the rows in training order, no pad between them
    assert calibration_ids(corpus, rows=3, length=6).tolist() == [stream[:6], stream[6:12], stream[:6]]
    assert calibration_ids(corpus, rows=1, length=100).shape == (1, 8)  # at most a training row's length


def test_padding_is_known_by_position_when_the_pad_token_is_eos():
    """A tokenizer that pads with its EOS (SmolLM2, Qwen3-Base): the batch still says where padding is,
    and every EOS of a document stays a target."""
    from hydrahead.distill.data import PackedCorpus, document_rows
    from hydrahead.distill.losses import IGNORE
    from hydrahead.distill.stages import PretrainStage

    eos = pad = 2
    tokens = np.array([5, 6, 7, eos, 8, 9, eos, 10, 11, 12, 13, eos], dtype=np.uint32)
    corpus = PackedCorpus(tokens, 8, seed=(0, 0), shuffle=False, rows=document_rows(tokens, 8, eos), pad_id=pad)
    batch = BatchLoader(corpus, batch_size=2).next()
    assert batch.input_ids.tolist() == [[5, 6, 7, eos, 8, 9, eos, pad], [10, 11, 12, 13, eos, pad, pad, pad]]
    assert batch.lengths.tolist() == [7, 5]
    labels = PretrainStage(None, 0).labels(batch)
    assert labels.tolist() == [[6, 7, eos, 8, 9, eos, IGNORE, IGNORE], [11, 12, 13, eos] + [IGNORE] * 4]


def test_document_packing_keeps_every_document_whole_and_pads_carry_no_loss(tmp_path):
    from hydrahead.distill.losses import IGNORE
    from hydrahead.distill.stages import PretrainStage

    path = write_corpus(tmp_path / "d.jsonl", DOCS)
    tokenizer = make_tokenizer()
    tokenize = Tokenize(tokenizer, tokenizer.eos_token_id)
    cfg = DataConfig(train_files=["unused"], packing="documents")
    c = Corpora(cfg, tokenize, tmp_path / "cache", is_main=True, barrier=lambda: None, pad_id=tokenizer.pad_token_id)
    source = c.train_source(resolve_files([str(path)], "k"), seq_len=24, seed=0, stage_index=0, key="k")
    docs = [tuple(ids) for ids in tokenize(iter(DOCS))]
    fitting = {d for d in docs if len(d) <= 24}
    seen = set()
    for row in [source.sequence(i) for i in range(source.num_sequences)]:
        body = row.tolist()  # a row's real tokens; BatchLoader pads them
        start = 0
        for end in [i + 1 for i, t in enumerate(body) if t == tokenize.eos_id]:
            seen.add(tuple(body[start:end]))
            start = end
    assert fitting <= seen  # every document that fits appears whole in some row
    batch = BatchLoader(source, batch_size=4).next()
    assert batch.lengths.max() <= 24 and bool((batch.input_ids[~batch.real()] == c.pad_id).all())
    stage = PretrainStage(None, 0)
    batch = Batch(torch.tensor([[3, 4, tokenize.eos_id, c.pad_id, c.pad_id]]), torch.tensor([3]))
    assert stage.labels(batch).tolist() == [[4, tokenize.eos_id, IGNORE, IGNORE, IGNORE]]


def test_document_packing_needs_a_pad_token_and_no_streaming(tmp_path):
    from hydrahead.distill import RecipeError

    tokenizer = make_tokenizer()
    with pytest.raises(DataError, match="pad token"):
        Corpora(DataConfig(train_files=["x"], packing="documents"), Tokenize(tokenizer, 0), tmp_path, True,
                lambda: None, pad_id=None)
    with pytest.raises((RecipeError, ValueError), match="streaming"):
        DataConfig(train_files=["x"], packing="documents", streaming=True)


def test_stale_token_cache_temporaries_are_removed(tmp_path):
    import os
    import time

    tokenizer = make_tokenizer()
    cache = tmp_path / "cache"
    cache.mkdir()
    stale, fresh = cache / ".tokens-abc.bin.x1.tmp", cache / ".tokens-def.bin.x2.tmp"
    for f in (stale, fresh):
        f.write_bytes(b"half a cache")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    Corpora(DataConfig(train_files=["x"]), Tokenize(tokenizer, tokenizer.eos_token_id), cache, True, lambda: None)
    assert not stale.exists() and fresh.exists()  # a fresh one may belong to a run writing it now


def test_binary_or_non_utf8_data_files_are_refused(tmp_path):
    (tmp_path / "bin.txt").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "latin1.jsonl").write_bytes('{"text": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match="data.train_files: .*bin.txt is a binary file"):
        resolve_files([str(tmp_path / "bin.txt")], "data.train_files")
    with pytest.raises(DataError, match="latin1.jsonl is not UTF-8 text"):
        resolve_files([str(tmp_path / "latin1.jsonl")], "data.train_files")


def test_a_failed_token_cache_build_passes_the_barrier_and_stops_every_process(tmp_path):
    """Under torchrun the main process builds the cache while the others wait at the barrier: its failure must
    reach the barrier (then raise), and the others, finding no cache, stop with a line rather than wait."""
    tokenizer = make_tokenizer()
    data = tmp_path / "records.jsonl"
    data.write_text('{"body": "the cat sees the ball ."}\n')
    config = DataConfig(train_files=[str(data)])
    tokenize = Tokenize(tokenizer, tokenizer.eos_token_id)
    barriers = []
    main = Corpora(config, tokenize, tmp_path / "cache", True, lambda: barriers.append("main"))
    with pytest.raises(DataError, match="text"):
        main.tokens([data])
    other = Corpora(config, tokenize, tmp_path / "cache", False, lambda: barriers.append("other"))
    with pytest.raises(DataError, match="the main process could not build the token cache"):
        other.tokens([data])
    assert barriers == ["main", "other"]
