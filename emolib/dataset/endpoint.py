"""OpenAI-compatible chat endpoints for stage 1: dialogue synthesis and labelling, concurrent, retried, resumable.

Every reply is appended to a content-keyed JSON-lines cache (one file per model, shared by the runs of one outputs
folder) before it is used, so an interrupted build resumes where it stopped and never sends again a request whose
reply arrived.
API keys are read from the environment variable named by ``api_key_env`` and are never written anywhere.

Longer than 400 lines: one client: requests, bounded reads and deadlines, redaction of keys, the reply cache and the
voting prompts, which must be reviewed together for safety.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import re
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib.resources import files
from pathlib import Path

from ..emotions import ALIASES

PREFIX = "openai:"
SETTINGS = ("base_url", "api_key_env", "max_concurrency", "temperature", "max_tokens", "request_timeout")
VOTE_DEFAULTS = {"temperature": 0.1, "max_tokens": 10}  # EmoPrism's labelling settings
RETRY_STATUS = (408, 409, 429)
NO_KEY = "no-key"  # what local servers get as the API key when api_key_env is null
MAX_REPLY_CHARS = 65_536  # a reply's text is cached up to this length (a dialogue is a few hundred characters)
MAX_MESSAGE_CHARS = 300  # server text quoted in an error or a warning
HOW_IT_WORKS = (  # shown by notebook 01 when a run uses an endpoint
    "With `data_source: openai` each (topic, emotion, sample) is one request with the synthesis prompt; each "
    "`openai:<model>` annotator gets one request per dialogue with the labelling prompt. Both are text files in the "
    "package (`emolib/data/endpoint-prompts/`), after EmoPrism's published pipeline. A reply that is not 3-8 "
    "alternating `A:`/`B:` turns, or that names no single emotion, is asked again (`endpoint_malformed_retries`), "
    "then dropped and counted by reason. Requests run concurrently (`endpoint_max_concurrency`), and 429s, 5xx errors "
    "and timeouts are retried with exponential back-off. Every reply is appended to a content-keyed cache before it "
    "is used, so an interrupted build resumes without paying for a request twice. API keys are read from the "
    "environment variable that `endpoint_api_key_env` names, and never written anywhere."
)
MAX_REPLY_BYTES = 8 * 2**20  # a reply's body is read up to this size, then refused (a dialogue is a few KB)
MODEL_NAME = re.compile(r"[A-Za-z0-9._:/-]{1,128}")  # a model name taken from a server (auto, a reply's model)
FINISH = re.compile(r"[A-Za-z0-9_.-]{1,40}")  # a finish_reason worth keeping (stop, length, ...); else "other"
URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]*@")
SECRET = re.compile(
    r"(?i)(\bbearer\s+|\b(?:authorization|x-api-key|api[-_]?key|token)[\"']?\s*[:=]\s*[\"']?"
    r"(?:bearer\s+)?)[^\s\"',;}]+|\bsk-[A-Za-z0-9_-]{6,}"
)


class EndpointError(RuntimeError):
    """An endpoint failed in a way retrying will not fix (or retries ran out); the message says what to check."""


@dataclass(frozen=True)
class Endpoint:
    """One model behind an OpenAI-compatible chat-completions server, and how to call it."""

    base_url: str
    model: str
    api_key_env: str | None = None
    max_concurrency: int = 8
    temperature: float = 0.7
    max_tokens: int = 1024
    request_timeout: float = 120.0
    max_retries: int = 6
    malformed_retries: int = 2
    backoff: float = 1.0  # seconds before the first retry; doubles with every retry
    backoff_max: float = 60.0


def prompt(name: str) -> str:
    """The text of a packaged prompt: 'synthesis' (slots {topic}, {emotion}) or 'labelling' ({labels}, {dialogue})."""
    if name not in ("synthesis", "labelling"):
        raise ValueError(f"prompt: unknown prompt {name!r}; allowed: synthesis, labelling")
    return files("emolib").joinpath("data/endpoint-prompts", f"{name}.txt").read_text()


def is_endpoint(annotator: str) -> bool:
    """Whether an annotator name is an endpoint model ('openai:<model>')."""
    return annotator.startswith(PREFIX)


def uses_endpoints(p: dict) -> bool:
    """Whether a stage-1 parameter set sends anything to an endpoint."""
    return p["data_source"] == "openai" or any(is_endpoint(a) for a in p["annotators"])


def _from_params(p: dict, model: str, overrides: dict | None = None) -> Endpoint:
    """An Endpoint from the endpoint_* parameters, with per-annotator overrides."""
    s = {k: p[f"endpoint_{k}"] for k in SETTINGS}
    s.update(overrides or {})
    return Endpoint(
        model=model, max_retries=p["endpoint_max_retries"], malformed_retries=p["endpoint_malformed_retries"], **s
    )


def synth_endpoint(p: dict) -> Endpoint:
    """The endpoint that writes dialogues (data_source: openai)."""
    return _from_params(p, p["endpoint_model"])


def annotator_endpoint(name: str, p: dict) -> Endpoint:
    """The endpoint of an 'openai:<model>' annotator: EmoPrism's labelling settings, then its overrides."""
    overrides = {**VOTE_DEFAULTS, **(p.get("annotator_endpoints") or {}).get(name, {})}
    return _from_params(p, name[len(PREFIX) :], overrides)


def endpoints(p: dict) -> list[Endpoint]:
    """Every endpoint a stage-1 parameter set uses (the writer first)."""
    out = [synth_endpoint(p)] if p["data_source"] == "openai" else []
    return out + [annotator_endpoint(a, p) for a in p["annotators"] if is_endpoint(a)]


def api_key(ep: Endpoint) -> str:
    """The API key from the environment variable the endpoint names (a placeholder when it names none)."""
    if ep.api_key_env is None:
        return NO_KEY
    key = os.environ.get(ep.api_key_env, "")
    if not key:
        raise EndpointError(
            f"endpoint_api_key_env: the environment variable {ep.api_key_env} (API key for "
            f"{shown_url(ep.base_url)}, model {ep.model}) is not set; export it, or set the key's variable "
            "name to null for a local server"
        )
    return key


def shown_url(url: str) -> str:
    """A URL as it may be printed: any user:password@ replaced by ***@."""
    return URL_CREDENTIALS.sub(r"\1***@", url)


def redact(text: object, secrets: tuple[str, ...] = ()) -> str:
    """Server text made safe to print: the given secrets, bearer tokens, key-like strings and URL credentials
    replaced by ***, on one line, at most MAX_MESSAGE_CHARS characters."""
    text = " ".join(str(text).split())
    for secret in secrets:
        if secret and secret != NO_KEY:
            text = text.replace(secret, "***")
    text = SECRET.sub(lambda m: (m.group(1) or "") + "***", text)
    text = shown_url(text)
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + " ..."


def _secrets(ep: Endpoint) -> tuple[str, ...]:
    """The endpoint's API key (when set) and the password of its URL (when it has one), to be kept out of every
    message and every file."""
    from urllib.parse import unquote, urlsplit

    key = os.environ.get(ep.api_key_env, "") if ep.api_key_env else ""
    try:
        parts = urlsplit(ep.base_url)
        url = [x for x in (parts.password, unquote(parts.password or "")) if x and len(x) >= 3]
    except ValueError:
        url = []
    return tuple(x for x in (key, *url) if x)


def scrub(text: str, ep: Endpoint) -> str:
    """Text kept from a reply (a dialogue, a label) with the endpoint's secrets replaced by ***; nothing else
    changes (a dialogue may well say 'token: ...')."""
    for secret in _secrets(ep):
        if secret != NO_KEY:
            text = text.replace(secret, "***")
    return text


def check_keys(p: dict) -> None:
    """Fail before any work when an endpoint's API-key variable is missing."""
    for ep in endpoints(p):
        api_key(ep)


def cache_dir(p: dict) -> Path:
    """Where endpoint replies are cached: the cache folder shared by the runs of one outputs folder."""
    return Path(p["run_dir"]).resolve().parent / "cache"


# --- the append-only, content-keyed cache


def _count(v: object) -> bool:
    """A token count: a non-negative integer (bool excluded)."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def valid_record(rec: object) -> bool:
    """Whether a cache line holds a usable reply: key and text strings, finish_reason and model strings or null,
    usage a mapping whose prompt_tokens and completion_tokens (when present) are counts."""
    return (
        isinstance(rec, dict)
        and isinstance(rec.get("key"), str)
        and isinstance(rec.get("text"), str)
        and isinstance(rec.get("finish_reason"), (str, type(None)))
        and isinstance(rec.get("model"), (str, type(None)))
        and isinstance(rec.get("usage"), dict)
        and all(_count(rec["usage"][k]) for k in ("prompt_tokens", "completion_tokens") if k in rec["usage"])
    )


def read_records(text: str) -> tuple[dict[str, dict], int]:
    """Cached replies by key from a cache file's text, and how many lines were torn (cut short by a kill) or
    otherwise invalid (see valid_record): those requests are simply asked again."""
    records, torn = {}, 0
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):
            rec = None
        if valid_record(rec):
            records[rec["key"]] = rec
        elif line.strip():
            torn += 1
    return records, torn


class RequestCache:
    """Replies by request key, in a JSON-lines file that is only ever appended to (one write per reply)."""

    def __init__(self, path: Path):
        from ..safeio import open_append

        self.path = Path(path)
        # a link, a folder or a device is refused, and so is a linked cache folder (outputs/cache -> elsewhere)
        self.fd = open_append(self.path, readable=True, base=self.path.parent.parent)
        chunks = []
        while chunk := os.read(self.fd, 1 << 20):
            chunks.append(chunk)
        text = b"".join(chunks).decode("utf-8", "replace")
        self.records, self.torn = read_records(text)
        if text and not text.endswith("\n"):
            os.write(self.fd, b"\n")

    def get(self, key: str) -> dict | None:
        """The cached reply of a request, if any."""
        return self.records.get(key)

    def put(self, rec: dict) -> None:
        """Append one reply as a single line, in one write() to a file opened for appending."""
        os.write(self.fd, (json.dumps(rec, ensure_ascii=False) + "\n").encode())
        self.records[rec["key"]] = rec

    def close(self) -> None:
        """Flush the file to disk and close it."""
        os.fsync(self.fd)
        os.close(self.fd)


def cache_path(root: Path, model: str) -> Path:
    """The cache file of one model."""
    slug = re.sub(r"[^A-Za-z0-9.-]+", "_", model)[-48:].strip("_.") or "model"
    return Path(root) / f"endpoint-{slug}-{hashlib.sha1(model.encode()).hexdigest()[:8]}.jsonl"


def request_key(ep: Endpoint, messages: list[dict], sample: int, attempt: int) -> str:
    """A hash of what a request asks (model, messages, sampling settings, sample and attempt number)."""
    content = {
        "model": ep.model,
        "messages": messages,
        "temperature": ep.temperature,
        "max_tokens": ep.max_tokens,
        "sample": sample,
        "attempt": attempt,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def usage(root: Path):
    """Requests and tokens paid per model, summed over every endpoint cache file in a folder (a DataFrame)."""
    import pandas as pd

    rows = []
    for f in sorted(Path(root).glob("endpoint-*.jsonl")):
        if f.is_symlink() or not f.is_file():
            continue
        recs = list(read_records(f.read_text(errors="replace"))[0].values())
        rows.append(
            {
                "model": ", ".join(sorted({r.get("model") or "?" for r in recs})),
                "requests": len(recs),
                "prompt_tokens": sum(r["usage"].get("prompt_tokens", 0) for r in recs),
                "completion_tokens": sum(r["usage"].get("completion_tokens", 0) for r in recs),
            }
        )
    return pd.DataFrame(rows, columns=["model", "requests", "prompt_tokens", "completion_tokens"])


# --- parsing replies


def parse_dialogue_reply(text: str, finish_reason: str | None) -> tuple[str | None, str]:
    """A dialogue from a reply (A:/B: turns, 3-8, alternating), or None and the reason it is malformed."""
    from .data import parse_dialogue

    if not text.strip():
        return None, "empty"
    if finish_reason == "length":  # cut off by max_tokens: drop the unfinished last line
        text = text.rstrip().rsplit("\n", 1)[0]
    d = parse_dialogue(text)
    return (d, "ok") if d else (None, "off_format")


def parse_vote_reply(text: str, emotions: list[str]) -> tuple[str | None, str]:
    """The one emotion a reply names (aliases such as joy allowed), or None and the reason."""
    words = re.findall(r"[a-z]+", text.lower())
    if not words:
        return None, "empty"
    named = {ALIASES.get(w, w) for w in words} & set(emotions)
    if len(named) == 1:
        return named.pop(), "ok"
    return None, "ambiguous" if named else "not_an_emotion"


# --- requests


class ReplyTooLarge(Exception):
    """A reply's body passed MAX_REPLY_BYTES while it was read (or its Content-Length said it would)."""


class RequestDeadline(Exception):
    """A request's reply was still arriving when its whole-request deadline (request_timeout) passed."""


def _httpx():
    """The HTTP library the installed openai client is built on (httpx2 in newer releases, httpx before)."""
    import openai._base_client as base

    return getattr(base, "httpx2", None) or base.httpx


def http_client(ep: Endpoint, sync: bool = False):
    """The openai client's HTTP client, whose every reply is read at most MAX_REPLY_BYTES and by a deadline of
    request_timeout seconds from the request (the library's own timeout applies to each read, so a body sent one
    byte at a time, or without end, would otherwise never stop)."""
    hx = _httpx()
    cap, limit = MAX_REPLY_BYTES, ep.request_timeout

    def check(n: int, deadline: float) -> None:
        if n > cap:
            raise ReplyTooLarge(f"a reply above {cap:,} bytes")
        if time.monotonic() > deadline:
            raise RequestDeadline(f"a reply still arriving after {limit:g} s")

    def head(response, deadline: float) -> None:
        size = response.headers.get("content-length")
        if size and size.isdigit() and int(size) > cap:
            raise ReplyTooLarge(f"a reply announced as {int(size):,} bytes, above {cap:,}")
        check(0, deadline)

    class Capped(hx.SyncByteStream):
        def __init__(self, stream, deadline):
            self.stream, self.deadline = stream, deadline

        def __iter__(self):
            n = 0
            for chunk in self.stream:
                n += len(chunk)
                check(n, self.deadline)
                yield chunk

        def close(self):
            self.stream.close()

    class AsyncCapped(hx.AsyncByteStream):
        def __init__(self, stream, deadline):
            self.stream, self.deadline = stream, deadline

        async def __aiter__(self):
            n = 0
            async for chunk in self.stream:
                n += len(chunk)
                check(n, self.deadline)
                yield chunk

        async def aclose(self):
            await self.stream.aclose()

    class Transport(hx.HTTPTransport):
        def handle_request(self, request):
            deadline = time.monotonic() + limit
            response = super().handle_request(request)
            head(response, deadline)
            response.stream = Capped(response.stream, deadline)
            return response

    class AsyncTransport(hx.AsyncHTTPTransport):
        async def handle_async_request(self, request):
            deadline = time.monotonic() + limit
            response = await super().handle_async_request(request)
            head(response, deadline)
            response.stream = AsyncCapped(response.stream, deadline)
            return response

    if sync:
        return hx.Client(transport=Transport(), timeout=limit, follow_redirects=True)
    return hx.AsyncClient(transport=AsyncTransport(), timeout=limit, follow_redirects=True)


def _ours(err: BaseException | None):
    """The ReplyTooLarge or RequestDeadline behind an error (the client library may wrap them), or None."""
    for _ in range(10):
        if err is None or isinstance(err, (ReplyTooLarge, RequestDeadline)):
            return err
        err = err.__cause__ or err.__context__
    return None


def _retry_reason(err: Exception) -> str | None:
    """Why an error is worth retrying (http_429, http_5xx, timeout, connection), or None when it is not."""
    import openai

    if isinstance(err, (openai.APITimeoutError, asyncio.TimeoutError)) or isinstance(_ours(err), RequestDeadline):
        return "timeout"
    if isinstance(err, openai.APIConnectionError):
        return "connection"
    if isinstance(err, openai.APIStatusError):
        code = err.status_code
        return f"http_{code}" if code in RETRY_STATUS or code >= 500 else None
    return None


def _retry_after(err: Exception) -> float | None:
    """Seconds a server asked to wait (Retry-After), if it said."""
    resp = getattr(err, "response", None)
    value = resp.headers.get("retry-after") if resp is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class BadReply(Exception):
    """A reply that is not a chat completion (not JSON, an HTML page, wrong types); asked again as malformed."""


def _reply(r: object, ep: Endpoint) -> dict:
    """The cache record of a chat completion (text capped at MAX_REPLY_CHARS, the key redacted, the model that
    answered), or BadReply naming what is wrong."""
    choices = getattr(r, "choices", None)
    if not isinstance(choices, list):
        raise BadReply(
            f"a body that is not JSON: {redact(r, _secrets(ep))[:80]}"
            if isinstance(r, str)
            else "JSON without a 'choices' list"
        )
    choice = choices[0] if choices else None
    message = getattr(choice, "message", None)
    if choice is not None and message is None:
        raise BadReply("a choice without a message")
    text, finish = getattr(message, "content", None), getattr(choice, "finish_reason", None)
    if not isinstance(text, (str, type(None))) or not isinstance(finish, (str, type(None))):
        raise BadReply(f"'content' is {type(text).__name__} and 'finish_reason' {type(finish).__name__}, not text")
    text = (text or "").encode("utf-8", "replace").decode("utf-8")  # lone surrogates cannot be written
    if len(text) > MAX_REPLY_CHARS:  # kept up to the cap, as if cut off by max_tokens
        text, finish = text[:MAX_REPLY_CHARS], "length"
    text = scrub(text, ep)
    if finish is not None and not FINISH.fullmatch(finish):  # e.g. an echo of the request's headers
        finish = "other"
    model, u = getattr(r, "model", None), getattr(r, "usage", None)
    if not isinstance(model, str) or not model.strip():
        model = ep.model
    elif not MODEL_NAME.fullmatch(model) or scrub(model, ep) != model:  # never a key or a header in a name
        model = "(a name that is not a model name)"
    return {
        "model": model,
        "text": text,
        "finish_reason": finish,
        "usage": {k: v if _count(v := getattr(u, k, 0)) else 0 for k in ("prompt_tokens", "completion_tokens")},
    }


def _check_model(ep: Endpoint, answered: str, stats: Counter) -> None:
    """Count replies from a model other than the one asked for (a dated snapshot of it counts as the same), and
    warn at the first."""
    if answered == ep.model or re.fullmatch(re.escape(ep.model) + r"-(?:\d{4}-\d{2}-\d{2}|\d{4}|\d{8})", answered):
        return  # the model asked for, or a dated snapshot of it (gpt-4o-2024-08-06; never gpt-4o-mini for gpt-4o)
    stats["answered_by_other_model"] += 1
    if stats["answered_by_other_model"] == 1:
        warnings.warn(
            f"{shown_url(ep.base_url)}: asked for model {ep.model!r}, answered by {answered!r}; the cache records "
            "the model that answered",
            stacklevel=2,
        )


def _fatal(ep: Endpoint, err: Exception) -> EndpointError:
    """A clear error for a reply that retrying cannot fix."""
    import openai

    code = getattr(err, "status_code", None)
    hint = ""
    if code in (401, 403):
        hint = (
            f"; check the key in the environment variable {ep.api_key_env}"
            if ep.api_key_env
            else "; the server wants a key: set endpoint_api_key_env to the name of the variable holding it"
        )
    elif code == 404 or isinstance(err, openai.NotFoundError):
        hint = "; check endpoint_base_url (usually ending in /v1) and the model name the server lists"
    elif code in (400, 422):
        hint = "; check the model name and endpoint_max_tokens / endpoint_temperature"
    return EndpointError(
        f"{shown_url(ep.base_url)} refused a request for model {ep.model!r} ({code or type(err).__name__}): "
        f"{redact(getattr(err, 'message', err), _secrets(ep))}{hint}. Replies so far are cached; "
        "a rerun resumes."
    )


async def _ask(client, ep: Endpoint, messages: list[dict], stats: Counter) -> dict:
    """One chat completion, retried with exponential back-off on 429, 5xx, timeouts and lost connections; a reply
    that is not a chat completion (not JSON, wrong types) is asked again up to malformed_retries times."""
    retry = bad = 0
    while True:
        try:
            r = await asyncio.wait_for(
                client.chat.completions.create(
                    model=ep.model, messages=messages, temperature=ep.temperature, max_tokens=ep.max_tokens
                ),
                ep.request_timeout + 1.0,
            )  # the whole request, not each read (see http_client)
            return _reply(r, ep)
        except (BadReply, ValueError, RecursionError) as err:  # ValueError: the JSONDecodeError of a 200 reply
            stats["malformed_not_a_completion"] += 1
            if bad == ep.malformed_retries:
                what = str(err) if isinstance(err, BadReply) else f"invalid JSON: {redact(err, _secrets(ep))}"
                raise EndpointError(
                    f"{shown_url(ep.base_url)}, model {ep.model!r}: {bad + 1} replies in a row were not chat "
                    f"completions ({what}); check that endpoint_base_url is an OpenAI-compatible "
                    "API (usually ending in /v1). Replies so far are cached; a rerun resumes."
                ) from None
            delay = min(ep.backoff_max, ep.backoff * 2**bad)
            bad += 1
        except Exception as err:  # noqa: BLE001 - sorted into retryable and fatal below
            if isinstance(_ours(err), ReplyTooLarge):
                raise EndpointError(
                    f"{shown_url(ep.base_url)}, model {ep.model!r}: sent {_ours(err)}; check that "
                    "endpoint_base_url is an OpenAI-compatible API. Replies so far are cached; a "
                    "rerun resumes."
                ) from None
            reason = _retry_reason(err)
            if reason is None:
                raise _fatal(ep, err) from None
            if retry == ep.max_retries:
                raise EndpointError(
                    f"{shown_url(ep.base_url)}, model {ep.model!r}: still failing ({reason}) after "
                    f"{ep.max_retries} retries; replies so far are cached, a rerun resumes"
                ) from None
            stats[f"retried_{reason}"] += 1
            delay = max(
                min(ep.backoff_max, ep.backoff * 2**retry) * (1 + 0.1 * random.random()),
                min(_retry_after(err) or 0.0, ep.backoff_max),
            )
            retry += 1
        await asyncio.sleep(delay)


@dataclass(frozen=True)
class Job:
    """One item to ask for: its messages and its sample number (several dialogues share one prompt)."""

    messages: list
    sample: int = 0


def _resolve(ep: Endpoint, job: Job, cache: RequestCache, parse: Callable) -> tuple[bool, object, list[str], int]:
    """Walk a job's attempts through the cache: (finished, value, malformed reasons, next attempt to ask)."""
    reasons = []
    for attempt in range(ep.malformed_retries + 1):
        rec = cache.get(request_key(ep, job.messages, job.sample, attempt))
        if rec is None:
            return False, None, reasons, attempt
        value, reason = parse(rec["text"], rec.get("finish_reason"))
        if value is not None:
            return True, value, reasons, attempt
        reasons.append(reason)
    return True, None, reasons, ep.malformed_retries + 1


def _finish(results: list, i: int, value, reasons: list[str], stats: Counter) -> None:
    """Record a finished job: its value, or a drop counted by its last reason."""
    results[i] = value
    for r in reasons:
        stats[f"malformed_{r}"] += 1
    if value is None:
        stats[f"dropped_{reasons[-1]}"] += 1


async def _run(
    ep: Endpoint,
    jobs: list[Job],
    parse: Callable,
    cache: RequestCache,
    stats: Counter,
    pending: list[int],
    results: list,
    bar,
) -> None:
    """Ask for the pending jobs with max_concurrency workers; every reply is cached before it is used."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(
        base_url=ep.base_url,
        api_key=api_key(ep),
        max_retries=0,
        timeout=ep.request_timeout,
        http_client=http_client(ep),
    )
    queue = iter(pending)

    async def worker() -> None:
        for i in queue:  # one shared iterator: each job is taken by exactly one worker
            while True:
                done, value, reasons, attempt = _resolve(ep, jobs[i], cache, parse)
                if done:
                    _finish(results, i, value, reasons, stats)
                    bar.update(1)
                    break
                reply = await _ask(client, ep, jobs[i].messages, stats)
                cache.put({"key": request_key(ep, jobs[i].messages, jobs[i].sample, attempt), **reply})
                _check_model(ep, reply["model"], stats)
                stats["requests"] += 1
                for k, v in reply["usage"].items():
                    stats[k] += v
                bar.set_postfix(
                    {"requests": stats["requests"], "tokens": stats["prompt_tokens"] + stats["completion_tokens"]},
                    refresh=False,
                )

    workers = [asyncio.ensure_future(worker()) for _ in range(min(ep.max_concurrency, len(pending)))]
    try:
        await asyncio.gather(*workers)
    except BaseException:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        raise
    finally:
        await client.close()


def _in_loop_safe(coro_fn: Callable[[], object]) -> None:
    """Run a coroutine to completion, in a helper thread when an event loop is already running (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro_fn())
        return
    box: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(coro_fn())
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box.append(e)

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if box:
        raise box[0]


def run_jobs(ep: Endpoint, jobs: list[Job], parse: Callable, root: Path, desc: str) -> tuple[list, Counter]:
    """Values of every job (None where dropped) and the statistics: requests, retries, malformed and dropped
    replies by reason, and the tokens of this call's new requests."""
    ep = resolve_model(ep)
    cache = RequestCache(cache_path(root, ep.model))
    stats: Counter = Counter(jobs=len(jobs))
    results: list = [None] * len(jobs)
    pending = []
    for i, job in enumerate(jobs):
        done, value, reasons, _ = _resolve(ep, job, cache, parse)
        if done:
            _finish(results, i, value, reasons, stats)
        else:
            pending.append(i)
    stats["from_cache"] = len(jobs) - len(pending)
    if cache.torn:
        stats["torn_cache_lines_skipped"] = cache.torn
    from ..progress import tqdm

    t0 = time.time()
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(pending), desc=desc, unit="item", dynamic_ncols=True)
    try:
        if pending:
            _in_loop_safe(lambda: _run(ep, jobs, parse, cache, stats, pending, results, bar))
    finally:
        bar.close()
        cache.close()
    stats["seconds"] = round(time.time() - t0, 2)
    print(summary(ep, stats), file=sys.stderr)
    return results, stats


def summary(ep: Endpoint, stats: Counter) -> str:
    """One line: items, new and cached, retries, malformed and dropped replies, tokens."""
    bad = {
        k: v
        for k, v in sorted(stats.items())
        if k.startswith(("retried_", "malformed_", "dropped_", "torn_", "answered_by_"))
    }
    return (
        f"{ep.model} @ {shown_url(ep.base_url)}: {stats['jobs']} items ({stats['from_cache']} from cache), "
        f"{stats['requests']} new requests in {stats['seconds']:.1f} s, tokens {stats['prompt_tokens']:,} prompt "
        f"+ {stats['completion_tokens']:,} completion"
        + ("; " + ", ".join(f"{k} {v}" for k, v in bad.items()) if bad else "")
    )


def resolve_model(ep: Endpoint) -> Endpoint:
    """Replace model 'auto' with the first model the server lists (a local server usually serves one)."""
    if ep.model != "auto":
        return ep
    from openai import OpenAI

    try:
        models = [
            m.id
            for m in OpenAI(
                base_url=ep.base_url,
                api_key=api_key(ep),
                max_retries=2,
                timeout=ep.request_timeout,
                http_client=http_client(ep, sync=True),
            ).models.list()
        ]
    except Exception as err:  # noqa: BLE001 - any failure here means the server is not usable
        raise EndpointError(
            f"endpoint_model: auto asks {shown_url(ep.base_url)} for its models, which failed: "
            f"{redact(err, _secrets(ep))}"
        ) from None
    if not models:
        raise EndpointError(f"endpoint_model: auto, but {shown_url(ep.base_url)} lists no models; name one")
    if not isinstance(models[0], str) or not MODEL_NAME.fullmatch(models[0]) or scrub(models[0], ep) != models[0]:
        raise EndpointError(
            f"endpoint_model: auto, but {shown_url(ep.base_url)} lists a model whose name is not "
            "a plain model name (letters, digits and ._:/- only, at most 128); name the model "
            "(endpoint_model) instead of auto"
        )
    return replace(ep, model=models[0])


# --- the two stage-1 tasks


def synthesize(
    topics: list[str], emotions: list[str], per_pair: int, ep: Endpoint, root: Path
) -> tuple[list[dict], Counter]:
    """Dialogues written through the endpoint for every (topic, emotion, sample); duplicates dropped."""
    template = prompt("synthesis")
    keys = [(t, e, k) for t in topics for e in emotions for k in range(per_pair)]
    jobs = [Job([{"role": "user", "content": template.format(topic=t, emotion=e)}], k) for t, e, k in keys]
    values, stats = run_jobs(ep, jobs, parse_dialogue_reply, root, f"writing dialogues ({ep.model})")
    rows, seen = [], set()
    for (t, e, _), d in zip(keys, values):
        if d is None:
            continue
        if d in seen:
            stats["dropped_duplicate"] += 1
            continue
        seen.add(d)
        rows.append({"topic": t, "theme": e, "dialogue": d, "style": "generated"})
    stats["generated"] = len(rows)
    return rows, stats


def vote(dialogues: list[str], emotions: list[str], ep: Endpoint, root: Path) -> tuple[list[str | None], Counter]:
    """One emotion per dialogue from the endpoint (None where every reply was malformed)."""
    template = prompt("labelling")
    jobs = [
        Job([{"role": "user", "content": template.format(labels=", ".join(emotions), dialogue=d)}]) for d in dialogues
    ]
    return run_jobs(ep, jobs, lambda text, _: parse_vote_reply(text, emotions), root, f"labelling ({ep.model})")


def vote_settings(ep: Endpoint, emotions: list[str]) -> list:
    """What an endpoint annotator's votes depend on (for the annotation cache tag)."""
    return [ep.model, emotions, ep.temperature, ep.max_tokens, ep.malformed_retries, prompt("labelling")]


# --- a local server in one command


def local_model_dir() -> Path:
    """The dequantised SmolLM2-135M-Instruct folder (made once from the package's GGUF file)."""
    from ..lm.models import PRESETS, dequantized_cache, gguf_path

    return dequantized_cache(gguf_path(PRESETS["smollm2-135m-instruct"]))


def serve_command(port: int = 8000, model_dir: Path | None = None, continuous_batching: bool = True) -> list[str]:
    """`transformers serve` on the embedded SmolLM2, on the loopback interface (its model name is the folder)."""
    exe = Path(sys.executable).with_name("transformers")
    return [
        str(exe),
        "serve",
        str(model_dir or local_model_dir()),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        "cpu",
        "--log-level",
        "warning",
        "--continuous-batching" if continuous_batching else "--no-continuous-batching",
    ]


def serve_env(threads: int | None = None) -> dict:
    """The server's environment: offline, and torch's thread count when given (1 is fastest on a busy CPU)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def main(argv: list[str] | None = None) -> None:
    """python -m emolib.dataset.endpoint serve: SmolLM2-135M-Instruct, offline, behind an OpenAI-compatible API."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m emolib.dataset.endpoint", description=main.__doc__)
    ap.add_argument("command", choices=["serve"])
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--threads", type=int, default=None, help="torch threads of the server (default: torch's)")
    ap.add_argument(
        "--continuous-batching",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="batch concurrent requests together (default: on)",
    )
    args = ap.parse_args(argv)
    cmd = serve_command(args.port, continuous_batching=args.continuous_batching)
    print(f"serving {cmd[2]} at http://127.0.0.1:{args.port}/v1 (endpoint_model: auto)", flush=True)
    os.execve(cmd[0], cmd, serve_env(args.threads))


if __name__ == "__main__":
    main()
