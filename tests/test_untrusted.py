"""Issue 20: every file and every server reply is untrusted input. Endpoint replies, the reply cache, external eval
files, classify's input and the annotator label cache, each tried as a hostile user would: one line or a retry,
never a traceback, a write through a link, or a key in a message."""

import json
import os
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from emolib import annotate, classify, data, endpoint, evaluate, params, prompts, safeio
from emolib.__main__ import main
from emolib.emotions import EMOTIONS
from emolib.endpoint import Endpoint, EndpointError
from emolib.params import ParamError

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "params/test-tiny.yaml")
SECRET = "sk-test-secret-0123456789"
DIALOGUES = [f"A: Talking about item {i} makes me feel {e}.\nB: I see.\nA: Indeed." for i, e in enumerate(EMOTIONS)]


def one_line(text: str) -> bool:
    """Exactly one non-empty line, no traceback."""
    return text.strip() != "" and "\n" not in text.strip() and "Traceback" not in text


def completion(text, model="fake", usage=None) -> bytes:
    """A chat.completion body whose content is text (any JSON value)."""
    return json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": model,
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": text}}],
                       "usage": usage or {"prompt_tokens": 10, "completion_tokens": 2}}).encode()


def label_for(body: dict) -> str:
    """The emotion the labelling prompt's dialogue names."""
    text = body["messages"][-1]["content"]
    return next(e for e in EMOTIONS if e in text.split("Conversation:\n", 1)[1]).capitalize()


class Hostile:
    """A local server whose script(n, body, headers) returns (status, content type, body bytes) for call n."""

    def __init__(self, script):
        self.calls: list[dict] = []
        self.lock = threading.Lock()
        hostile = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):  # /v1/models: a 401 that echoes the request's headers
                echo = json.dumps({"error": {"message": f"no; {dict(self.headers)}"}})
                self.reply(401, "application/json", echo.encode())

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with hostile.lock:
                    n = len(hostile.calls)
                    hostile.calls.append(body)
                self.reply(*script(n, body, dict(self.headers)))

            def reply(self, status, ctype, data):
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hostile():
    servers = []

    def make(script):
        servers.append(Hostile(script))
        return servers[-1]
    yield make
    for s in servers:
        s.close()


def ep_for(s: Hostile, **kw) -> Endpoint:
    kw = {"model": "fake", "backoff": 0.01, "request_timeout": 5.0, "temperature": 0.1, "max_tokens": 10,
          "max_concurrency": 1, **kw}
    return Endpoint(base_url=s.base_url, **kw)


def good(n, body, headers):
    return 200, "application/json", completion(label_for(body))


# --- every file the book writes ----------------------------------------------------------------------------------

WRITERS = {
    "append_line": lambda p: safeio.append_line(p, "x"),
    "atomic_write_text": lambda p: safeio.atomic_write_text(p, "x"),
    "atomic_write_json": lambda p: safeio.atomic_write_json(p, {"x": 1}),
    "atomic_save": lambda p: safeio.atomic_save(p, lambda tmp: Path(tmp).write_text("x")),
    "PredictionCache": lambda p: evaluate.PredictionCache(p).get_or_run("k", lambda: ["anger"]),
}


@pytest.mark.parametrize("writer", list(WRITERS))
@pytest.mark.parametrize("kind", ["symlink", "directory"])
def test_every_writer_refuses_a_link_or_a_folder(tmp_path, writer, kind):
    target = tmp_path / "passwd"
    target.write_text("root:x:0:0\n")
    path = tmp_path / "file.jsonl"
    os.symlink(target, path) if kind == "symlink" else path.mkdir()
    with pytest.raises(ValueError) as e:
        WRITERS[writer](path)
    assert one_line(str(e.value)) and str(path) in str(e.value)
    assert target.read_text() == "root:x:0:0\n" and (path.is_symlink() if kind == "symlink" else path.is_dir())
