"""The notebooks in notebooks/ are diffable: no outputs, and in sync with their jupytext percent twins."""

from pathlib import Path

import jupytext
import nbformat
import pytest

NB = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_all_six_notebooks_exist():
    assert [p.name[:2] for p in NB] == ["01", "02", "03", "04", "05", "06"]


@pytest.mark.parametrize("path", NB, ids=lambda p: p.name)
def test_notebook_has_no_outputs_and_matches_its_py_twin(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert any("parameters" in c.metadata.get("tags", []) for c in code)
    twin = jupytext.read(path.with_suffix(".py"))
    assert [(c.cell_type, c.source) for c in twin.cells] == [(c.cell_type, c.source) for c in nb.cells], (
        f"{path.name} and its .py differ: run `make notebooks`"
    )
