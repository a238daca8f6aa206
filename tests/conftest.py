"""Shared fixtures: the tiny random Llama (loaded once), a few dialogues, and the tiny book's runs.

The tiny book (params/test-tiny.yaml, every stage through papermill) is the slowest thing the suite needs. It runs
once per session, in a background process (tests/book_worker.py) started when the session starts: the book end to
end, then a copy of its folder rerun from stage 02 on. The tests that read them (those using `tiny_book` or
`tiny_book_rerun`) are moved to the end of the session, so the runs overlap the rest of the suite instead of adding
to it. Every process's torch uses one thread (below), so they share two cores without oversubscribing them.
"""

import gc
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

# One torch thread per process unless told otherwise, set before torch is imported: the models here are tiny, and the
# tiny book and the real server run beside the tests in background processes. Two threads on two busy cores spin
# against each other (three test modules took 7x longer that way on a loaded CPU).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from emolib.emotions import EMOTIONS  # noqa: E402
from emolib.lm import models  # noqa: E402
from emolib.lm.synth_template import generate_dialogues  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TINY_PARAMS = ROOT / "params/test-tiny.yaml"
BOOK_TIMEOUT_S = 900
SERVER_TIMEOUT_S = 180


def _uses(request, *names) -> bool:
    """Whether any selected test uses one of these fixtures."""
    return any(set(names) & set(getattr(item, "fixturenames", ())) for item in request.session.items)


def pytest_collection_finish(session):
    """What collection imported (torch, transformers, datasets, ...) lives for the whole session: move it out of the
    collector's sight, so that a gc.collect() (after each annotation) and Python's own full collections scan only what
    the tests create. Tenths of a second per collection otherwise."""
    gc.freeze()


def _reads_the_book(item) -> bool:
    return bool({"tiny_book", "tiny_book_rerun"} & set(getattr(item, "fixturenames", ())))


def pytest_collection_modifyitems(session, config, items):
    """Tests of the tiny book's run go last (keeping their order), so the background run has time to finish."""
    late = [item for item in items if _reads_the_book(item)]
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
    """Start the tiny book's runs when the session starts, if any selected test reads them; stop them at the end."""
    if not _uses(request, "tiny_book", "tiny_book_rerun"):
        yield None
        return
    base = tmp_path_factory.mktemp("book")
    first, rerun, log_path = base / "test-tiny", base / "test-tiny-rerun", base / "run.log"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests/book_worker.py"), str(first), str(rerun)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    yield proc, first, rerun, log_path
    if proc.poll() is None:  # the session ended early (-x, a failure, ^C): stop the runs and their kernels
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="session")
def _tiny_book_runs(_tiny_book_in_background):
    """(first run, rerun) folders, once the background process has finished both."""
    if _tiny_book_in_background is None:  # not foreseen at collection (e.g. requested dynamically)
        pytest.fail("the tiny book's runs are set up only for tests that name tiny_book or tiny_book_rerun")
    proc, first, rerun, log_path = _tiny_book_in_background
    try:
        code = proc.wait(timeout=BOOK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the tiny book did not finish in {BOOK_TIMEOUT_S} s; its log: {log_path}")
    assert code == 0, f"the tiny book's run failed (exit {code}):\n{log_path.read_text()[-4000:]}"
    return first, rerun


@pytest.fixture(scope="session")
def tiny_book(_tiny_book_runs):
    """The folder of the tiny book's complete run (all four stages), executed once per session. Read it only."""
    return _tiny_book_runs[0]


@pytest.fixture(scope="session")
def tiny_book_rerun(_tiny_book_runs):
    """A copy of tiny_book's folder (modification times kept) after `run --only 02 03 04` into it."""
    return _tiny_book_runs[1]


@pytest.fixture(scope="session", autouse=True)
def _smollm2_server_in_background(request, tmp_path_factory):
    """Start `transformers serve` on the embedded SmolLM2 when the session starts, if any selected test uses it, so
    that its start-up overlaps other tests; stop it at the end."""
    if not _uses(request, "smollm2_server"):
        yield None
        return
    from emolib.dataset import endpoint

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log_path = tmp_path_factory.mktemp("server") / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            endpoint.serve_command(port), env=endpoint.serve_env(threads=1), stdout=subprocess.DEVNULL, stderr=log
        )
    yield proc, port, log_path
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def smollm2_server(_smollm2_server_in_background):
    """The base URL (http://127.0.0.1:PORT/v1) of `transformers serve` on the embedded SmolLM2, once it answers."""
    if _smollm2_server_in_background is None:
        pytest.fail("smollm2_server is started only for tests that name it as a fixture")
    proc, port, log_path = _smollm2_server_in_background
    deadline = time.monotonic() + SERVER_TIMEOUT_S
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
            return f"http://127.0.0.1:{port}/v1"
        except OSError:
            assert proc.poll() is None, f"transformers serve exited: {log_path.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"transformers serve did not come up in {SERVER_TIMEOUT_S} s"
            time.sleep(0.5)
