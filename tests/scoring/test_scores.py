import json

import numpy as np
import pytest

from hydrahead.scoring import HeadScores, ScoringError
from tests.conftest import make_teacher


def scores(values=None, method="patching", kv=2):
    values = np.array([[0.1, 0.9, 0.3, 0.0], [0.5, 0.2, 0.9, 0.4]]) if values is None else values
    return HeadScores(values, method, kv, components={"kappa/single_key": np.ones((2, 4))}, metadata={"num_probes": 3})


def test_json_round_trip(tmp_path):
    s = scores()
    s.to_json(tmp_path / "s.json")
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["values"] == [[0.1, 0.9, 0.3, 0.0], [0.5, 0.2, 0.9, 0.4]]  # nested lists, layers outermost
    again = HeadScores.from_json(tmp_path / "s.json")
    np.testing.assert_array_equal(again.values, s.values)
    assert again.method == "patching" and again.num_kv_heads == 2 and again.metadata == {"num_probes": 3}
    np.testing.assert_array_equal(again.components["kappa/single_key"], np.ones((2, 4)))


def test_rankings_and_groups():
    s = scores()
    assert s.top_k(3) == [(0, 1), (1, 2), (1, 0)]  # 0.9 ties: lower layer first
    np.testing.assert_array_equal(s.kv_group_values(), [[0.9, 0.3], [0.5, 0.9]])
    np.testing.assert_allclose(s.kv_group_values("mean"), [[0.5, 0.15], [0.35, 0.65]])
    assert (s.num_layers, s.num_heads, s.group_size) == (2, 4, 2)


def test_plot_writes_a_png(tmp_path):
    scores().plot(tmp_path / "heads.png", mark_top=2)
    assert (tmp_path / "heads.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_shape_check():
    config = make_teacher("qwen3").config  # 2 x 4, 2 KV heads
    scores().check_config(config)
    with pytest.raises(ScoringError, match="3 layers x 4 heads .* this model has 2 layers x 4 heads"):
        scores(np.zeros((3, 4))).check_config(config)
    with pytest.raises(ScoringError, match="1 KV heads"):
        scores(kv=1).check_config(config)


@pytest.mark.parametrize("values, kv, match", [
    (np.zeros(4), 2, "layers, heads"),
    (np.array([[np.nan, 1.0]]), 1, "NaN"),
    (np.zeros((2, 4)), 3, "multiple"),
])
def test_bad_scores(values, kv, match):
    with pytest.raises(ScoringError, match=match):
        HeadScores(values, "patching", kv)


def test_bad_files(tmp_path):
    with pytest.raises(ScoringError, match="not found"):
        HeadScores.from_json(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ScoringError, match="not valid JSON"):
        HeadScores.from_json(tmp_path / "bad.json")
    (tmp_path / "plan.json").write_text('{"fa_heads": [[0]], "num_heads": 4}')
    with pytest.raises(ScoringError, match="not a head-score file"):
        HeadScores.from_json(tmp_path / "plan.json")
    with pytest.raises(ScoringError, match="top-k"):
        scores().top_k(9)
    for values in ([["0.5", 0.1]], [[True, 0.1]]):  # numpy would read both as numbers
        (tmp_path / "edited.json").write_text(json.dumps({"method": "patching", "values": values, "num_kv_heads": 1}))
        with pytest.raises(ScoringError, match="table of numbers"):
            HeadScores.from_json(tmp_path / "edited.json")


def test_numpy_and_float_head_counts(tmp_path):
    """np.int64 KV heads were kept as given (a file json could not write); 2.0 failed in a reshape, and its file
    was refused by from_json; a float top-k failed in a slice."""
    saved = HeadScores(np.random.rand(2, 4), "patching", np.int64(2))
    saved.to_json(tmp_path / "s.json")
    assert type(HeadScores.from_json(tmp_path / "s.json").num_kv_heads) is int
    with pytest.raises(ScoringError, match="num_kv_heads must be an integer, got 2.0"):
        HeadScores(np.random.rand(2, 4), "patching", 2.0)
    with pytest.raises(ScoringError, match="top-k must be an integer, got 2.0"):
        saved.top_k(2.0)


def test_numpy_numbers_in_a_mapping_are_numbers():
    data = {"method": "patching", "values": [[np.float32(0.5), np.int64(1)]], "num_kv_heads": 1}
    assert HeadScores.from_dict(data).values.tolist() == [[0.5, 1.0]]


def test_a_hand_edited_senders_flag_is_read_as_written():
    written = scores()
    written.metadata.update(senders=False)
    assert written.senders is False
    written.metadata.update(senders="false", rounds=0)  # a string is not taken as true
    assert written.senders is False
