"""bench/niah_seeds.py: runs that evaluated two models give a table per model, never one merged table."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "niah_seeds.py"


def write_run(path: Path, scores: dict[str, float]) -> str:
    """An `eval niah` output directory: per model, two single_number prompts at 512 and 1k, each scoring `scores`."""
    records = [{"model": model, "task": "single_number", "length": length, "depth": 0.0, "sample": i, "score": score}
               for model, score in scores.items() for length in (512, 1024) for i in range(2)]
    path.mkdir()
    (path / "niah.json").write_text(json.dumps({"records": records}))
    return str(path)


def seeds(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_each_model_gets_its_own_table(tmp_path):
    one = write_run(tmp_path / "s1", {"teacher": 1.0, "student": 0.0})
    two = write_run(tmp_path / "s2", {"teacher": 1.0, "student": 0.5})
    out = seeds(one, two)
    assert out.returncode == 0, out.stderr
    assert "teacher: NIAH accuracy" in out.stdout and "student: NIAH accuracy" in out.stdout
    assert "| single_number | 100.0 ± 0.0 | 100.0 ± 0.0 |" in out.stdout  # the teacher, not merged
    assert "| single_number | 25.0 ± 25.0 | 25.0 ± 25.0 |" in out.stdout  # the student: 0 and 50 over seeds
    assert "| task | 512 | 1k |" in out.stdout

    only = seeds(one, two, "--model", "student", "--plot", str(tmp_path / "p.png"))
    assert only.returncode == 0 and "teacher" not in only.stdout and (tmp_path / "p.png").exists(), only.stderr
    for args, message in ((["--plot", str(tmp_path / "q.png")], "give --model for the plot"),
                          (["--model", "nobody"], "'nobody' is not in the runs, which hold teacher, student")):
        refused = seeds(one, two, *args)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr


def test_series_compare_models_from_different_runs(tmp_path):
    """--series: models evaluated in different runs, one table per task with a row per series, and a plot."""
    a1 = write_run(tmp_path / "a1", {"teacher": 1.0, "student": 0.5})
    a2 = write_run(tmp_path / "a2", {"teacher": 1.0, "student": 1.0})
    b1 = write_run(tmp_path / "b1", {"student": 0.0})
    b2 = write_run(tmp_path / "b2", {"student": 0.5})
    plot = tmp_path / "cmp.png"
    out = seeds("--series", "teacher", "teacher", a1, a2, "--series", "scored", "student", a1, a2,
                "--series", "random", "student", b1, b2, "--plot", str(plot))
    assert out.returncode == 0, out.stderr
    assert "| model (seeds) | 512 | 1k |" in out.stdout
    assert "| teacher (2) | 100.0 ± 0.0 | 100.0 ± 0.0 |" in out.stdout
    assert "| scored (2) | 75.0 ± 25.0 | 75.0 ± 25.0 |" in out.stdout  # a1's student, not b1's
    assert "| random (2) | 25.0 ± 25.0 | 25.0 ± 25.0 |" in out.stdout
    assert plot.exists()
    for args, message in ((["--series", "teacher", "teacher", b1], "model 'teacher' is missing from " + b1),
                          (["--series", "x", "teacher"], "give NAME MODEL RUN"),
                          ([a1, "--series", "x", "teacher", a1], "give one or the other"),
                          (["--series", "x", "teacher", a1, "--series", "x", "student", a1], "given twice"),
                          (["--series", "x", "teacher", str(tmp_path / "none")], "cannot read"),
                          ([], "give the runs")):
        refused = seeds(*args)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr


def test_a_reader_that_stops_early_does_not_cost_the_plot(tmp_path):
    """`niah_seeds.py ... --plot p.png | head -3`: the plot is written before the tables reach the closed pipe."""
    one = write_run(tmp_path / "s1", {"student": 0.0})
    two = write_run(tmp_path / "s2", {"student": 0.5})
    for args in (["--model", "student"], ["--series", "a", "student", one, two, "--series", "b", "student", one]):
        plot = tmp_path / f"{args[0]}.png"
        runs = [one, two] if args[0] == "--model" else []
        proc = subprocess.Popen([sys.executable, str(SCRIPT), *runs, *args, "--plot", str(plot)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        proc.stdout.close()  # nobody reads the tables
        proc.wait(timeout=120)
        assert plot.exists(), args
