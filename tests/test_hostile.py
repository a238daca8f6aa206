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
