"""The notebook lint: each rule finds its defect in a small hand-made notebook, and passes a clean one; the
committed showcase runs pass every rule (after they are re-executed)."""

import base64
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import nbformat
import pytest

from emolib import runner
from emolib.report import lint

ROOT = Path(__file__).resolve().parent.parent
SHOWCASE = [ROOT / "outputs" / n for n in ("smollm2-135m", "gemma3-270m", "comparison")]


def _png(shift: float = 0.0, dpi: int = 50) -> str:
    """A small figure as a notebook's base64 PNG; shift moves the line (a different figure)."""
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0 + shift, 1])
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _out(data: dict, kind: str = "display_data") -> dict:
    o = nbformat.v4.new_output(kind, data=data, **({"execution_count": 1} if kind == "execute_result" else {}))
    return o


def _clean_nb(tmp_path: Path) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(
        "seed = 0", metadata={"tags": ["parameters"], "jupyter": {"source_hidden": True}}
    )
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"## {lint.FINDINGS_TITLE}\n\n- a finding"),
        nbformat.v4.new_markdown_cell(
            "# 02 · Title\n[previous](01_data_construction.ipynb) · [next](03_ablation.ipynb)"
        ),
        params,
        nbformat.v4.new_code_cell("print('hello')", outputs=[nbformat.v4.new_output("stream", text="hello\n")]),
        nbformat.v4.new_code_cell("show()", outputs=[_out({"image/png": _png(0.0)})]),
        nbformat.v4.new_code_cell("show()", outputs=[_out({"image/png": _png(0.5)})]),
        nbformat.v4.new_markdown_cell("## Questions\n1. Why?"),
    ]
    return nb


def test_a_clean_notebook_passes_every_rule(tmp_path):
    path = tmp_path / "02_neuron_identification.ipynb"
    nbformat.write(_clean_nb(tmp_path), path)
    assert lint.lint_notebook(path) == []


def test_each_rule_finds_its_defect(tmp_path):
    nb = _clean_nb(tmp_path)
    twice = _png(0.0)
    nb.cells[4].outputs = [_out({"image/png": twice}), _out({"image/png": _png(0.0, dpi=50)})]  # same pixels
    nb.cells[3].outputs = [
        nbformat.v4.new_output("stream", text="per emotion: {'anger': 3, 'fear': 4}\n"),
        nbformat.v4.new_output("stream", name="stderr", text="UserWarning: something\n"),
    ]
    nb.cells[5].outputs = [
        _out({"text/plain": "DatasetDict({\n train: Dataset})"}, "execute_result"),
        _out(
            {
                "text/html": "<table><thead><tr><th></th>"
                + "".join(f"<th>c{i}</th>" for i in range(9))
                + "</tr></thead></table>"
            }
        ),
    ]
    nb.cells[2].metadata["jupyter"]["source_hidden"] = False
    nb.cells[2].source = f"run_dir = '{ROOT}/outputs/x'"
    nb.cells.insert(3, nbformat.v4.new_code_cell("if False:\n    print('x')"))
    nb.cells[0].source = "# 02 · Title"
    nb.cells[-1].source = "## The end"
    path = tmp_path / "02_neuron_identification.ipynb"
    nbformat.write(nb, path)
    found = "\n".join(lint.lint_notebook(path))
    for what in [
        "a figure shown twice",
        "printed raw dict",
        "raw repr as the result",
        "a table of 9 columns",
        "local path",
        "not collapsed",
        "shows nothing",
        "warning on stderr",
        "does not open with the generated",
        "no 'Questions' section",
    ]:
        assert what in found, what
    assert all(x.startswith("02_neuron_identification.ipynb ") for x in found.splitlines())


def test_clean_outputs_fixes_what_it_can(tmp_path):
    """The runner's cleaning leaves no pixel-equal figure, no local path and no open parameter cell."""
    nb = _clean_nb(tmp_path)
    nb.cells[4].outputs = [_out({"image/png": _png(0.0)}), _out({"image/png": _png(0.0)})]
    nb.cells[2].metadata = {"tags": ["injected-parameters"]}
    nb.cells[2].source = f"run_dir = '/tmp/pytest-of-me/run'\nother = '{ROOT}/outputs/x'"
    nb.metadata["papermill"] = {
        "parameters": {"run_dir": "/tmp/pytest-of-me/run"},
        "input_path": str(ROOT / "notebooks" / "02_neuron_identification.ipynb"),
    }
    path = tmp_path / "02_neuron_identification.ipynb"
    nbformat.write(nb, path)
    runner.clean_outputs(path)
    assert lint.lint_notebook(path) == []
    cleaned = nbformat.read(path, as_version=4)
    assert cleaned.metadata.papermill.input_path == "notebooks/02_neuron_identification.ipynb"
    assert "other = 'outputs/x'" in cleaned.cells[2].source


def test_lint_refuses_a_folder_without_notebooks(tmp_path):
    with pytest.raises(ValueError, match="lint: .* holds no executed notebooks"):
        lint.lint_run(tmp_path)


@pytest.mark.parametrize("run", SHOWCASE, ids=lambda p: p.name)
def test_committed_showcase_notebooks_pass_the_lint(run):
    """Fails until the showcase runs are re-executed with the course headers, findings cells and clean outputs."""
    if not list(run.glob("*.ipynb")):
        pytest.skip(f"{run} is not committed in this checkout")
    problems = lint.lint_run(run)
    assert not problems, f"{len(problems)} problems, by rule {lint.by_rule(problems)}:\n" + "\n".join(problems)
