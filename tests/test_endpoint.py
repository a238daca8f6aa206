"""The openai endpoint backend: retries, back-off, malformed replies, concurrency, resume after a kill, against an
in-process fake OpenAI-compatible server; and (slow) against `transformers serve` on the embedded SmolLM2."""

import json
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from emolib import params
from emolib.dataset import endpoint
from emolib.dataset.endpoint import Endpoint, EndpointError
from emolib.emotions import EMOTIONS
from emolib.params import ParamError

ROOT = Path(__file__).resolve().parent.parent


class FakeServer:
    """A small OpenAI-compatible chat-completions server; `script(n, body)` may override the default reply."""

    def __init__(self, script=None, delay: float = 0.0):
        self.script, self.delay = script, delay
        self.calls: list[dict] = []
        self.inflight = self.max_inflight = 0
        self.lock = threading.Lock()
        self.served = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, payload: dict, headers: dict | None = None):
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout, killed)
                    pass

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": "served-model", "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    n = len(fake.calls)
                    fake.calls.append({"t": time.monotonic(), "body": body, "auth": self.headers.get("Authorization")})
                    fake.inflight += 1
                    fake.max_inflight = max(fake.max_inflight, fake.inflight)
                try:
                    out = fake.script(n, body) if fake.script else None
                    status, text, headers, sleep = out if out else (200, default_reply(body), {}, fake.delay)
                    time.sleep(sleep)
                    if status == 200:
                        self._send(200, completion(body, text))
                    else:
                        self._send(status, {"error": {"message": f"scripted {status}", "type": "x"}}, headers)
                finally:
                    with fake.lock:
                        fake.inflight -= 1
                    fake.served.set()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def completion(body: dict, text: str) -> dict:
    """A chat.completion object carrying text (usage: 10 prompt tokens, 2 completion tokens)."""
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": body["model"],
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
    }


def user_text(body: dict) -> str:
    return body["messages"][-1]["content"]


def default_reply(body: dict) -> str:
    """A well-formed dialogue for a synthesis prompt; for a labelling prompt, the emotion its dialogue names."""
    text = user_text(body)
    m = re.search(r'about the topic "(.+?)"\. The conversation should vividly convey the emotion of "(\w+)"', text)
    if m:
        topic, emotion = m.groups()
        return (
            f"A: I feel such {emotion} about {topic}.\nB: Really, {emotion}? Tell me ({time.monotonic_ns()}).\n"
            f"A: Yes, {topic} fills me with {emotion}."
        )
    dialogue = text.split("Conversation:\n", 1)[1].split("\n\n", 1)[0]
    found = [e for e in EMOTIONS if e in dialogue]
    return f"{found[0].capitalize()}." if found else "neutral"


@pytest.fixture
def server():
    servers = []

    def make(script=None, delay=0.0):
        s = FakeServer(script, delay)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def ep_for(s: FakeServer, **kw) -> Endpoint:
    kw = {"model": "fake", "backoff": 0.02, "request_timeout": 5.0, "temperature": 0.1, "max_tokens": 10, **kw}
    return Endpoint(base_url=s.base_url, **kw)


DIALOGUES = [f"A: Talking about item {i} makes me feel {e}.\nB: I see.\nA: Indeed." for i, e in enumerate(EMOTIONS * 2)]


# --- prompts, parsing, parameters


def test_prompts_are_packaged_text_files_with_their_slots():
    s, lab = endpoint.prompt("synthesis"), endpoint.prompt("labelling")
    assert "{topic}" in s and "{emotion}" in s and "A:" in s
    assert "{labels}" in lab and "{dialogue}" in lab
    with pytest.raises(ValueError, match="allowed: synthesis, labelling"):
        endpoint.prompt("classify")


@pytest.mark.parametrize(
    "reply,want",
    [
        ("Anger.", ("anger", "ok")),
        ("joy", ("happiness", "ok")),
        ("The emotion is fear.", ("fear", "ok")),
        ("anger or fear", (None, "ambiguous")),
        ("neutral", (None, "not_an_emotion")),
        ("  ", (None, "empty")),
    ],
)
def test_label_replies_are_parsed_or_given_a_reason(reply, want):
    assert endpoint.parse_vote_reply(reply, list(EMOTIONS)) == want


def test_dialogue_replies_are_parsed_or_given_a_reason():
    good = "A: Hi.\nB: Hello.\nA: Bye."
    assert endpoint.parse_dialogue_reply("Sure! Here it is:\n" + good, "stop") == (good, "ok")  # preamble skipped
    assert endpoint.parse_dialogue_reply("A: Hi.\nA: Hello again.\nB: Bye.", "stop") == (None, "off_format")
    assert endpoint.parse_dialogue_reply("Here is a dialogue about it!", "stop") == (None, "off_format")
    assert endpoint.parse_dialogue_reply(good, "stop") == (good, "ok")
    assert endpoint.parse_dialogue_reply(good + "\nB: and then I", "length") == (good, "ok")
    assert endpoint.parse_dialogue_reply("", "stop") == (None, "empty")


@pytest.mark.parametrize(
    "raw,needle",
    [
        ({"data_source": "openai"}, "'endpoint_model' is required when data_source is openai"),
        ({"endpoint_api_key_env": "sk-abc-123"}, "'endpoint_api_key_env' must be the NAME of an environment variable"),
        ({"endpoint_base_url": "localhost:8000"}, "'endpoint_base_url' must be an http:// or https:// URL"),
        ({"annotators": ["openai:", "minilm", "gemma3-270m"]}, "'annotators' 'openai:' must be followed by"),
        ({"endpoint_max_concurrency": 0}, "'endpoint_max_concurrency' must be >= 1"),
        ({"annotator_endpoints": {"openai:x": {"base_url": "http://h/v1"}}}, "names openai:x, not among annotators"),
        (
            {
                "annotators": ["openai:x", "minilm", "gemma3-270m"],
                "annotator_endpoints": {"openai:x": {"api_key": "k"}},
            },
            "unknown setting 'api_key'; allowed: base_url, api_key_env",
        ),
        ({"data_source": "gpt"}, "'data_source' must be one of template, hf, emoprism, openai"),
    ],
)
def test_bad_endpoint_parameters_give_one_line(raw, needle):
    with pytest.raises(ParamError) as e:
        params.validate(raw, "x.yaml")
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_annotator_endpoints_override_the_shared_settings():
    p = params.validate(
        {
            "annotators": ["openai:a", "openai:b", "minilm"],
            "endpoint_api_key_env": "KEY_A",
            "annotator_endpoints": {
                "openai:b": {"base_url": "https://b.example/v1", "api_key_env": "KEY_B", "temperature": 0.0}
            },
        }
    )
    a, b = endpoint.annotator_endpoint("openai:a", p), endpoint.annotator_endpoint("openai:b", p)
    assert (a.model, a.base_url, a.api_key_env, a.temperature, a.max_tokens) == (
        "a",
        "http://127.0.0.1:8000/v1",
        "KEY_A",
        0.1,
        10,
    )
    assert (b.model, b.base_url, b.api_key_env, b.temperature) == ("b", "https://b.example/v1", "KEY_B", 0.0)


# --- requests against the fake server


def test_labels_tokens_and_the_cache(server, tmp_path):
    s = server()
    labels, stats = endpoint.vote(DIALOGUES, list(EMOTIONS), ep_for(s), tmp_path)
    assert labels == list(EMOTIONS * 2)
    assert stats["requests"] == len(DIALOGUES) == len(s.calls)
    assert (stats["prompt_tokens"], stats["completion_tokens"]) == (10 * len(DIALOGUES), 2 * len(DIALOGUES))
    again, stats2 = endpoint.vote(DIALOGUES, list(EMOTIONS), ep_for(s), tmp_path)
    assert again == labels and stats2["requests"] == 0 and stats2["from_cache"] == len(DIALOGUES)
    assert len(s.calls) == len(DIALOGUES)  # nothing asked twice
    u = endpoint.usage(tmp_path)
    assert u.to_dict("records") == [{"model": "fake", "requests": 12, "prompt_tokens": 120, "completion_tokens": 24}]


def test_429_and_5xx_are_retried_with_exponential_backoff(server, tmp_path):
    def script(n, body):
        return (429, "", {}, 0) if n == 0 else (500, "", {}, 0) if n == 1 else (503, "", {}, 0) if n == 2 else None

    s = server(script)
    labels, stats = endpoint.vote(DIALOGUES[:1], list(EMOTIONS), ep_for(s, backoff=0.2), tmp_path)
    assert labels == ["anger"] and len(s.calls) == 4
    assert (stats["retried_http_429"], stats["retried_http_500"], stats["retried_http_503"]) == (1, 1, 1)
    gaps = [b["t"] - a["t"] for a, b in zip(s.calls, s.calls[1:])]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4 and gaps[2] >= 0.8  # back-off doubles: 0.2, 0.4, 0.8 s (+ <= 10%)
    assert sum(gaps) < 1.54 + 3.0  # and is not longer than that (with slack for a busy machine)


def test_timeouts_are_retried(server, tmp_path):
    s = server(lambda n, body: (200, "Fear", {}, 3.0) if n == 0 else None)
    labels, stats = endpoint.vote(DIALOGUES[2:3], list(EMOTIONS), ep_for(s, request_timeout=1.0), tmp_path)
    assert labels == ["fear"] and stats["retried_timeout"] >= 1 and stats["requests"] == 1 and len(s.calls) >= 2


def test_retries_run_out_with_a_clear_error(server, tmp_path):
    s = server(lambda n, body: (502, "", {}, 0))
    with pytest.raises(EndpointError, match=r"still failing \(http_502\) after 2 retries.*a rerun resumes"):
        endpoint.vote(DIALOGUES[:1], list(EMOTIONS), ep_for(s, max_retries=2), tmp_path)
    assert len(s.calls) == 3


def test_unauthorised_is_not_retried_and_names_the_key_variable(server, tmp_path, monkeypatch):
    monkeypatch.setenv("EMOLIB_TEST_KEY", "wrong")
    s = server(lambda n, body: (401, "", {}, 0))
    with pytest.raises(EndpointError, match="check the key in the environment variable EMOLIB_TEST_KEY"):
        endpoint.vote(
            DIALOGUES[:3], list(EMOTIONS), ep_for(s, api_key_env="EMOLIB_TEST_KEY", max_concurrency=1), tmp_path
        )
    assert len(s.calls) == 1


def test_malformed_replies_are_retried_then_dropped_and_counted(server, tmp_path):
    def script(n, body):
        text = user_text(body)
        if "item 0 " in text:
            return 200, "I would rather not say.", {}, 0  # never an emotion: dropped after 1 + 2 tries
        if "item 1 " in text and not any("item 1 " in user_text(c["body"]) for c in s.calls[:n]):
            return 200, "anger, or maybe disgust", {}, 0  # ambiguous once, then fine
        return None

    s = server(script)
    labels, stats = endpoint.vote(DIALOGUES[:3], list(EMOTIONS), ep_for(s, malformed_retries=2), tmp_path)
    assert labels == [None, "disgust", "fear"]
    assert stats["malformed_not_an_emotion"] == 3 and stats["dropped_not_an_emotion"] == 1
    assert stats["malformed_ambiguous"] == 1 and "dropped_ambiguous" not in stats
    assert len(s.calls) == 3 + 2 + 1
    again, stats2 = endpoint.vote(DIALOGUES[:3], list(EMOTIONS), ep_for(s, malformed_retries=2), tmp_path)
    assert again == labels and stats2["requests"] == 0 and stats2["dropped_not_an_emotion"] == 1


def test_synthesis_retries_off_format_replies_and_keys_each_sample(server, tmp_path):
    seen = set()

    def script(n, body):
        text = user_text(body)
        if text not in seen:
            seen.add(text)
            return 200, "Here is a dialogue about it!", {}, 0
        return None

    s = server(script)
    rows, stats = endpoint.synthesize(["cats", "tea"], ["anger", "fear"], 2, ep_for(s, max_tokens=200), tmp_path)
    assert len(rows) == 8 and {(r["topic"], r["theme"]) for r in rows} == {
        (t, e) for t in ("cats", "tea") for e in ("anger", "fear")
    }
    assert stats["malformed_off_format"] == 4 and stats["requests"] == 12 and stats["generated"] == 8
    assert all(r["dialogue"].startswith("A: I feel such") for r in rows)


@pytest.mark.parametrize("limit", [1, 3])
def test_concurrency_is_bounded_by_max_concurrency(server, tmp_path, limit):
    s = server(delay=0.25)
    t = time.monotonic()
    endpoint.vote(DIALOGUES[:9], list(EMOTIONS), ep_for(s, max_concurrency=limit), tmp_path)
    assert s.max_inflight == limit
    assert time.monotonic() - t >= 0.25 * 9 / limit


def test_model_auto_asks_the_server(server, tmp_path):
    s = server()
    labels, _ = endpoint.vote(DIALOGUES[:2], list(EMOTIONS), ep_for(s, model="auto"), tmp_path)
    assert labels == ["anger", "disgust"] and {c["body"]["model"] for c in s.calls} == {"served-model"}


def test_a_torn_last_line_is_ignored_and_appending_resumes_on_a_new_line(tmp_path):
    path = tmp_path / "endpoint-x.jsonl"
    path.write_text(json.dumps({"key": "a", "text": "Anger", "usage": {}}) + "\n" + '{"key": "b", "te')
    cache = endpoint.RequestCache(path)
    assert set(cache.records) == {"a"} and cache.torn == 1
    cache.put({"key": "c", "text": "Fear", "usage": {}})
    cache.close()
    again = endpoint.RequestCache(path)
    assert set(again.records) == {"a", "c"} and again.torn == 1
    again.close()


def test_resume_after_a_kill_never_asks_twice(server, tmp_path):
    s = server(delay=0.05)
    dialogues = [f"A: Story number {i} of my {EMOTIONS[i % 6]}.\nB: Go on.\nA: Done." for i in range(40)]
    script = (
        "import json, sys; from pathlib import Path; from emolib.dataset import endpoint\n"
        "ep = endpoint.Endpoint(base_url=sys.argv[1], model='fake', max_concurrency=2, max_tokens=10)\n"
        "endpoint.vote(json.loads(sys.argv[3]), json.loads(sys.argv[4]), ep, Path(sys.argv[2]))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, s.base_url, str(tmp_path), json.dumps(dialogues), json.dumps(list(EMOTIONS))],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while len(s.calls) < 12 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    assert 12 <= len(s.calls) < 40, "the build should have been killed midway"
    [path] = tmp_path.glob("endpoint-fake-*.jsonl")
    cached = endpoint.RequestCache(path)
    n_cached = len(cached.records)
    cached.close()
    asked_before = {user_text(c["body"]) for c in s.calls}
    assert len(s.calls) - 2 <= n_cached <= len(s.calls)  # at most max_concurrency replies lost in flight
    first = len(s.calls)
    labels, stats = endpoint.vote(
        dialogues,
        list(EMOTIONS),
        Endpoint(base_url=s.base_url, model="fake", max_concurrency=2, max_tokens=10),
        tmp_path,
    )
    assert labels == [EMOTIONS[i % 6] for i in range(40)]
    assert stats["from_cache"] == n_cached and stats["requests"] == 40 - n_cached == len(s.calls) - first
    resent = [user_text(c["body"]) for c in s.calls[first:] if user_text(c["body"]) in asked_before]
    assert len(resent) == first - n_cached  # only the requests whose replies the kill lost are sent again


def test_stage1_through_an_endpoint_keeps_the_key_out_of_every_output(server, tmp_path, monkeypatch):
    from emolib.dataset import build_data

    secret = "sk-test-secret-0123456789"
    s = server()
    p = params.validate(
        {
            "run_name": "ep",
            "data_source": "openai",
            "endpoint_base_url": s.base_url,
            "endpoint_model": "writer",
            "endpoint_api_key_env": "EMOLIB_TEST_KEY",
            "n_topics": 4,
            "dialogues_per_topic": 1,
            "eval_fraction": 0.5,
            "annotators": ["openai:judge-a", "openai:judge-b", "openai:judge-c"],
        }
    )
    p["run_dir"] = str(tmp_path / "outputs" / "ep")
    monkeypatch.delenv("EMOLIB_TEST_KEY", raising=False)
    with pytest.raises(EndpointError, match="environment variable EMOLIB_TEST_KEY .* is not set"):
        build_data.build(p)
    assert not s.calls
    monkeypatch.setenv("EMOLIB_TEST_KEY", secret)
    dd, df, stats = build_data.build(p)
    assert {c["auth"] for c in s.calls} == {f"Bearer {secret}"}
    assert {c["body"]["model"] for c in s.calls} == {"writer", "judge-a", "judge-b", "judge-c"}
    assert stats["generated"] == 24 and stats["kept"] == 24 and stats["requests"] == 24
    assert (df["openai:judge-a"] == df["theme"]).all()
    assert len(dd["train"]) + len(dd["eval"]) == 24
    u = endpoint.usage(endpoint.cache_dir(p)).set_index("model")
    assert u.loc["writer", "requests"] == 24 and u.loc["judge-b", "completion_tokens"] == 48
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f
    calls = len(s.calls)
    build_data.build(p)  # a rerun is served from the caches
    assert len(s.calls) == calls


def test_notebook_01_builds_its_dataset_through_an_endpoint(server, tmp_path):
    import nbformat
    import yaml

    from emolib import runner

    s = server()
    f = tmp_path / "ep.yaml"
    f.write_text(
        yaml.safe_dump(
            {
                "run_name": "ep-nb",
                "model": "tiny-random-llama",
                "data_source": "openai",
                "endpoint_base_url": s.base_url,
                "endpoint_model": "auto",
                "n_topics": 4,
                "dialogues_per_topic": 1,
                "eval_fraction": 0.5,
                "annotators": ["openai:judge-a", "openai:judge-b", "openai:judge-c"],
            }
        )
    )
    out = tmp_path / "outputs" / "ep-nb"
    runner.run(str(f), only=["01"], out=str(out))
    nb = nbformat.read(out / "01_data_construction.ipynb", as_version=4)
    text = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert "vividly convey the emotion of" in text and "Which emotion does this conversation express" in text
    assert "completion_tokens" in text and "served-model" in text and "judge-c" in text
    assert (out / "data" / "dataset_dict.json").exists()
    assert {c["body"]["model"] for c in s.calls} == {"served-model", "judge-a", "judge-b", "judge-c"}


# --- a real server: transformers serve on the embedded SmolLM2


@pytest.mark.slow
def test_transformers_serve_writes_and_labels_dialogues(smollm2_server, tmp_path):
    """smollm2_server (conftest.py) starts with the session, so its start-up overlaps other tests."""
    from emolib.dataset import data

    url = smollm2_server
    # 64 tokens hold a 3-8 turn dialogue of this model's; longer replies run on into off-format text and retries
    writer = Endpoint(
        base_url=url, model="auto", max_concurrency=4, temperature=0.7, max_tokens=64, malformed_retries=1
    )
    rows, stats = endpoint.synthesize(["cooking dinner", "a lost wallet"], ["anger", "happiness"], 1, writer, tmp_path)
    assert stats["jobs"] == 4 and stats["requests"] >= 4 and stats["completion_tokens"] > 0
    assert len(rows) + sum(v for k, v in stats.items() if k.startswith("dropped_")) == 4
    assert all(data.parse_dialogue(r["dialogue"]) == r["dialogue"] for r in rows)
    dialogues = [r["dialogue"] for r in rows] + DIALOGUES[:4]
    labeller = Endpoint(base_url=url, model="auto", max_concurrency=4, temperature=0.1, max_tokens=10)
    labels, lstats = endpoint.vote(dialogues, list(EMOTIONS), labeller, tmp_path)
    assert len(labels) == len(dialogues) and lstats["requests"] >= len(dialogues)
    assert all(lab is None or lab in EMOTIONS for lab in labels)
    assert sum(lab is not None for lab in labels) + sum(
        v for k, v in lstats.items() if k.startswith("dropped_")
    ) == len(dialogues)
    again, astats = endpoint.vote(dialogues, list(EMOTIONS), labeller, tmp_path)
    assert again == labels and astats["requests"] == 0


def test_fleiss_kappa_skips_items_an_endpoint_left_unlabelled():
    from emolib.dataset import annotate

    rows = [["a", "a", "b"], ["a", "b", "b"], ["a", "a", "a"], ["b", "b", "b"]]
    assert annotate.fleiss_kappa(rows + [["a", None, "b"]], ["a", "b"]) == annotate.fleiss_kappa(rows, ["a", "b"])
