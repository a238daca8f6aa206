"""The course's exercises: the notebooks' reference solutions pass every check, the stubs stop with a helpful
NotImplementedError, each check rejects plausible wrong answers with a precise message, and the exercise notebooks run
under papermill up to their first stub."""

import math
import shutil
from pathlib import Path

import jupytext
import nbformat
import pytest
import torch

from emolib import checks, exercises
from emolib import params as params_mod
from emolib.__main__ import main
from emolib.identify import neurons

ROOT = Path(__file__).resolve().parent.parent
WITH_EXERCISES = {
    "02_neuron_identification": ["the counting hook", "entropy", "LAPE's selection"],
    "03_ablation": ["the ablation hook"],
}


def _exercise_cells(nb, marker: str) -> list[tuple[str, str, str]]:
    """(exercise name, solution or stub cell source, check expression) of every exercise of a notebook."""
    return [
        (exercises._title(nb.cells, i), c.source, exercises._check(nb.cells, i))
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and marker in c.source
    ]


def _all_exercises(stubbed: bool):
    for stem in WITH_EXERCISES:
        py = ROOT / "notebooks" / f"{stem}.py"
        nb = exercises.exercise_notebook(py)[0] if stubbed else jupytext.read(py)
        yield from ((stem, *x) for x in _exercise_cells(nb, "# YOUR CODE HERE" if stubbed else exercises.BEGIN))


def test_every_notebook_exercise_is_found():
    assert {
        stem: [name for s, name, _, _ in _all_exercises(False) if s == stem] for stem in WITH_EXERCISES
    } == WITH_EXERCISES


@pytest.mark.parametrize("stem,name,source,check", list(_all_exercises(False)), ids=lambda x: str(x)[:20])
def test_reference_solutions_pass_their_checks(stem, name, source, check, capsys):
    ns = {"torch": torch, "neurons": neurons, "checks": checks}
    exec(source, ns)
    assert eval(check, ns) is True, capsys.readouterr().out
    assert capsys.readouterr().out.startswith("✓ check_")


@pytest.mark.parametrize("stem,name,source,check", list(_all_exercises(True)), ids=lambda x: str(x)[:20])
def test_stubs_stop_with_a_helpful_message(stem, name, source, check):
    assert exercises.BEGIN not in source and "NotImplementedError" in source
    ns = {"torch": torch, "neurons": neurons, "checks": checks}
    exec(source, ns)
    with pytest.raises(NotImplementedError) as err:
        eval(check, ns)
    msg = str(err.value)
    assert f"Exercise '{name}'" in msg and check in msg and f"notebooks/{stem}.py" in msg and "YOUR CODE HERE" in msg


# plausible wrong answers, each with the words its message must contain


def _q(P):
    return P / P.sum(0, keepdim=True)


def entropy_log2(P):
    q = _q(P)
    return -torch.where(q > 0, q * q.log2(), torch.zeros_like(q)).sum(0)


def entropy_without_0log0(P):
    q = _q(P)
    return -(q * q.log()).sum(0)


def entropy_not_normalised(P):
    return -torch.where(P > 0, P * P.log(), torch.zeros_like(P)).sum(0)


def entropy_per_emotion(P):
    q = _q(P)
    return -torch.where(q > 0, q * q.log(), torch.zeros_like(q)).sum(1)


def _ranked(P, top_rate, key, eligible=None):
    E, L, D = P.shape
    k = max(1, round(top_rate * L * D))
    if eligible is not None:
        key = torch.where(eligible, key, torch.inf)
    return [divmod(int(u), D) for u in torch.argsort(key.flatten(), stable=True)[:k]]


def select_without_filter(P, top_rate, filter_quantile):
    return _ranked(P, top_rate, neurons.entropy(P))


def select_highest_entropy(P, top_rate, filter_quantile):
    thr = torch.quantile(P.flatten().float(), filter_quantile)
    return _ranked(P, top_rate, -neurons.entropy(P), P.max(0).values >= thr)


def counting_ge_zero(counts, keep):
    def hook(module, args, output):
        counts.add_((output[keep] >= 0).sum(0))

    return hook


def counting_ignores_keep(counts, keep):
    def hook(module, args, output):
        counts.add_((output > 0).sum((0, 1)))

    return hook


def counting_returns_counts(counts, keep):
    return lambda module, args, output: counts.add_((output[keep] > 0).sum(0))


def counting_rebinds(counts, keep):
    def hook(module, args, output):
        counts += (output[keep] > 0).sum(0)  # noqa: F823, F841 (the bug: a new local name)

    return hook


def ablation_on_the_output(idx):
    def hook(module, args, output):
        output[..., idx] = 0
        return output

    return hook


def ablation_of_everything(idx):
    return lambda module, args: (args[0] * 0,)


def ablation_on_a_copy(idx):
    def hook(module, args):
        x = args[0].clone()
        x[..., idx] = 0

    return hook


WRONG = [
    (checks.check_entropy, entropy_log2, "log2(6)"),
    (checks.check_entropy, entropy_without_0log0, "0 log 0 = 0"),
    (checks.check_entropy, entropy_not_normalised, "normalise"),
    (checks.check_entropy, entropy_per_emotion, "returned shape"),
    (checks.check_selection, select_without_filter, "without LAPE's filter"),
    (checks.check_selection, select_highest_entropy, "highest entropies"),
    (checks.check_counting_hook, counting_ge_zero, "> 0, strictly"),
    (checks.check_counting_hook, counting_ignores_keep, "outside keep"),
    (checks.check_counting_hook, counting_rebinds, "counts.add_"),
    (checks.check_counting_hook, counting_returns_counts, "return nothing"),
    (checks.check_ablation_hook, ablation_on_the_output, "forward pre-hook"),
    (checks.check_ablation_hook, ablation_of_everything, "an empty mask changed the logits"),
    (checks.check_ablation_hook, ablation_on_a_copy, "output is not zero"),
]


@pytest.mark.parametrize("check,wrong,words", WRONG, ids=[w.__name__ for _, w, _ in WRONG])
def test_checks_reject_plausible_wrong_answers(check, wrong, words, capsys):
    assert check(wrong) is False
    out = capsys.readouterr().out
    assert out.startswith(f"✗ {check.__name__}: ") and words in out and out.count("\n") == 1, out


def test_a_crashing_answer_is_reported_not_raised(capsys):
    assert checks.check_entropy(lambda P: P.no_such_method()) is False
    assert "your function raised AttributeError" in capsys.readouterr().out


def test_entropy_cases_are_the_hand_computation():
    P, expected = checks._entropy_cases()
    assert torch.allclose(neurons.entropy(P)[0], torch.tensor(list(expected.values()), dtype=torch.float64))
    assert math.isclose(list(expected.values())[0], math.log(6))


def test_stub_needs_balanced_markers():
    assert (
        exercises.stub("def f():\n    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION\n", "m")
        == "def f():\n    # YOUR CODE HERE (then run the check below)\n    raise NotImplementedError('m')"
    )
    for bad in ("# BEGIN SOLUTION\nx = 1\n", "x = 1\n# END SOLUTION\n", "# BEGIN SOLUTION\n# BEGIN SOLUTION\n"):
        with pytest.raises(ValueError, match="SOLUTION"):
            exercises.stub(bad, "m")


def test_make_exercises_writes_stubbed_copies(tmp_path, capsys):
    assert main(["exercises", "--out", str(tmp_path / "ex")]) == 0
    written = sorted(p.name for p in (tmp_path / "ex").glob("*.ipynb"))
    assert written == sorted(p.with_suffix(".ipynb").name for p in (ROOT / "notebooks").glob("0[1-5]_*.py"))
    for stem, names in WITH_EXERCISES.items():
        text = (tmp_path / "ex" / f"{stem}.ipynb").read_text()
        assert exercises.BEGIN not in text and text.count("raise NotImplementedError") == len(names)
        assert "counts.add_((output[keep] > 0)" not in text and "x[..., idx] = 0" not in text  # no solution left
    assert "02_neuron_identification.ipynb: the counting hook, entropy, LAPE's selection" in capsys.readouterr().out
    assert main(["exercises", "--out", str(tmp_path / "q"), "--params", str(ROOT / "params/quick.yaml")]) == 0
    nb = nbformat.read(tmp_path / "q" / "02_neuron_identification.ipynb", as_version=4)
    injected = [c.source for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and 'run_name = "quick"' in injected[0] and "outputs/quick" in injected[0]


def test_exercise_notebooks_run_to_their_first_stub(tiny_book, tmp_path):
    import papermill as pm

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_book, run_dir)  # the stages' inputs; the session's run itself is only read
    exercises.write(tmp_path / "ex")
    p = params_mod.load(str(ROOT / "params/test-tiny.yaml"))
    for stem, names in WITH_EXERCISES.items():
        out = tmp_path / f"{stem}.out.ipynb"
        with pytest.raises(pm.PapermillExecutionError) as err:
            pm.execute_notebook(
                str(tmp_path / "ex" / f"{stem}.ipynb"),
                str(out),
                parameters={**params_mod.for_notebook(p, stem[:2]), "run_dir": str(run_dir)},
                kernel_name="python3",
                cwd=str(ROOT),
                progress_bar=False,
            )
        assert err.value.ename == "NotImplementedError" and f"Exercise '{names[0]}'" in err.value.evalue
        nb = nbformat.read(out, as_version=4)
        errors = [
            i for i, c in enumerate(nb.cells) if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
        ]
        assert len(errors) == 1 and "checks.check_" in nb.cells[errors[0]].source  # stopped at the first check
        assert "✓" not in "".join(str(o) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
