import json
from pathlib import Path

import pytest

from hydrahead.errors import OutputError, PlanError
from hydrahead.utils.io import atomic_write, atomic_write_text, read_json, save_figure


def test_atomic_write_is_all_or_nothing(tmp_path):
    path = tmp_path / "sub" / "out.json"
    atomic_write_text(path, json.dumps({"a": 1}))
    assert read_json(path, PlanError, "plan") == {"a": 1}

    def half(tmp):
        tmp.write_text('{"a": ')
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(path, half)
    assert json.loads(path.read_text()) == {"a": 1}  # the old file, whole
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]  # no temporary left behind


def test_read_json_names_the_file(tmp_path):
    with pytest.raises(PlanError, match="plan not found: .*nope.json"):
        read_json(tmp_path / "nope.json", PlanError, "plan")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(PlanError, match="plan .*bad.json is not valid JSON"):
        read_json(tmp_path / "bad.json", PlanError, "plan")


def test_an_unreadable_file_is_named(tmp_path, monkeypatch):
    from pathlib import Path

    (tmp_path / "plan.json").write_text("{}")

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)  # (chmod 000 does not stop root, who may run the tests)
    with pytest.raises(PlanError, match="plan .*plan.json cannot be read: Permission denied"):
        read_json(tmp_path / "plan.json", PlanError, "plan")


def test_save_figure_writes_the_format_its_name_says(tmp_path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure()
    FigureCanvasAgg(fig)
    fig.add_subplot().plot([0, 1], [1, 0])
    save_figure(fig, tmp_path / "plot.png", dpi=50)
    save_figure(fig, tmp_path / "plot.PDF")
    save_figure(fig, tmp_path / "plot.svg")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "plot.PDF").read_bytes()[:5] == b"%PDF-"
    assert b"<svg" in (tmp_path / "plot.svg").read_bytes()[:1000]
    for name in ("plot.txt", "plot"):  # PNG bytes were written under any name
        with pytest.raises(OutputError, match=f"figure .*{name}: the format is taken from the file name; give one "
                                              r"ending in .png, .pdf or .svg"):
            save_figure(fig, tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.PDF", "plot.png", "plot.svg"]


def test_written_files_follow_the_umask(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "shared.txt", "x")
        assert (tmp_path / "shared.txt").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        atomic_write_text(tmp_path / "private.txt", "x")
        assert (tmp_path / "private.txt").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_an_output_where_no_file_can_be_created_is_refused_at_once(tmp_path):
    """os.access allows root everything, and says nothing of a virtual file system: the check creates a file."""
    from hydrahead.utils.io import check_output

    for path, kind in (("/proc/hydrahead-out.json", "file"), ("/proc/hydrahead-out", "directory")):
        with pytest.raises(OutputError, match="no file can be created in /proc"):
            check_output(path, kind)
    assert check_output(tmp_path / "new" / "out.json") == tmp_path / "new" / "out.json"
    assert list(tmp_path.iterdir()) == []  # the check leaves nothing behind
