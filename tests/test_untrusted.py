"""Issue 20: every file and every server reply is untrusted input. Endpoint replies, the reply cache, external eval
files, classify's input and the annotator vote cache, each tried as a hostile user would: one line or a retry,
never a traceback, a write through a link, or a key in a message."""

import json
import os
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from emolib import params, safeio
from emolib.__main__ import main
from emolib.dataset import annotate, data, endpoint
from emolib.dataset.endpoint import Endpoint, EndpointError
from emolib.emotions import EMOTIONS
from emolib.lm import classify, prompts
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
    return json.dumps(
        {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": usage or {"prompt_tokens": 10, "completion_tokens": 2},
        }
    ).encode()


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
    kw = {
        "model": "fake",
        "backoff": 0.01,
        "request_timeout": 5.0,
        "temperature": 0.1,
        "max_tokens": 10,
        "max_concurrency": 1,
        **kw,
    }
    return Endpoint(base_url=s.base_url, **kw)


def good(n, body, headers):
    return 200, "application/json", completion(label_for(body))


# --- every file the book writes ----------------------------------------------------------------------------------

WRITERS = {
    "append_line": lambda p: safeio.append_line(p, "x"),
    "atomic_write_text": lambda p: safeio.atomic_write_text(p, "x"),
    "atomic_write_json": lambda p: safeio.atomic_write_json(p, {"x": 1}),
    "atomic_save": lambda p: safeio.atomic_save(p, lambda tmp: Path(tmp).write_text("x")),
    "PredictionCache": lambda p: classify.PredictionCache(p).get_or_run("k", lambda: ["anger"]),
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


# --- endpoint replies -------------------------------------------------------------------------------------------

BAD_BODIES = {
    "html": ("text/html", b"<html><body>502 Bad Gateway</body></html>"),
    "malformed JSON": ("application/json", b'{"choices": [{"message": '),
    "a JSON list": ("application/json", b"[1, 2, 3]"),
    "no choices": ("application/json", b'{"id": "x", "object": "error"}'),
    "content an int": ("application/json", completion(12345)),
    "content a list": ("application/json", completion(["anger"])),
    "a choice without a message": ("application/json", b'{"choices": [{"index": 0}], "usage": {}}'),
}


@pytest.mark.parametrize("kind", list(BAD_BODIES))
def test_a_reply_that_is_not_a_completion_is_retried_as_malformed(hostile, tmp_path, kind):
    s = hostile(lambda n, body, h: (200, *BAD_BODIES[kind]) if n == 0 else good(n, body, h))
    labels, stats = endpoint.vote(DIALOGUES[:1], list(EMOTIONS), ep_for(s), tmp_path)
    assert labels == ["anger"] and stats["malformed_not_a_completion"] == 1 and len(s.calls) == 2
    [path] = tmp_path.glob("endpoint-*.jsonl")
    assert all(isinstance(json.loads(x)["text"], str) for x in path.read_text().splitlines())
    again, stats2 = endpoint.vote(DIALOGUES[:1], list(EMOTIONS), ep_for(s), tmp_path)  # a rerun: from the cache
    assert again == labels and stats2["requests"] == 0 and len(s.calls) == 2


@pytest.mark.parametrize("kind", ["html", "malformed JSON", "content an int"])
def test_replies_that_stay_broken_end_in_one_line(hostile, tmp_path, kind):
    s = hostile(lambda n, body, h: (200, *BAD_BODIES[kind]))
    with pytest.raises(EndpointError) as e:
        endpoint.vote(DIALOGUES[:1], list(EMOTIONS), ep_for(s, malformed_retries=2), tmp_path)
    msg = str(e.value)
    assert one_line(msg) and "were not chat completions" in msg and "refused" not in msg and len(s.calls) == 3


def test_a_reply_from_another_model_is_recorded_as_such_and_warned(hostile, tmp_path):
    s = hostile(lambda n, body, h: (200, "application/json", completion(label_for(body), model="other-model")))
    with pytest.warns(UserWarning, match="asked for model 'fake', answered by 'other-model'"):
        labels, stats = endpoint.vote(DIALOGUES[:3], list(EMOTIONS), ep_for(s), tmp_path)
    assert labels == ["anger", "disgust", "fear"] and stats["answered_by_other_model"] == 3
    assert endpoint.usage(tmp_path)["model"].tolist() == ["other-model"]
    snapshot = hostile(lambda n, body, h: (200, "application/json", completion("Fear", model="fake-2024-07-18")))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a dated snapshot of the model asked for is the same model
        endpoint.vote(DIALOGUES[3:4], list(EMOTIONS), ep_for(snapshot), tmp_path / "b")


def test_huge_replies_are_capped_in_the_cache(hostile, tmp_path):
    big = "A: " + "so much anger " * 200_000  # 2.8 MB
    s = hostile(lambda n, body, h: (200, "application/json", completion(big)))
    labels, _ = endpoint.vote(DIALOGUES[:2], list(EMOTIONS), ep_for(s, malformed_retries=0), tmp_path)
    assert labels == ["anger", "anger"]
    [path] = tmp_path.glob("endpoint-*.jsonl")
    assert path.stat().st_size < 2 * (endpoint.MAX_REPLY_CHARS + 1000)
    assert {json.loads(x)["finish_reason"] for x in path.read_text().splitlines()} == {"length"}


def echo_headers(status):
    def script(n, body, headers):
        return (
            status,
            "application/json",
            json.dumps({"error": {"message": f"bad request; you sent {headers}", "type": "x"}}).encode(),
        )

    return script


@pytest.mark.parametrize("status", [401, 400, 404])
def test_the_key_never_appears_in_an_error_built_from_a_servers_text(hostile, tmp_path, monkeypatch, status):
    monkeypatch.setenv("EMOLIB_TEST_KEY", SECRET)
    s = hostile(echo_headers(status))
    with pytest.raises(EndpointError) as e:
        endpoint.vote(DIALOGUES[:1], list(EMOTIONS), ep_for(s, api_key_env="EMOLIB_TEST_KEY"), tmp_path)
    msg = str(e.value)
    assert one_line(msg) and SECRET not in msg and "test-secret" not in msg and "***" in msg
    assert len(msg) < 1000


def test_the_key_is_kept_out_of_messages_about_model_auto_and_out_of_cached_text(hostile, tmp_path, monkeypatch):
    monkeypatch.setenv("EMOLIB_TEST_KEY", SECRET)
    s = hostile(lambda n, body, h: (200, "application/json", completion(f"Anger. {h.get('Authorization')}")))
    endpoint.vote(DIALOGUES[:1], list(EMOTIONS), ep_for(s, api_key_env="EMOLIB_TEST_KEY"), tmp_path)
    for f in tmp_path.rglob("*"):
        assert SECRET.encode() not in f.read_bytes()
    with pytest.raises(EndpointError) as e:  # GET /v1/models: a 401 echoing the Authorization header
        endpoint.resolve_model(ep_for(s, model="auto", api_key_env="EMOLIB_TEST_KEY"))
    assert one_line(str(e.value)) and SECRET not in str(e.value)


@pytest.mark.parametrize(
    "text,want",
    [
        ('Error code: 401 - {"message": "you sent Authorization: Bearer abc.def-123"}', "Bearer ***"),
        ('{"headers": {"x-api-key": "k-999", "authorization": "Bearer zzz"}}', '"x-api-key": "***"'),
        ("Incorrect API key provided: sk-proj-abcdefgh.", "provided: ***."),
        ("maximum context length is 8192 tokens, max_tokens: 10", "8192 tokens, max_tokens: 10"),
    ],
)
def test_redact(text, want):
    out = endpoint.redact(text, ("zzz",))
    assert want in out and "zzz" not in out and "abc.def" not in out and "k-999" not in out


# --- the reply cache --------------------------------------------------------------------------------------------

KEY = "k" * 64
BAD_LINES = {
    "text an int": {"key": KEY, "text": 12345, "usage": {}},
    "text null": {"key": KEY, "text": None, "usage": {}},
    "text a list": {"key": KEY, "text": ["anger"], "usage": {}},
    "text missing": {"key": KEY, "usage": {}},
    "junk line": {"key": 5},
    "no usage": {"key": KEY, "text": "Anger"},
    "usage not numbers": {"key": KEY, "text": "Anger", "usage": {"prompt_tokens": "ten", "completion_tokens": None}},
    "usage a list": {"key": KEY, "text": "Anger", "usage": [1, 2]},
    "a JSON string": "anger",
    "nested too deep": "[" * 5000,
}


@pytest.mark.parametrize("kind", list(BAD_LINES))
def test_an_invalid_cache_line_is_torn_never_fatal(kind, tmp_path):
    path = tmp_path / "endpoint-x.jsonl"
    line = BAD_LINES[kind] if kind == "nested too deep" else json.dumps(BAD_LINES[kind])
    path.write_text(json.dumps({"key": "a", "text": "Fear", "usage": {"prompt_tokens": 1}}) + "\n" + line + "\n")
    cache = endpoint.RequestCache(path)
    assert set(cache.records) == {"a"} and cache.torn == 1
    cache.close()
    u = endpoint.usage(tmp_path)
    assert u.to_dict("records") == [{"model": "?", "requests": 1, "prompt_tokens": 1, "completion_tokens": 0}]


def test_invalid_cached_replies_are_asked_again_and_counted(hostile, tmp_path, capsys):
    s = hostile(good)
    ep = ep_for(s)
    endpoint.vote(DIALOGUES[:2], list(EMOTIONS), ep, tmp_path)
    [path] = tmp_path.glob("endpoint-*.jsonl")
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({**r, "text": 12345 if i == 0 else None}) + "\n" for i, r in enumerate(recs)))
    capsys.readouterr()
    labels, stats = endpoint.vote(DIALOGUES[:2], list(EMOTIONS), ep, tmp_path)
    assert labels == ["anger", "disgust"] and stats["requests"] == 2 and len(s.calls) == 4
    assert stats["torn_cache_lines_skipped"] == 2 and "torn_cache_lines_skipped 2" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["symlink", "dangling symlink", "directory"])
def test_a_cache_path_that_is_a_link_or_a_folder_is_refused(hostile, tmp_path, kind):
    s = hostile(good)
    ep = ep_for(s)
    path = endpoint.cache_path(tmp_path, ep.model)
    target = tmp_path / "passwd"
    target.write_text("root:x:0:0\n")
    if kind == "directory":
        path.mkdir()
    else:
        os.symlink(target if kind == "symlink" else tmp_path / "nowhere", path)
    with pytest.raises(ValueError) as e:
        endpoint.vote(DIALOGUES[:1], list(EMOTIONS), ep, tmp_path)
    assert one_line(str(e.value)) and str(e.value).startswith(str(path))
    assert ("symbolic link" if "symlink" in kind else "is a folder") in str(e.value)
    assert target.read_text() == "root:x:0:0\n" and not (tmp_path / "nowhere").exists() and not s.calls


# --- external eval files ----------------------------------------------------------------------------------------


def check(tmp_path, eval_path, capsys) -> tuple[int, str, str]:
    f = tmp_path / "p.yaml"
    f.write_text(f"eval_source: file\neval_path: {eval_path}\n")
    code = main(["check", str(f)])
    out = capsys.readouterr()
    return code, out.out, out.err


def items(n_per: int, emotions=EMOTIONS) -> str:
    return "".join(
        json.dumps({"dialogue": f"A: item {i} of {e}\nB: ok", "label": e}) + "\n"
        for e in emotions
        for i in range(n_per)
    )


@pytest.mark.parametrize(
    "name,content,needle",
    [
        ("evals.jsonl", None, "is a directory"),
        ("e.jsonl", b"", "holds no records"),
        ("e.jsonl", b'{"dialogue": "A: caf\xe9", "label": "anger"}\n', "is not a readable JSON-lines file"),
        ("e.csv", b"text,emotion\nA: hi,anger\n", "needs a non-empty 'dialogue' (or 'text') and a 'label'"),
        ("e.jsonl", b"[" * 5000, "is not a readable JSON-lines file"),
        ("e.jsonl", "big", "an eval set above 50 MB is refused"),
    ],
)
def test_check_validates_the_eval_file(tmp_path, capsys, name, content, needle):
    f = tmp_path / name
    if content is None:
        f.mkdir()
    elif content == "big":
        with open(f, "wb") as h:
            h.truncate(200 * 2**20)  # 200 MB (sparse): refused by its size, before it is read
    else:
        f.write_bytes(content)
    code, out, err = check(tmp_path, f, capsys)
    assert code == 2 and one_line(err) and needle in err and str(f) in err and "ok" not in out
    assert "file not found" not in err


def test_check_passes_a_good_eval_file(tmp_path, capsys):
    f = tmp_path / "e.jsonl"
    f.write_text(items(2))
    assert check(tmp_path, f, capsys)[:2] == (0, f"{tmp_path / 'p.yaml'}: ok\n")


def test_repeated_dialogues_are_removed_and_reported(tmp_path, capsys):
    f = tmp_path / "e.jsonl"
    f.write_text(items(3) + items(3, ["anger"]) * 10)
    with pytest.warns(UserWarning, match="30 repeated dialogue\\(s\\) removed, 18 distinct kept"):
        rows = data.load_eval_file(f, list(EMOTIONS))
    assert len(rows) == 18 and len({r["dialogue"] for r in rows}) == 18
    code, out, _ = check(tmp_path, f, capsys)
    assert code == 0 and "warning: eval_path:" in out and "30 repeated" in out


@pytest.mark.parametrize(
    "content",
    [
        items(1, ["anger", "fear"]) * 30,  # 60 items, 2 distinct
        items(1, ["anger"]) * 200_000,  # 200,000 identical items
        items(5, ["anger"]) + items(1, ["fear"]),  # one emotion with a single item
    ],
)
def test_tiny_eval_sets_are_refused_with_one_line(tmp_path, content):
    f = tmp_path / "e.jsonl"
    f.write_text(content)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError) as e:
            data.load_eval_file(f, list(EMOTIONS))
        with pytest.raises(ParamError) as e2:
            params.validate({"eval_source": "file", "eval_path": str(f)}, "x.yaml")
    assert one_line(str(e.value)) and f"fewer than {data.MIN_EVAL_PER_EMOTION} distinct items for" in str(e.value)
    assert str(e2.value).startswith("x.yaml: 'eval_path'") and "fewer than" in str(e2.value)


def test_the_fixtures_still_load():
    for name in ("external-eval.jsonl", "external-eval.csv"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert len(data.load_eval_file(ROOT / "tests/fixtures" / name, list(EMOTIONS))) == 12


# --- classify -----------------------------------------------------------------------------------------------------


def test_encode_dialogue_cuts_from_the_left(tiny):
    _, tok = tiny
    d = "A: " + "word " * 3000 + "\nB: the very end"
    full = prompts.encode_dialogue(tok, d)
    ids, cut = prompts.fit_dialogue(tok, d, 50)
    assert cut and ids == full[-50:] and prompts.encode_dialogue(tok, d, 50) == ids
    assert tok.decode(ids).endswith("the very end")
    assert prompts.fit_dialogue(tok, "A: hi\nB: yo", 50) == (prompts.encode_dialogue(tok, "A: hi\nB: yo"), False)
    ids, cut = prompts.fit_dialogue(tok, "x" * 2_000_000, 10)  # only the end is tokenised
    assert cut and len(ids) <= 10


@pytest.mark.parametrize("protocol", ["score", "generate"])
def test_dialogues_longer_than_the_context_are_cut_and_counted(tiny, monkeypatch, protocol):
    model, tok = tiny
    clf = classify.make_classifier(model, tok, list(EMOTIONS), chat=False, batch_size=4, calibrate=False)
    n_ctx = classify.context_length(model)
    lengths = []
    if protocol == "score":
        real = classify.score_batch

        def score(m, prefix, bodies, *a, **k):  # records the lengths, scores a short tail (fast)
            lengths.extend(len(prefix) + len(b) for b in bodies)
            return real(m, prefix, [b[-8:] for b in bodies], *a, **k)

        monkeypatch.setattr(classify, "score_batch", score)
    else:
        monkeypatch.setattr(
            model, "generate", lambda input_ids, **k: (lengths.append(input_ids.shape[1]), input_ids)[1]
        )
    long = "A: " + "so angry " * 5000 + "\nB: why?"
    with pytest.warns(UserWarning, match="1 dialogue\\(s\\) longer than the model's context"):
        preds, _ = classify.predict(clf, [long, "A: hi\nB: hello"], protocol)
    assert len(preds) == 2 and clf.truncated == 1
    reserve = max(map(len, clf.parts.labels)) if protocol == "score" else 4
    assert max(lengths) + reserve <= n_ctx


def test_classify_reports_cut_dialogues_and_names_a_binary_input(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text(
        json.dumps({"dialogue": "A: " + "so angry " * 3000 + "\nB: why?"})
        + "\n"
        + json.dumps({"dialogue": "A: hi\nB: hello"})
        + "\n"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["classify", "--params", TINY, "--input", str(src), "--output", str(tmp_path / "o.jsonl")]) == 0
    assert "1 dialogue(s) longer than the model's context were cut" in capsys.readouterr().out
    binary = tmp_path / "in.bin.jsonl"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe" + os.urandom(64))
    assert main(["classify", "--params", TINY, "--input", str(binary), "--output", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and str(binary) in err and "is not UTF-8 text" in err
    assert main(["classify", "--params", TINY, "--input", str(tmp_path), "--output", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and "is a folder" in err


# --- the annotator vote cache -----------------------------------------------------------------------------------


def annotate_with_fake(tmp_path, monkeypatch, content=None):
    """annotate('minilm', ...) with a voter that says each dialogue's emotion, the cache file written first."""
    from emolib.dataset.data import dialogue_id

    calls = []

    def voter(emotions):
        return lambda ds: calls.append(len(ds)) or [next(e for e in emotions if e in d) for d in ds]

    monkeypatch.setattr(annotate, "minilm_voter", voter)
    annotate.annotate("minilm", DIALOGUES, list(EMOTIONS), {}, tmp_path)  # makes the cache file
    [path] = tmp_path.glob("annotator-minilm-*.json")
    if callable(content):
        cache = json.loads(path.read_text())
        ids = [dialogue_id(d) for d in DIALOGUES]
        path.write_bytes(content(cache, ids))
    calls.clear()
    return annotate.annotate("minilm", DIALOGUES, list(EMOTIONS), {}, tmp_path), calls, path


@pytest.mark.parametrize("bad", ["banana", 7, None, ["anger"]])
def test_votes_outside_the_emotions_are_recomputed(tmp_path, monkeypatch, bad):
    def content(cache, ids):
        cache[ids[0]] = bad
        return json.dumps(cache).encode()

    with pytest.warns(UserWarning, match="1 vote\\(s\\) are not among anger.*rm '"):
        labels, calls, path = annotate_with_fake(tmp_path, monkeypatch, content)
    assert labels == list(EMOTIONS) and calls == [1]
    assert set(json.loads(path.read_text()).values()) == set(EMOTIONS)


@pytest.mark.parametrize(
    "raw,needle",
    [
        (b'{"abc": "anger"', "is not valid JSON"),
        (b'["anger", "fear"]', "is not a JSON object of votes"),
        (b'{"x": "caf\xe9"}', "is not UTF-8 text"),
        (b"", "is not valid JSON"),
    ],
)
def test_a_vote_cache_that_is_not_the_expected_json_is_recomputed(tmp_path, monkeypatch, raw, needle):
    with pytest.warns(UserWarning, match=needle) as w:
        labels, calls, path = annotate_with_fake(tmp_path, monkeypatch, lambda c, ids: raw)
    msg = next(str(x.message) for x in w if "rm '" in str(x.message))
    assert msg.startswith(str(path)) and f"rm '{path}'" in msg
    assert labels == list(EMOTIONS) and calls == [6] and json.loads(path.read_text())


def test_a_vote_cache_that_is_a_link_is_refused(tmp_path, monkeypatch):
    target = tmp_path / "passwd"
    target.write_text("root:x:0:0\n")
    _, _, path = annotate_with_fake(tmp_path, monkeypatch)
    path.unlink()
    os.symlink(target, path)
    with pytest.raises(ValueError, match="is a symbolic link"):
        annotate.annotate("minilm", DIALOGUES, list(EMOTIONS), {}, tmp_path)
    assert target.read_text() == "root:x:0:0\n"


def test_stage2_partial_state_is_never_written_through_a_link(tmp_path):
    """record._save writes a fresh temporary file and refuses a planted link at the counts path."""
    import torch

    from emolib.identify import record

    target = tmp_path / "victim.txt"
    target.write_text("keep me\n")
    link = tmp_path / "counts.pt"
    link.symlink_to(target)

    class Rec:
        def export(self):
            return {t: torch.zeros(1) for t in record.TENSORS}, torch.zeros(1)

    with pytest.raises(ValueError):
        record._save({}, Rec(), 0.0, link)
    assert target.read_text() == "keep me\n" and not list(tmp_path.glob("*.tmp"))
