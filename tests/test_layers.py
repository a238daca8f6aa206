"""emolib's layers, kept by tools (issue 29): import-linter's contracts in pyproject.toml hold, and a planted upward
import breaks them; no import cycle between modules; no module imports another module's underscore name; modules
of one job, none over about 400 lines without its reason in the docstring; ruff's lint and format checks pass."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LINTED = ["emolib", "tests", "benchmarks", *sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("notebooks/0*.py"))]
LONG_REASON = "Longer than 400 lines:"  # the phrase a long module's docstring uses to say why
MAX_LINES = 400


def _lint_imports(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    """Run import-linter on the package found under pythonpath, with cwd's pyproject.toml."""
    return subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(pythonpath), "PATH": str(BIN)},
    )


def test_the_import_contracts_hold():
    got = _lint_imports(ROOT, ROOT)
    assert got.returncode == 0, got.stdout + got.stderr
    assert "0 broken" in got.stdout


def test_a_planted_upward_import_breaks_the_layers(tmp_path):
    """lm (a low layer) importing report (a high one) is reported by name, and the run fails."""
    shutil.copytree(ROOT / "emolib", tmp_path / "emolib", ignore=shutil.ignore_patterns("__pycache__", "data"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    target = tmp_path / "emolib" / "lm" / "models.py"
    target.write_text(target.read_text() + "\nfrom ..report import tables  # planted\n")
    got = _lint_imports(tmp_path, tmp_path)
    assert got.returncode != 0
    assert "emolib.lm.models -> emolib.report.tables" in got.stdout


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    adj = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in adj[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for m in sorted(adj):
        if m not in index:
            visit(m)
    return out


def test_no_import_cycle_between_modules():
    assert _cycles(grimp.build_graph("emolib")) == []


def test_the_cycle_finder_finds_a_planted_cycle(tmp_path, monkeypatch):
    pkg = tmp_path / "loopy"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _cycles(grimp.build_graph("loopy")) == [["loopy.a", "loopy.b"]]


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _private_imports(path: Path, root: Path = ROOT) -> list[str]:
    """`from X import _name`, and `mod._name` where `mod` is an emolib module imported by name (dunders allowed)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found, modules = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            found += [f"{path.relative_to(root)}:{node.lineno} {a.name}" for a in node.names if _private(a.name)]
            if node.level or (node.module or "").startswith("emolib"):
                modules |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            modules |= {a.asname or a.name for a in node.names if a.name.startswith("emolib")}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            if _private(node.attr):
                found.append(f"{path.relative_to(root)}:{node.lineno} {node.value.id}.{node.attr}")
    return found


def test_no_module_imports_another_modules_private_name():
    assert [x for p in sorted((ROOT / "emolib").rglob("*.py")) for x in _private_imports(p)] == []


def test_the_private_name_check_finds_both_forms(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("from .budget import _mmss\nfrom . import effects\n\n\ndef g():\n    return effects._take(1)\n")
    assert _private_imports(f, tmp_path) == ["m.py:1 _mmss", "m.py:6 effects._take"]


def test_long_modules_say_why():
    long = []
    for p in sorted((ROOT / "emolib").rglob("*.py")):
        text = p.read_text(encoding="utf-8")
        doc = ast.get_docstring(ast.parse(text)) or ""
        if len(text.splitlines()) > MAX_LINES and LONG_REASON not in doc:
            long.append(f"{p.relative_to(ROOT)} ({len(text.splitlines())} lines)")
    assert long == []


@pytest.mark.parametrize("args", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff(args):
    got = subprocess.run([str(BIN / "ruff"), *args, *LINTED], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stdout[-4000:] + got.stderr[-2000:]
