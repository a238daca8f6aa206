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
from test_site import PNG, tiny_repo

from emolib import params, runner, safeio
from emolib.__main__ import main
from emolib.report import site

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
    out = {
        "outputs": repo / "outputs",
        "root": repo,
        "home": home,
        "slash": Path("/"),
        "outputs/run": repo / "outputs" / "smollm2-135m",
    }[where]
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

    from emolib.report import plots_common

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
    monkeypatch_check = plots_common.check
    try:
        plots_common.check = lambda fig, name: None  # the readability rules are not what is tested here
        with pytest.raises(ValueError, match="symbolic link"):
            plots_common.save(fig, run, "02_x")
    finally:
        plots_common.check = monkeypatch_check
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
    for write in (
        lambda p: safeio.atomic_write_text(p, "x", base=run),
        lambda p: safeio.append_line(p, "x", base=run),
        lambda p: safeio.atomic_save(p, lambda t: Path(t).write_text("x"), base=run),
    ):
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


# --- 3. keys and URL credentials stay out of every file and message; 4. servers cannot exhaust or hang a build ---

SECRET = "sk-test-secret-0123456789"


class Server:
    """A local server (127.0.0.1 only) whose handler(self) writes the whole reply itself, GET and POST alike."""

    def __init__(self, handler):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.calls = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                server.calls += 1
                self.body = None
                self._run()

            def do_POST(self):
                server.calls += 1
                self.body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self._run()

            def _run(self):
                try:
                    handler(self)
                except (BrokenPipeError, ConnectionResetError, OSError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    made = []

    def make(handler):
        made.append(Server(handler))
        return made[-1]

    yield make
    for s in made:
        s.close()


def send_json(h, obj, status=200):
    data = json.dumps(obj).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)


def completion(text, finish="stop", model="fake"):
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1},
    }


def ep_for(s, **kw):
    from emolib.dataset.endpoint import Endpoint

    kw = {"model": "fake", "backoff": 0.01, "request_timeout": 5.0, "max_concurrency": 1, "max_tokens": 10, **kw}
    return Endpoint(base_url=s.base_url, **kw)


def models_reply(name):
    def handler(h):
        if h.command == "GET":
            send_json(
                h,
                {
                    "object": "list",
                    "data": [{"id": name.replace("<key>", h.headers["Authorization"].split()[-1]), "object": "model"}],
                },
            )
        else:
            send_json(h, completion("Anger"))

    return handler


@pytest.mark.parametrize("name", ["Bearer <key>", "<key>", "a b", "x" * 129, "../../etc/passwd\n"])
def test_an_auto_model_name_that_is_not_a_name_is_refused(server, tmp_path, monkeypatch, capsys, name):
    from emolib.dataset import endpoint

    monkeypatch.setenv("EMOLIB_TEST_KEY", SECRET)
    s = server(models_reply(name))
    with pytest.raises(endpoint.EndpointError) as e:
        endpoint.vote(
            ["A: hi\nB: yo"], ["anger", "fear"], ep_for(s, model="auto", api_key_env="EMOLIB_TEST_KEY"), tmp_path
        )
    msg = str(e.value)
    assert one_line(msg) and SECRET not in msg and "not a plain model name" in msg
    assert SECRET not in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_a_plain_auto_model_name_is_used(server, tmp_path):
    from emolib.dataset import endpoint

    s = server(models_reply("org/Model-1.5:q4"))
    assert endpoint.resolve_model(ep_for(s, model="auto")).model == "org/Model-1.5:q4"


@pytest.mark.parametrize("field", ["finish_reason", "model"])
def test_reply_fields_that_echo_the_key_are_never_cached(server, tmp_path, monkeypatch, field):
    from emolib.dataset import endpoint

    def handler(h):
        echo = f"you sent {h.headers['Authorization']}"
        send_json(h, completion("Anger", finish=echo) if field == "finish_reason" else completion("Anger", model=echo))

    monkeypatch.setenv("EMOLIB_TEST_KEY", SECRET)
    s = server(handler)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the model field: another model's answer is warned about
        labels, _ = endpoint.vote(
            ["A: so angry\nB: yo"], ["anger", "fear"], ep_for(s, api_key_env="EMOLIB_TEST_KEY"), tmp_path
        )
    assert labels == ["anger"]
    for f in tmp_path.rglob("*"):
        assert SECRET.encode() not in f.read_bytes() and b"test-secret" not in f.read_bytes()


def test_a_password_in_the_url_is_never_printed(server, tmp_path, capsys):
    from emolib.dataset import endpoint

    s = server(lambda h: send_json(h, completion("Anger")))
    url = s.base_url.replace("http://", "http://user:hunter2pass@")
    ep = endpoint.Endpoint(base_url=url, model="fake", backoff=0.01, request_timeout=5.0, max_concurrency=1)
    endpoint.vote(["A: so angry\nB: yo"], ["anger", "fear"], ep, tmp_path)
    err = capsys.readouterr().err
    assert "hunter2pass" not in err and "***@127.0.0.1" in err
    assert "hunter2pass" not in endpoint.redact(f"failed for {url}")
    for f in tmp_path.rglob("*"):
        assert b"hunter2pass" not in f.read_bytes()


def test_a_dated_snapshot_passes_the_model_check_and_a_sibling_does_not(server, tmp_path):
    import warnings

    from emolib.dataset import endpoint

    s = server(lambda h: send_json(h, completion("Anger", model="fake-mini")))
    with pytest.warns(UserWarning, match="answered by 'fake-mini'"):
        endpoint.vote(["A: so angry\nB: yo"], ["anger", "fear"], ep_for(s), tmp_path)
    s2 = server(lambda h: send_json(h, completion("Anger", model="fake-2024-08-06")))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        endpoint.vote(["A: so angry\nB: yo"], ["anger", "fear"], ep_for(s2), tmp_path / "b")


def endless(h):
    """A chunked body that never ends (bounded here: 30 s or 400 MB, whichever first)."""
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    chunk = b"x" * (1 << 20)
    start = b'{"choices": [{"message": {"content": "'
    h.wfile.write(f"{len(start):x}\r\n".encode() + start + b"\r\n")
    t0 = time.monotonic()
    for _ in range(400):
        if time.monotonic() - t0 > 30:
            break
        h.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")


def big(h):
    """A 300 MB body, announced."""
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(300 * 2**20))
    h.end_headers()
    for _ in range(300):
        h.wfile.write(b" " * (1 << 20))


def trickle(h):
    """One byte every 0.5 s (bounded: 60 bytes)."""
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", "60")
    h.end_headers()
    for _ in range(60):
        h.wfile.write(b" ")
        h.wfile.flush()
        time.sleep(0.5)


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("kind", ["endless", "300 MB", "trickle", "endless /v1/models", "trickle /v1/models"])
def test_a_server_cannot_exhaust_memory_or_hang_the_build(server, tmp_path, kind):
    from emolib.dataset import endpoint

    s = server({"endless": endless, "300": big, "trickle": trickle}[kind.split()[0]])
    before, t0 = peak_rss_mb(), time.monotonic()
    model = "auto" if "models" in kind else "fake"  # GET /v1/models (sync client) or a chat completion (async)
    with pytest.raises(endpoint.EndpointError) as e:
        endpoint.vote(
            ["A: so angry\nB: yo"],
            ["anger", "fear"],
            ep_for(s, model=model, request_timeout=2.0, max_retries=0, malformed_retries=0),
            tmp_path,
        )
    took = time.monotonic() - t0
    assert one_line(str(e.value)) and took < 20
    assert peak_rss_mb() - before < 200
    if model == "fake":
        assert ("above" in str(e.value)) if kind != "trickle" else ("timeout" in str(e.value))


# --- 5. the site carries no script; names are text; nothing from outside the repository is copied ---------------


def hostile_notebook(d: Path, name: str = "01_x.ipynb") -> None:
    import nbformat

    md = (
        "# Title\n\n<script>alert('md')</script> [click](javascript:alert('link')) "
        "<a href=\"JaVaScRiPt:alert('a')\">a</a> <img src=x onerror=\"alert('img')\"> "
        '<iframe src="https://evil.example/"></iframe> ok text `P > 0`'
    )
    html_out = nbformat.v4.new_output(
        "display_data",
        data={
            "text/html": "<div onclick=\"alert('div')\"><table><tr><td>1</td></tr></table>"
            "<script>alert('out')</script><img src=x onerror=\"alert('out-img')\"></div>",
            "application/javascript": "alert('js')",
            "text/plain": "x",
        },
    )
    svg = nbformat.v4.new_output(
        "display_data",
        data={"image/svg+xml": "<svg onload=\"alert('svg')\"><script>alert('svg2')</script></svg>", "text/plain": "s"},
    )
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell(md), nbformat.v4.new_code_cell("x", outputs=[html_out, svg])]
    )
    nbformat.write(nb, d / name)


def test_the_site_carries_no_script(repo, tmp_path):
    d = repo / "outputs" / "smollm2-135m"
    hostile_notebook(d)
    hostile_notebook(d, "03_<img src=x onerror=alert('name')>.ipynb")
    index = build(repo, tmp_path / "site")
    pages = [p.read_text() for p in index.parent.rglob("*.html")]
    from bs4 import BeautifulSoup

    for page in pages:
        soup = BeautifulSoup(page, "html.parser")
        assert not soup.find_all(["script", "iframe"])
        for tag in soup.find_all(True):
            for attr, value in tag.attrs.items():
                assert not attr.lower().startswith("on"), (tag.name, attr)
                assert "javascript:" not in str(value).lower().replace(" ", ""), (tag.name, attr, value)
    page = (index.parent / "outputs" / "smollm2-135m" / "01_x.html").read_text()
    assert "<td>1</td>" in page and "ok text" in page and "P &gt; 0" in page  # what is safe is kept


def test_the_site_never_copies_a_file_from_outside_the_repository(repo, tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(PNG + b"SECRET")
    d = repo / "outputs" / "smollm2-135m"
    (d / "figures" / "x.png").unlink()
    (d / "figures" / "x.png").symlink_to(secret)  # linked from the notebooks: ![fig](figures/x.png)
    (d / "table.csv").unlink()
    (d / "table.csv").symlink_to("/etc/passwd")
    out = build(repo, tmp_path / "site").parent
    for f in out.rglob("*"):
        if f.is_file():
            assert b"SECRET" not in f.read_bytes() and b"root:" not in f.read_bytes()


# --- 8/11. the site and the lint: special files, PNG bombs, notebooks that are not notebooks -----------------------


def png_bomb() -> bytes:
    """A small PNG that claims 60000 x 60000 pixels."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = zlib.compress(b"\0" * 1000)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", raw)
        + chunk(b"IEND", b"")
    )


def notebook_with_image(path: Path, data: bytes) -> None:
    import base64

    import nbformat

    out = nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(data).decode()})
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x", outputs=[out])]), path)


@pytest.mark.parametrize("kind", ["bomb", "not an image"])
def test_lint_reports_an_undecodable_figure(tmp_path, capsys, kind):
    run = tmp_path / "run"
    run.mkdir()
    notebook_with_image(run / "06_x.ipynb", png_bomb() if kind == "bomb" else b"\x89PNG not at all")
    assert main(["lint", str(run)]) == 1
    out = capsys.readouterr()
    assert "cell 0: an image that cannot be decoded" in out.out and "Traceback" not in out.err


@pytest.mark.parametrize(
    "content",
    [
        '{"cells": 5, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}',
        '{"cells": [{"cell_type": "code", "source": "x", "metadata": {}, '
        '"execution_count": 1, "outputs": [{"output_type": "stream", "name": "stdout", '
        '"text": 12345}]}], "metadata": {}, "nbformat": 4, "nbformat_minor": 4}',
        "not json at all",
        "[" * 100000,
    ],
)
def test_lint_and_site_name_a_notebook_that_is_not_one(tmp_path, capsys, repo, content, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "01_x.ipynb").write_text(content)
    assert main(["lint", str(run)]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and "01_x.ipynb: is not a valid notebook" in err
    (repo / "outputs" / "smollm2-135m" / "01_x.ipynb").write_text(content)
    monkeypatch.chdir(repo)
    with pytest.raises(ValueError, match="is not a valid notebook"):
        build(repo, tmp_path / "site")


@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_lint_refuses_special_files(tmp_path, capsys, special):
    run = tmp_path / "run"
    run.mkdir()
    if special == "fifo":
        os.mkfifo(run / "01_x.ipynb")
    else:
        (run / "01_x.ipynb").symlink_to("/dev/zero")
    assert main(["lint", str(run)]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and "not a regular file" in err


def test_site_figures_that_are_special_files_are_skipped(repo, tmp_path):
    d = repo / "outputs" / "smollm2-135m"
    import nbformat

    fig = nbformat.v4.new_output("display_data", data={"image/png": __import__("base64").b64encode(PNG).decode()})
    show = nbformat.v4.new_code_cell('book.show(fig, P, f"04_{n}")', outputs=[fig])
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T"), show]), d / "02_y.ipynb")
    (d / "figures" / "04_a.png").symlink_to("/dev/zero")
    os.mkfifo(d / "figures" / "04_b.png")
    (d / "figures" / "04_c.png").write_bytes(png_bomb())
    t0 = time.monotonic()
    build(repo, tmp_path / "site")
    assert time.monotonic() - t0 < 60


# --- 6. every named set of neurons.json is checked where it is read ------------------------------------------------


def neurons_with_named(run: Path, paper, named_name="paper") -> Path:
    d = {
        "model": "tiny-random-llama",
        "n_layers": 4,
        "d_ff": 128,
        "emotions": ["anger", "fear"],
        "params": {},
        "neurons": {"anger": [[0, 1]], "fear": [[1, 2]]},
        "named_sets": {"paper": {"neurons": {"anger": [[0, 1]], "fear": [[1, 2]]}}},
    }
    d["named_sets"][named_name] = {"neurons": paper}
    run.mkdir(parents=True, exist_ok=True)
    (run / "neurons.json").write_text(json.dumps(d))
    return run / "neurons.json"


BAD_SETS = {
    "index -1": ({"anger": [[0, -1]], "fear": []}, "[0, -1] outside"),
    "layer -1": ({"anger": [[-1, 3]], "fear": []}, "[-1, 3] outside"),
    "index d_ff": ({"anger": [[0, 128]], "fear": []}, "[0, 128] outside"),
    "layer too deep": ({"anger": [[9, 0]], "fear": []}, "[9, 0] outside"),
    "a float": ({"anger": [[0, 1.5]], "fear": []}, "integer pairs"),
    "a string": ({"anger": "all", "fear": []}, "no list of [layer, index] pairs for anger"),
    "an emotion missing": ({"anger": [[0, 1]]}, "no list of [layer, index] pairs for fear"),
    "not a mapping": ([[0, 1]], "must map each emotion"),
}


@pytest.mark.parametrize("kind", list(BAD_SETS))
def test_named_sets_are_checked_by_classify_before_the_model_loads(tmp_path, capsys, monkeypatch, kind):
    from emolib.lm import classify

    sets, needle = BAD_SETS[kind]
    path = neurons_with_named(tmp_path / "run", sets)
    monkeypatch.setattr(classify, "load_classifier", lambda p: pytest.fail("model loaded"))
    src = tmp_path / "in.jsonl"
    src.write_text('{"dialogue": "A: hi\\nB: hello"}\n')
    code = main(
        [
            "classify",
            "--params",
            TINY,
            "--input",
            str(src),
            "--output",
            str(tmp_path / "o.jsonl"),
            "--neurons",
            str(path),
            "--ablate",
            "anger",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and one_line(err) and needle in err and str(path) in err and "named_sets.paper" in err


def test_named_sets_are_checked_by_steer_and_the_notebooks(tmp_path, capsys, monkeypatch):
    from emolib.identify import neurons
    from emolib.lm import models

    path = neurons_with_named(tmp_path / "run", {"anger": [[1, -1]], "fear": []}, "selective")
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    code = main(
        [
            "steer",
            "--params",
            TINY,
            "--neurons",
            str(path),
            "--emotion",
            "anger",
            "--alpha",
            "2",
            "--prompt",
            "A: hi\\nB:",
            "--set",
            "selective",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and one_line(err) and "named_sets.selective.neurons.anger' has [1, -1] outside" in err
    with pytest.raises(ValueError, match="named_sets.selective"):
        neurons.named_sets({"run_dir": str(tmp_path / "run")})
    good = neurons_with_named(tmp_path / "ok", {"anger": [[3, 127]], "fear": []}, "selective")
    assert set(neurons.named_sets({"run_dir": str(good.parent)})) == {"paper", "selective"}
    with pytest.raises(ValueError, match="the loaded model has 2 x 64"):
        neurons.named_sets({"run_dir": str(good.parent)}, shape=(2, 64))


# --- 9. parameter files a run cannot use are refused by check -------------------------------------------------

LAUGHS = (
    "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
)

BAD_PARAMS = {
    "billion laughs": (LAUGHS, "more than 20 aliases"),
    "deep nesting": ("seed: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested more than 16 levels"),
    "deep mappings": (
        "a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 40)) + "  " * 40 + "x: 1\n",
        "nested more than 16 levels",
    ),
    "a key twice": ("seed: 1\nn_topics: 3\nseed: 2\n", "key 'seed' is given twice"),
    "seed 2**32": ("seed: 4294967296\n", "'seed' must be <= 4294967295"),
    "n_random_sets 1e12": ("n_random_sets: 1000000000000\n", "'n_random_sets' must be <="),
    "n_bootstrap 1e12": ("n_bootstrap: 1000000000000\n", "'n_bootstrap' must be <="),
    "batch_size 1e12": ("batch_size: 1000000000000\n", "'batch_size' must be <= 1024"),
    "timeout 1e300": ("endpoint_request_timeout: 1.0e+300\n", "'endpoint_request_timeout' must be <= 3600"),
    "run_dir /": ("run_dir: /\n", "'run_dir' must be a folder of its own"),
    "run_dir ~": ("run_dir: '~'\n", "'run_dir' must be a folder of its own"),
    "{dialogue} twice": ("prompt_template: 'A {dialogue} and {dialogue}'\n", "{dialogue} slot (exactly one), got 2"),
}


@pytest.mark.parametrize("kind", list(BAD_PARAMS))
def test_check_refuses_parameter_files_a_run_cannot_use(tmp_path, capsys, kind):
    text, needle = BAD_PARAMS[kind]
    f = tmp_path / "p.yaml"
    f.write_text(text)
    t0 = time.monotonic()
    assert main(["check", str(f)]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and needle in err and str(f) in err and time.monotonic() - t0 < 10


@pytest.mark.parametrize("special", ["/dev/null", "/dev/zero", "fifo"])
def test_check_names_a_special_file_as_such(tmp_path, capsys, special):
    path = special
    if special == "fifo":
        path = str(tmp_path / "p.yaml")
        os.mkfifo(path)
    assert main(["check", path]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and "not a regular file" in err and "is a folder" not in err


def test_anchors_and_a_few_aliases_still_load(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("emotions: &e [anger, fear]\nannotator_endpoints: {}\nseed: 4294967295\n")
    assert params.load(f)["seed"] == 2**32 - 1


@pytest.mark.parametrize("out", ["/", "~", "ROOT", "outputs"])
def test_run_refuses_slash_home_the_project_and_outputs(tmp_path, capsys, monkeypatch, out):
    monkeypatch.setattr(runner, "execute", lambda *a, **k: pytest.fail("notebook executed"))
    path = {"/": "/", "~": os.path.expanduser("~"), "ROOT": str(ROOT), "outputs": str(ROOT / "outputs")}[out]
    assert main(["run", TINY, "--out", path]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and "give a folder of its own" in err


# --- 10. an eval file needs its minimum of every emotion ----------------------------------------------------------


def test_an_eval_file_with_emotions_missing_is_refused(tmp_path, capsys):
    f = tmp_path / "e.jsonl"
    f.write_text("".join(json.dumps({"dialogue": f"A: angry {i}\nB: ok", "label": "anger"}) + "\n" for i in range(2)))
    p = tmp_path / "p.yaml"
    p.write_text(f"eval_source: file\neval_path: {f}\n")
    assert main(["check", str(p)]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and "disgust 0" in err and "surprise 0" in err and "ok" not in err.split(":")[-1]
    p.write_text(f"eval_source: file\neval_path: {f}\nemotions: [anger, fear]\n")
    assert main(["check", str(p)]) == 2  # fear has none
    f.write_text(
        f.read_text() + "".join(json.dumps({"dialogue": f"A: scared {i}", "label": "fear"}) + "\n" for i in range(2))
    )
    assert main(["check", str(p)]) == 0 and capsys.readouterr().out.endswith(": ok\n")


# --- 7. run artefacts: checked where read, one line naming the file and the fix --------------------------------------


def stats_file(run: Path, **change) -> Path:
    import torch

    from emolib.causal import matched

    sums = {
        "count": torch.tensor(40),
        "sum": torch.ones(4, 128) * 40,
        "sumsq": torch.ones(4, 128) * 80,
        "g": torch.zeros(2, 4, 128),
    }
    sums.update(change)
    run.mkdir(parents=True, exist_ok=True)
    return matched.save(run, sums, "t")


STATS_CASES = {
    "NaN sums": (lambda t: {"sum": t.full((4, 128), float("nan"))}, "'sum' holds NaN"),
    "SD 1e10": (lambda t: {"sumsq": t.full((4, 128), 1e20 * 40)}, "beyond any activation"),
    "inf": (lambda t: {"sumsq": t.full((4, 128), float("inf"))}, "'sumsq' holds NaN or infinite"),
    "no count": (lambda t: {"count": None}, "lacks count"),
    "count 0": (lambda t: {"count": t.tensor(0)}, "'count' must be one positive whole number"),
    "shapes differ": (lambda t: {"sumsq": t.ones(3, 128)}, "share one [layers, neurons] shape"),
}


@pytest.mark.parametrize("kind", list(STATS_CASES) + ["corrupt"])
def test_activation_stats_are_checked_where_read(tmp_path, kind):
    import torch

    from emolib.causal import matched, steer

    run = tmp_path / "run"
    if kind == "corrupt":
        run.mkdir()
        (run / matched.STATS_FILE).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
        needle = "cannot be read"
    else:
        change, needle = STATS_CASES[kind]
        change = change(torch)
        if change.get("count", 1) is None:
            stats_file(run)
            from safetensors.torch import load_file, save_file

            d = load_file(run / matched.STATS_FILE)
            del d["count"]
            save_file(d, run / matched.STATS_FILE)
        else:
            stats_file(run, **change)
    with pytest.raises(ValueError) as e:
        steer.activation_sd(run)
    msg = str(e.value)
    assert one_line(msg) and msg.startswith(str(run / matched.STATS_FILE)) and needle in msg and "rm '" in msg


def test_good_activation_stats_load(tmp_path):
    from emolib.causal import steer

    stats_file(tmp_path / "run")
    mean, sd = steer.activation_sd(tmp_path / "run")
    assert mean.shape == (4, 128) and float(sd.max()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    "row",
    [
        {"dialogue": 12345, "topic": "t", "theme": "anger"},
        "just text",
        {"topic": "t", "theme": "anger"},
        {"dialogue": "A: hi", "topic": 5, "theme": "anger"},
    ],
)
def test_a_hand_edited_dialogues_cache_row_is_one_line(tmp_path, row):
    from emolib.dataset import build_data

    p = params.validate({"n_topics": 2, "dialogues_per_topic": 1})
    p["run_dir"] = str(tmp_path / "run")
    rows, _ = build_data.synthesize(p, tmp_path / "cache")
    (cached,) = (tmp_path / "cache").glob("dialogues-*.json")
    saved = json.loads(cached.read_text())
    saved["rows"][1] = row
    cached.write_text(json.dumps(saved))
    with pytest.raises(ValueError) as e:
        build_data.synthesize(p, tmp_path / "cache")
    msg = str(e.value)
    assert one_line(msg) and msg.startswith(str(cached)) and "row 2" in msg and f"rm '{cached}'" in msg


# --- 8. special files: never read, never hung on --------------------------------------------------------------------


def special(tmp_path: Path, kind: str, name: str) -> Path:
    path = tmp_path / name
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "/dev/zero":
        return Path("/dev/zero")
    else:
        path.symlink_to("/dev/zero")
    return path


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "link to /dev/zero"])
def test_classify_input_refuses_special_files(tmp_path, capsys, monkeypatch, kind):
    from emolib.lm import classify

    monkeypatch.setattr(classify, "load_classifier", lambda p: pytest.fail("model loaded"))
    src = special(tmp_path, kind, "in.jsonl")
    assert main(["classify", "--params", TINY, "--input", str(src), "--output", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and "not a regular file" in err


def test_classify_input_above_the_cap_is_refused(tmp_path, capsys, monkeypatch):
    import emolib.__main__ as cli

    monkeypatch.setattr(cli, "MAX_INPUT_BYTES", 100)
    src = tmp_path / "in.jsonl"
    src.write_text('{"dialogue": "A: hi"}\n' * 10)
    assert main(["classify", "--params", TINY, "--input", str(src), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "above the 100 bytes" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "link to /dev/zero"])
def test_report_readme_refuses_special_files(tmp_path, capsys, kind):
    readme = special(tmp_path, kind, "README.md")
    assert main(["report", "--readme", str(readme), str(ROOT / "outputs" / "smollm2-135m")]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and ("not a regular file" in err or "symbolic link" in err)


def test_exercises_refuse_a_pipe_named_like_a_notebook(tmp_path, capsys):
    d = tmp_path / "ex"
    d.mkdir()
    os.mkfifo(d / "03_ablation.ipynb")
    assert main(["exercises", "--out", str(d)]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and "not a regular file" in err


def test_exercises_never_overwrite_an_executed_notebook(tmp_path, capsys):
    import nbformat

    d = tmp_path / "run"
    d.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1", execution_count=1)])
    nbformat.write(nb, d / "02_neuron_identification.ipynb")
    before = (d / "02_neuron_identification.ipynb").read_text()
    assert main(["exercises", "--out", str(d)]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and "is not an exercise copy" in err
    assert (d / "02_neuron_identification.ipynb").read_text() == before
    assert main(["exercises", "--out", str(tmp_path / "ex")]) == 0  # its own copies: rewritten on each call
    assert main(["exercises", "--out", str(tmp_path / "ex")]) == 0


# --- 11. one line naming the file, never a raw traceback -------------------------------------------------------------


def report_run(tmp_path: Path) -> Path:
    """A copy of the committed showcase run's files the report reads."""
    import shutil

    src = ROOT / "outputs" / "smollm2-135m"
    run = tmp_path / "smollm2-135m"
    run.mkdir()
    for f in src.iterdir():
        if f.is_file() and f.suffix in (".json", ".csv", ".jsonl"):
            shutil.copy(f, run / f.name)
    return run


@pytest.mark.parametrize(
    "case",
    ["annotations garbage", "annotations binary", "design json broken", "instrument json broken", "timing seconds abc"],
)
def test_report_names_the_file_of_a_damaged_run(tmp_path, capsys, case):
    run = report_run(tmp_path)
    if case == "annotations garbage":
        (run / "annotations.csv").write_text("a,b\n1,2\n")
    elif case == "annotations binary":
        (run / "annotations.csv").write_bytes(b"\x00\xff\xfe" * 100)
    elif case == "design json broken":
        (run / "design.json").write_text('{"seconds": ')
    elif case == "instrument json broken":
        (run / "instrument.json").write_text("[")
    else:
        (run / "scoring_time.json").write_text(json.dumps({"throughput": 8.0, "stage3_scoring_seconds": "abc"}))
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and str(run) in err
    if case.startswith(("annotations", "design json", "instrument")):
        assert case.split()[0] in err


def test_a_deeply_nested_vote_cache_is_recomputed(tmp_path, monkeypatch):
    from emolib.dataset import annotate

    monkeypatch.setattr(annotate, "minilm_voter", lambda emotions: lambda ds: ["anger"] * len(ds))
    annotate.annotate("minilm", ["A: hi\nB: yo"], ["anger", "fear"], {}, tmp_path)
    [path] = tmp_path.glob("annotator-minilm-*.json")
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.warns(UserWarning, match="nested too deeply"):
        assert annotate.annotate("minilm", ["A: hi\nB: yo"], ["anger", "fear"], {}, tmp_path) == ["anger"]


def test_site_with_an_absolute_link_neither_fails_nor_copies_onto_itself(repo, tmp_path):
    import nbformat

    d = repo / "outputs" / "smollm2-135m"
    fig = d / "figures" / "x.png"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# T\n\n![abs]({fig}) [etc](/etc/passwd)")])
    nbformat.write(nb, d / "01_x.ipynb")
    out = build(repo, tmp_path / "site").parent
    assert fig.read_bytes() == PNG and not any(b"root:" in f.read_bytes() for f in out.rglob("*") if f.is_file())


# --- 12. smaller ---------------------------------------------------------------------------------------------------


def test_the_rm_hint_is_shell_quoted(tmp_path):
    import shlex

    path = tmp_path / "it's a $(touch pwned) file.json"
    hint = safeio.clear_hint(path)
    assert shlex.split(hint) == ["rm", str(path)]


def test_steer_refuses_a_prompt_past_the_context(tmp_path, capsys, monkeypatch):
    from test_safety import tiny_neurons

    path = tiny_neurons(tmp_path / "run")
    monkeypatch.setattr(
        __import__("emolib.lm.models", fromlist=["x"]), "load_model", lambda *a, **k: pytest.fail("model loaded")
    )
    code = main(
        [
            "steer",
            "--params",
            TINY,
            "--neurons",
            str(path),
            "--emotion",
            "anger",
            "--alpha",
            "2",
            "--prompt",
            "A: " + "x" * 100_000,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and one_line(err) and "--prompt is 100,003 characters" in err


# ---------------------------------------------------------------- issue 27 item 7: run files checked as they are read
GOOD_DESIGN = {
    "n_random": 20,
    "n_items": 6,
    "pilot_random": 4,
    "grid_items": 2,
    "grid_random": 20,
    "titration_shares": [0.01, 1.0],
    "titration_draws": 5,
    "intervention": "zero/recomputed",
    "item_masks": {"main test": 10},
}
GOOD_INSTRUMENT = {
    "chosen": {"prompt_style": "chat", "few_shot": 0, "calibrate": True},
    "pilot": {
        "chosen": "zero/recomputed",
        "table": [{"arm": "zero/fixed", "emotion": "anger", "var_between_sets": 0.01, "var_set_x_item": 0.02}],
    },
}


@pytest.mark.parametrize(
    "change, key",
    [
        ({"grid_items": -3}, "grid_items"),
        ({"n_random": "20"}, "n_random"),
        ({"n_items": True}, "n_items"),
        ({"intervention": "banana"}, "intervention"),
        ({"titration_shares": [0.5, 2]}, "titration_shares"),
        ({"item_masks": {"pilot": -1}}, "item_masks"),
    ],
)
def test_a_damaged_design_json_is_one_line_naming_the_key(tmp_path, change, key):
    from emolib.causal import budget, runfiles

    (tmp_path / "design.json").write_text(json.dumps({**GOOD_DESIGN, **change}))
    with pytest.raises(ValueError) as e:
        budget.grid_items({"run_dir": str(tmp_path)})
    assert one_line(str(e.value)) and key in str(e.value) and "design.json" in str(e.value)
    (tmp_path / "design.json").write_text(json.dumps(GOOD_DESIGN))
    assert budget.grid_items({"run_dir": str(tmp_path)}) == 2 and runfiles.load_design(tmp_path) == GOOD_DESIGN


@pytest.mark.parametrize(
    "chosen, key",
    [
        ({"prompt_style": "banana"}, "prompt_style"),
        ({"few_shot": -5}, "few_shot"),
        ({"calibrate": "no"}, "calibrate"),
        ({"few_shot": 1.5}, "few_shot"),
    ],
)
def test_a_damaged_instrument_json_is_one_line_naming_the_key(tmp_path, chosen, key):
    from emolib.causal import budget, instrument

    bad = {**GOOD_INSTRUMENT, "chosen": {**GOOD_INSTRUMENT["chosen"], **chosen}}
    (tmp_path / "instrument.json").write_text(json.dumps(bad))
    p = {**params.validate({"model": "tiny-random-llama"}), "run_dir": str(tmp_path)}
    with pytest.raises(ValueError) as e:
        instrument.load_instrument(p, model=object(), tok=object())  # checked before the model is touched
    assert one_line(str(e.value)) and key in str(e.value) and "instrument.json" in str(e.value)
    with pytest.raises(ValueError, match=key):
        budget.pilot_comps(p)


def test_a_damaged_pilot_table_is_refused(tmp_path):
    from emolib.causal import runfiles

    bad = json.loads(json.dumps(GOOD_INSTRUMENT))
    bad["pilot"]["table"][0]["var_between_sets"] = "x"
    (tmp_path / "instrument.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="var_between_sets"):
        runfiles.load_instrument_file(tmp_path)
    (tmp_path / "instrument.json").write_text(json.dumps(GOOD_INSTRUMENT))
    assert runfiles.load_instrument_file(tmp_path)["chosen"]["few_shot"] == 0
