"""Issue 27: no command deletes, overwrites or leaks what it does not own. Each case of the issue tried as a hostile
user would: the site's output folder, links planted in run folders, keys in server replies, servers that never stop,
script in pages, named sets and artefacts of a run, special files, parameter files, eval files. One line, nothing
deleted or written through a link, never a traceback."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from emolib import params, runner, safeio
from emolib.__main__ import main
from emolib.params import ParamError
from emolib.report import site

from test_site import PNG, tiny_repo

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "params/test-tiny.yaml")


def one_line(text: str) -> bool:
    """Exactly one non-empty line, no traceback."""
    return text.strip() != "" and "\n" not in text.strip() and "Traceback" not in text


def victim(tmp_path: Path, name: str = "victim.txt") -> Path:
    """A file that must survive every case untouched."""
    v = tmp_path / name
    v.write_text("keep me\n")
    return v


# --- 1. site --out deletes only what it wrote -------------------------------------------------------------------

@pytest.fixture
def repo(tmp_path):
    tiny_repo(tmp_path / "repo")
    return tmp_path / "repo"


def build(repo: Path, out) -> Path:
    return site.build(out, repo, runs=("smollm2-135m", "gemma3-270m"))


def test_site_refuses_a_folder_it_did_not_write(repo, tmp_path, capsys, monkeypatch):
    x = tmp_path / "x"
    x.mkdir()
    (x / "thesis.tex").write_text("years of work")
    with pytest.raises(ValueError) as e:
        build(repo, x)
    assert one_line(str(e.value)) and "did not write" in str(e.value)
    assert (x / "thesis.tex").read_text() == "years of work"
    monkeypatch.chdir(repo)  # the command: one line, exit 2
    assert main(["site", "--out", str(x)]) == 2
    assert one_line(capsys.readouterr().err) and (x / "thesis.tex").exists()


def test_site_never_follows_a_link(repo, tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    v = victim(target)
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(ValueError, match="is a symbolic link"):
        build(repo, tmp_path / "link")
    assert v.read_text() == "keep me\n" and (tmp_path / "link").is_symlink()


@pytest.mark.parametrize("where", ["outputs", "root", "home", "slash", "outputs/run"])
def test_site_refuses_the_repository_outputs_home_and_slash(repo, where, monkeypatch, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    out = {"outputs": repo / "outputs", "root": repo, "home": home, "slash": Path("/"),
           "outputs/run": repo / "outputs" / "smollm2-135m"}[where]
    before = sorted(p.relative_to(repo) for p in repo.rglob("*"))
    with pytest.raises(ValueError) as e:
        build(repo, out)
    assert one_line(str(e.value)) and "--out" in str(e.value)
    assert sorted(p.relative_to(repo) for p in repo.rglob("*")) == before and home.is_dir()


def test_site_replaces_only_its_own_folder(repo, tmp_path):
    out = tmp_path / "site"
    build(repo, out)
    assert (out / site.MARKER).is_file()
    (out / "stale.html").write_text("old")
    build(repo, out)  # its own folder: replaced whole
    assert not (out / "stale.html").exists() and (out / "index.html").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".site.")]
    empty = tmp_path / "empty"
    empty.mkdir()
    build(repo, empty)
    assert (empty / "index.html").exists()


# --- 2. no write follows a planted link, at the file or at a folder inside the run -------------------------------

def plant(path: Path, target: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)
    return path


def test_the_run_lock_is_never_taken_through_a_link(tmp_path, capsys, monkeypatch):
    v = victim(tmp_path)
    run = tmp_path / "run"
    plant(run / ".emolib.lock", v)
    monkeypatch.setattr(runner, "execute", lambda *a, **k: pytest.fail("notebook executed"))
    assert main(["run", TINY, "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and ".emolib.lock" in err and "symbolic link" in err and v.read_text() == "keep me\n"
    (run / ".emolib.lock").unlink()
    os.mkfifo(run / ".emolib.lock")  # a pipe: refused, never opened (opening one blocks)
    with pytest.raises(ValueError, match="not a regular file"):
        with safeio.folder_lock(run):
            pass


def fake_papermill(monkeypatch, seen: list):
    """papermill's execute_notebook replaced by one that writes a small notebook where it is told to."""
    import nbformat
    import papermill

    def execute_notebook(src, out, **kw):
        seen.append(Path(out))
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")]), out)
    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)


def test_papermill_never_writes_through_a_link(tmp_path, monkeypatch):
    v = victim(tmp_path)
    run = tmp_path / "run"
    out = plant(run / "01_data_construction.ipynb", v)
    seen: list = []
    fake_papermill(monkeypatch, seen)
    nb = ROOT / "notebooks" / "01_data_construction.ipynb"
    with pytest.raises(ValueError, match="symbolic link"):
        runner.execute(nb, out, {})
    assert not seen and v.read_text() == "keep me\n"
    out.unlink()
    runner.execute(nb, out, {})  # papermill writes a fresh file in the run folder, renamed over the notebook
    assert seen[0].parent == run and seen[0] != out and not seen[0].exists()
    assert out.is_file() and not out.is_symlink() and json.loads(out.read_text())["cells"]
    assert not [p for p in run.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("where", ["file", "figures folder"])
def test_figures_are_never_written_through_a_link(tmp_path, where):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from emolib.report import plots
    v = victim(tmp_path)
    run = tmp_path / "run"
    if where == "file":
        plant(run / "figures" / "02_x.png", v)
    else:
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        plant(run / "figures", elsewhere)
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title("t")
    fig.suptitle("s")
    monkeypatch_check = plots.check
    try:
        plots.check = lambda fig, name: None  # the readability rules are not what is tested here
        with pytest.raises(ValueError, match="symbolic link"):
            plots.save(fig, run, "02_x")
    finally:
        plots.check = monkeypatch_check
        plt.close(fig)
    assert v.read_text() == "keep me\n"
    if where != "file":
        assert not list((tmp_path / "elsewhere").iterdir())


@pytest.mark.parametrize("writer", ["save_table", "save_csv"])
def test_csv_tables_are_never_written_through_a_link(tmp_path, writer):
    import pandas as pd
    from emolib.causal import steer
    from emolib.report import book
    v = victim(tmp_path)
    run = tmp_path / "run"
    plant(run / "t.csv", v)
    table = pd.DataFrame({"a": [1]})
    with pytest.raises(ValueError, match="symbolic link"):
        if writer == "save_table":
            book.save_table({"run_dir": str(run)}, {"x": table}, "t.csv")
        else:
            steer.save_csv(table, run, "t.csv")
    assert v.read_text() == "keep me\n"


def test_stability_csv_goes_through_the_one_check():
    """stage 2's stability.csv (and its other tables) are written by safeio.atomic_save, never by a bare to_csv."""
    import inspect
    from emolib.identify import selection
    src = inspect.getsource(selection)
    assert ".to_csv(Path(" not in src and 'atomic_save(Path(p["run_dir"]) / "stability.csv"' in src


def test_a_linked_folder_inside_the_run_is_refused(tmp_path):
    """Every parent folder inside the run is checked, not only the file: <run>/cache -> elsewhere."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = tmp_path / "run"
    plant(run / "cache", elsewhere)
    for write in (lambda p: safeio.atomic_write_text(p, "x", base=run), lambda p: safeio.append_line(p, "x", base=run),
                  lambda p: safeio.atomic_save(p, lambda t: Path(t).write_text("x"), base=run)):
        with pytest.raises(ValueError, match=f"{run / 'cache'}: is a symbolic link"):
            write(run / "cache" / "sub" / "f.json")
    assert not list(elsewhere.iterdir())


def test_exercises_never_write_through_a_link(tmp_path, capsys):
    v = victim(tmp_path)
    d = tmp_path / "ex"
    plant(d / "01_data_construction.ipynb", v)
    assert main(["exercises", "--out", str(d)]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and "symbolic link" in err and v.read_text() == "keep me\n"
    assert [p.name for p in d.iterdir()] == ["01_data_construction.ipynb"]  # nothing written before the refusal


@pytest.mark.parametrize("cache", ["reply cache", "vote cache", "dialogues cache"])
def test_a_linked_outputs_cache_folder_is_refused(tmp_path, cache, monkeypatch):
    from emolib.dataset import annotate, build_data, endpoint
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    outputs = tmp_path / "outputs"
    cache_dir = plant(outputs / "cache", elsewhere)
    with pytest.raises(ValueError, match="symbolic link"):
        if cache == "reply cache":
            endpoint.RequestCache(endpoint.cache_path(cache_dir, "fake"))
        elif cache == "vote cache":
            monkeypatch.setattr(annotate, "minilm_voter", lambda emotions: lambda ds: ["anger"] * len(ds))
            annotate.annotate("minilm", ["A: hi\nB: yo"], ["anger", "fear"], {}, cache_dir)
        else:
            p = params.validate({"n_topics": 2, "dialogues_per_topic": 1})
            p["run_dir"] = str(outputs / "run")
            build_data.synthesize(p, cache_dir)
    assert not list(elsewhere.iterdir())
