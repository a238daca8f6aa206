"""A notebook opened in Jupyter runs in notebooks/: its default run folder is found under the project root."""

from pathlib import Path

from emolib import params

ROOT = Path(params.__file__).resolve().parent.parent


def test_run_dir_relative_to_the_project_from_notebooks(monkeypatch):
    monkeypatch.chdir(ROOT / "notebooks")
    assert params.resolve_run_dir("outputs/some-run") == str(ROOT / "outputs" / "some-run")
    assert params.resolve_run_dir("../outputs/some-run") == "../outputs/some-run"  # the exercises' own relative path


def test_run_dir_kept_as_given_at_the_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert params.resolve_run_dir("outputs/some-run") == "outputs/some-run"
