"""Shared fixtures: the tiny random Llama (loaded once), a few dialogues, and the tiny book's run.

The tiny book (params/test-tiny.yaml, every stage through papermill) is the slowest thing the suite needs. It runs
once per session, as `python -m emolib run` in a background process started when the session starts, and the tests
that read it (those using `tiny_book`) are moved to the end of the session: the run overlaps the rest of the suite
instead of adding to it. Its torch uses one thread, so the two processes share two cores without oversubscribing them.
"""

import gc
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from emolib import models
from emolib.emotions import EMOTIONS
from emolib.synth_template import generate_dialogues

ROOT = Path(__file__).resolve().parent.parent
TINY_PARAMS = ROOT / "params/test-tiny.yaml"
BOOK_TIMEOUT_S = 900


def pytest_collection_finish(session):
    """What collection imported (torch, transformers, datasets, ...) lives for the whole session: move it out of the
    collector's sight, so that a gc.collect() (after each annotation) and Python's own full collections scan only what
    the tests create. Tenths of a second per collection otherwise."""
    gc.freeze()


def pytest_collection_modifyitems(session, config, items):
    """Tests of the tiny book's run go last (keeping their order), so the background run has time to finish."""
    late = [item for item in items if "tiny_book" in getattr(item, "fixturenames", ())]
    if late:
        ids = {id(item) for item in late}
        items[:] = [item for item in items if id(item) not in ids] + late


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of the 4-layer random Llama, in float32."""
    model, tok = models.load_model("tiny-random-llama", dtype="float32", device="cpu")
    return model, tok


@pytest.fixture(scope="session")
def dialogues():
    """A dozen template dialogues of varied length, with their emotions."""
    rows = generate_dialogues(["cats", "knitting"], list(EMOTIONS), 1, 3)
    return [r["dialogue"] for r in rows], [r["theme"] for r in rows]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session", autouse=True)
def _tiny_book_in_background(request, tmp_path_factory):
    """Start the tiny book's run when the session starts, if any selected test reads it; stop it at the end."""
    if not any("tiny_book" in getattr(item, "fixturenames", ()) for item in request.session.items):
        yield None
        return
    out = tmp_path_factory.mktemp("book") / "test-tiny"
    log_path = out.parent / "run.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "emolib", "run", str(TINY_PARAMS), "--out", str(out)],
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    yield proc, out, log_path
    if proc.poll() is None:  # the session ended early (-x, a failure, ^C): stop the run and its kernels
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="session")
def tiny_book(_tiny_book_in_background):
    """The folder of the tiny book's complete run (all four stages, executed once per session)."""
    if _tiny_book_in_background is None:  # not foreseen at collection (e.g. requested dynamically)
        pytest.fail("tiny_book is set up only for tests that name it as a fixture")
    proc, out, log_path = _tiny_book_in_background
    try:
        code = proc.wait(timeout=BOOK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the tiny book did not finish in {BOOK_TIMEOUT_S} s; its log: {log_path}")
    assert code == 0, f"the tiny book's run failed (exit {code}):\n{log_path.read_text()[-4000:]}"
    return out
