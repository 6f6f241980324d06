"""The comparison report: every model and every length in the JSON, the markdown and the plots."""

import json

from hydrahead.eval import NiahRecord, PerplexityResult, write_report

PNG = b"\x89PNG\r\n\x1a\n"


def records():
    """Model "good" finds everything at 1k and half at 2k; "bad" finds nothing; 2 tasks x 2 depths each."""
    out = []
    for model, scores in {"good": {1024: 1.0, 2048: 0.5}, "bad": {1024: 0.0, 2048: 0.0}}.items():
        for task in ("single_number", "multivalue"):
            for length, s in scores.items():
                for depth in (0.0, 1.0):
                    out.append(NiahRecord(model, task, length, depth, 0, length - 20, ["1"], "x", s, s == 1.0))
    return out


def test_niah_report_has_every_model_and_length(tmp_path):
    paths = write_report(tmp_path / "report", niah=records(), meta={"note": "hand-made"})
    assert sorted(p.name for p in paths) == ["niah.json", "niah.md", "niah_accuracy.png", "niah_heatmap.png"]
    data = json.loads((tmp_path / "report" / "niah.json").read_text())
    assert data["meta"] == {"note": "hand-made"} and len(data["records"]) == 16
    overall = {(r["model"], r["length"]): r["accuracy"] for r in data["summary"]
               if r["task"] == "all" and r["depth"] is None}
    assert overall == {("good", 1024): 100.0, ("good", 2048): 50.0, ("bad", 1024): 0.0, ("bad", 2048): 0.0}
    key = ("good", "multivalue", 2048, 1.0)
    cell = [r for r in data["summary"] if (r["model"], r["task"], r["length"], r["depth"]) == key]
    assert len(cell) == 1 and cell[0]["n"] == 1 and cell[0]["exact"] == 0.0

    md = (tmp_path / "report" / "niah.md").read_text()
    assert "| model | 1k | 2k | mean |" in md
    assert "| good | 100.0 | 50.0 | 75.0 |" in md and "| bad | 0.0 | 0.0 | 0.0 |" in md
    assert "| good | multivalue | 100.0 | 50.0 | 75.0 |" in md
    for name in ("niah_accuracy.png", "niah_heatmap.png"):
        assert (tmp_path / "report" / name).read_bytes()[:8] == PNG


def test_ppl_report(tmp_path):
    results = [
        PerplexityResult(name, 4096, 1024, ["doc"], [], [1024 * nll] * 3 + [1023 * nll], [1024] * 3 + [1023],
                         [[nll] * 4])
        for name, nll in (("teacher", 1.0), ("hybrid", 2.0))
    ]
    paths = write_report(tmp_path, perplexity=results)
    assert [p.name for p in paths] == ["ppl.json", "ppl.md", "ppl_by_position.png"]
    data = json.loads((tmp_path / "ppl.json").read_text())
    assert [r["model"] for r in data["results"]] == ["teacher", "hybrid"]
    assert data["results"][1]["buckets"] == [[0, 1024], [1024, 2048], [2048, 3072], [3072, 4096]]
    md = (tmp_path / "ppl.md").read_text()
    assert "| model | docs | 0-1k | 1k-2k | 2k-3k | 3k-4k | all |" in md
    assert "| teacher | 1 | 2.72 | 2.72 | 2.72 | 2.72 | 2.72 |" in md  # e^1
    assert "| hybrid | 1 | 7.39 |" in md  # e^2
    assert (tmp_path / "ppl_by_position.png").read_bytes()[:8] == PNG


def test_nothing_to_report_or_a_file_for_the_directory_is_an_error(tmp_path):
    """[] came back for nothing to report (an empty directory made); a file in the directory's place raised
    FileExistsError."""
    import pytest

    from hydrahead.errors import EvalError, OutputError

    with pytest.raises(EvalError, match="nothing to report: give niah records, perplexity results or both"):
        write_report(tmp_path / "empty")
    assert not (tmp_path / "empty").exists()
    (tmp_path / "taken").write_text("notes")
    with pytest.raises(OutputError, match="taken is a file, not a directory"):
        write_report(tmp_path / "taken", niah=records())
