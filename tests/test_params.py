"""Parameter files and notebook parameter cells agree with the schema; bad input fails early with one clear line."""

import ast
from pathlib import Path

import pytest
import yaml

from emolib import params
from emolib.params import ParamError

ROOT = Path(__file__).resolve().parent.parent
PARAM_FILES = sorted((ROOT / "params").glob("*.yaml"))
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0[1-5]_*.py"))


def notebook_parameters(path: Path) -> dict:
    """The assignments of a percent-format notebook's parameters cell."""
    text = path.read_text()
    cell = text.split('# %% tags=["parameters"]', 1)[1].split("\n", 1)[1].split("# %%", 1)[0]
    return {n.targets[0].id: ast.literal_eval(n.value) for n in ast.parse(cell).body}


def test_every_params_key_is_a_parameter_of_a_notebook_that_takes_it():
    declared = {p.name[:2]: set(notebook_parameters(p)) for p in NOTEBOOKS}
    assert PARAM_FILES and len(declared) == 5
    for f in PARAM_FILES:
        for key in yaml.safe_load(f.read_text()):
            takers = params.SCHEMA[key].notebooks
            assert all(key in declared[nb] for nb in takers), f"{f.name}: {key} missing from notebook(s) {takers}"


def test_notebook_parameter_cells_match_the_schema_defaults():
    for nb in NOTEBOOKS:
        cell = notebook_parameters(nb)
        cell.pop("run_dir")
        assert cell == params.defaults(nb.name[:2]), nb.name


@pytest.mark.parametrize("path", PARAM_FILES, ids=lambda p: p.name)
def test_every_params_file_validates(path):
    p = params.load(path)
    assert p["run_name"] and p["emotions"]


@pytest.mark.parametrize(
    "key,value,needle",
    [
        ("nonsense_key", 1, "unknown key 'nonsense_key'"),
        ("top_rate", 1.5, "'top_rate' must be <= 1.0"),
        ("top_rate", 0, "'top_rate' must be > 0.0"),
        ("top_rate", "a lot", "'top_rate' must be a number"),
        ("filter_quantile", -0.1, "'filter_quantile' must be >= 0.0"),
        ("n_topics", 2.5, "'n_topics' must be an integer"),
        ("emotions", ["anger", "boredom"], "'emotions' unknown emotion 'boredom'; allowed: anger, disgust"),
        ("model", "no-such-model", "'model' unknown model 'no-such-model'; allowed: a preset (smollm2-135m-instruct"),
        ("model", "/no/such/file.gguf", "'model' GGUF file not found"),
        ("data_path", "/no/such/emoprism.json", "'data_path' names a file that does not exist"),
        ("record_tensor", "gate", "'record_tensor' must be one of act, product"),
        ("record_tokens", "last", "'record_tokens' must be one of dialogue, answer"),
        ("selective_variant", "best", "'selective_variant' must be auto, paper or one of paper-argmax"),
        ("selection_scope", "local", "'selection_scope' must be one of global, per_emotion"),
        ("n_random_sets", 1, "'n_random_sets' must be >= 2"),
        ("calibrate", "yes", "'calibrate' must be true or false"),
        ("annotators", ["minilm"], "'annotators' must name exactly three annotators"),
        ("device", "gpu", "'device' must be auto, cpu, cuda, cuda:N or mps"),
        ("direction_site", "attention", "'direction_site' must be one of residual, mlp"),
    ],
)
def test_bad_values_give_one_line_naming_the_key(key, value, needle):
    with pytest.raises(ParamError) as e:
        params.validate({key: value}, "x.yaml")
    msg = str(e.value)
    assert needle in msg and "\n" not in msg and msg.startswith("x.yaml: ")


def test_joy_is_happiness_and_order_is_canonical():
    p = params.validate({"emotions": ["joy", "anger"]})
    assert p["emotions"] == ["anger", "happiness"]


def test_cross_checks(tmp_path):
    with pytest.raises(ParamError, match="'data_path' is required when data_source is emoprism"):
        params.validate({"data_source": "emoprism"})
    f = tmp_path / "x.csv"
    f.write_text("")
    with pytest.raises(ParamError, match="must end in .json or .json.gz"):
        params.validate({"data_source": "emoprism", "data_path": str(f)})
    with pytest.raises(ParamError, match="prompt_template' must contain a {dialogue} slot"):
        params.validate({"prompt_template": "no slot"})
    with pytest.raises(ParamError, match="'direction_tokens' answer reads the answer pass"):
        params.validate({"direction_tokens": "answer", "answer_pass": False})


def test_missing_params_file_and_cli_exit_code(tmp_path, capsys):
    from emolib.__main__ import main

    assert main(["check", str(tmp_path / "nope.yaml")]) == 2
    assert "parameter file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("top_rate: 2\n")
    assert main(["run", str(bad)]) == 2  # fails before any notebook or model
    assert "'top_rate' must be <= 1.0" in capsys.readouterr().err
