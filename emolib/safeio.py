"""Safe file handling for run folders: atomic writes, tensor loads that run no code, neurons.json checks, a lock.

Longer than 400 lines: every guard the run folders rely on (no link followed, atomic writes, code-free loads, the
lock) sits in one place, so a reviewer reads all of them together.
"""

from __future__ import annotations

import errno
import json
import math
import numbers
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .emotions import EMOTIONS


def clear_hint(path: str | os.PathLike) -> str:
    """The shell command that deletes a cache file (so the next run recomputes it), single-quoted for a POSIX shell
    (a quote inside the name is closed, escaped and reopened)."""
    return "rm '" + str(Path(path)).replace("'", "'\\''") + "'"


def _link_error(path: Path, what: str = "emolib writes only regular files, never through a link") -> ValueError:
    return ValueError(f"{path}: is a symbolic link; {what} (remove the link: {clear_hint(path)})")


def check_parents(path: str | os.PathLike, base: str | os.PathLike | None) -> None:
    """Refuse a path whose folders below base (base itself not checked) include a symbolic link or a non-folder:
    a planted link to a folder (e.g. <run>/figures -> /etc) would otherwise take every write under it elsewhere."""
    if base is None:
        return
    path, base = Path(os.path.abspath(path)), Path(os.path.abspath(base))
    try:
        rel = path.relative_to(base)
    except ValueError:
        return
    cur = base
    for part in rel.parts[:-1]:
        cur = cur / part
        try:
            mode = os.lstat(cur).st_mode
        except FileNotFoundError:
            return  # made by mkdir, a real folder
        if stat.S_ISLNK(mode):
            raise _link_error(cur, "emolib writes into the folders of a run, never through a link")
        if not stat.S_ISDIR(mode):
            raise ValueError(f"{cur}: is a file where emolib needs a folder; move it away")


def check_target(path: str | os.PathLike, base: str | os.PathLike | None = None) -> Path:
    """Refuse to write a path that exists as anything but a regular file (a symbolic link, a folder, a device, a
    pipe), or whose folders below base include a link (see check_parents): one ValueError line naming it (the book
    writes only regular files, never through a link). The one check every writer of the book calls."""
    path = Path(path)
    check_parents(path, base)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return path
    if stat.S_ISLNK(mode):
        raise _link_error(path)
    if stat.S_ISDIR(mode):
        raise ValueError(f"{path}: is a folder where emolib writes a file; move it away")
    if not stat.S_ISREG(mode):
        raise ValueError(
            f"{path}: is not a regular file (a device, pipe or socket); emolib writes only regular "
            "files there; move it away"
        )
    return path


def make_dirs(folder: str | os.PathLike, base: str | os.PathLike | None = None) -> Path:
    """mkdir -p of folder after check_parents (no link among its folders below base, nor folder itself a link)."""
    folder = Path(folder)
    check_parents(folder / "x", base)
    if base is not None and os.path.lexists(folder) and os.path.islink(folder):
        raise _link_error(folder, "emolib writes into the folders of a run, never through a link")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


MAX_READ_BYTES = 256 * 2**20  # the default cap of read_regular: no file the book reads as a whole is larger


def read_regular(path: str | os.PathLike, what: str = "file", limit: int = MAX_READ_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (a link to one is followed); a pipe, a device, a socket
    or a folder (directly or through a link) is refused before it is opened for reading, and a file that grows past
    the cap is refused while it is read: one ValueError line naming the file."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ValueError(f"{path}: {what} not found") from None
    except OSError as e:
        raise ValueError(f"{path}: {what} cannot be read ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{path}: {what} is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(
            f"{path}: {what} is not a regular file (a pipe, device or socket), which emolib does not "
            "read; give a regular file"
        )
    if st.st_size > limit:
        raise ValueError(f"{path}: {what} is {st.st_size:,} bytes, above the {limit:,} bytes emolib reads")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise ValueError(f"{path}: {what} cannot be read ({e.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped for a pipe or device since the check
            raise ValueError(f"{path}: {what} is not a regular file (a pipe, device or socket)")
        chunks, n = [], 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            n += len(chunk)
            if n > limit:
                raise ValueError(f"{path}: {what} is above the {limit:,} bytes emolib reads")
        return b"".join(chunks)
    except OSError as e:
        raise ValueError(f"{path}: {what} cannot be read ({e.strerror})") from None
    finally:
        os.close(fd)


def read_text(path: str | os.PathLike, what: str = "file", limit: int = MAX_READ_BYTES) -> str:
    """read_regular decoded as UTF-8 (one ValueError line naming the file and the byte otherwise)."""
    data = read_regular(path, what, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: {what} is not UTF-8 text (byte {e.object[e.start]:#04x} at {e.start})") from None


MAX_NOTEBOOK_BYTES = 200 * 2**20


def read_notebook(path: str | os.PathLike, limit: int = MAX_NOTEBOOK_BYTES):
    """A notebook (nbformat 4) read from a regular file of at most limit bytes and validated against nbformat's
    schema, so a cell list or a stream's text that is a number is one ValueError line naming the file, not a
    TypeError deep in a reader."""
    import warnings

    import nbformat

    text = read_text(path, "notebook", limit)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # missing cell ids and the like: normalised, not errors
            nb = nbformat.reads(text, as_version=4)
            nbformat.validate(nb)
    except RecursionError:
        raise ValueError(f"{path}: is not a valid notebook (nested too deeply)") from None
    except Exception as e:  # noqa: BLE001 - NotJSONError, ValidationError, and nbformat's own conversions
        what = " ".join(str(getattr(e, "message", None) or e).split())[:160]
        raise ValueError(f"{path}: is not a valid notebook ({type(e).__name__}: {what})") from None
    return nb


def open_append(path: str | os.PathLike, readable: bool = False, base: str | os.PathLike | None = None) -> int:
    """A file descriptor for appending to a regular file (created if missing; O_NOFOLLOW: a symbolic link is
    refused, not followed), readable from the start when asked."""
    path = check_target(path, base)
    make_dirs(path.parent, base)
    flags = (os.O_RDWR if readable else os.O_WRONLY) | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:  # made a link between the check and the open
            check_target(path)
        raise ValueError(f"{path}: cannot be opened for appending ({e.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        check_target(path)
        raise ValueError(f"{path}: is not a regular file")
    return fd


def atomic_write_text(path: str | os.PathLike, text: str, base: str | os.PathLike | None = None) -> None:
    """Write text to a temporary file beside path, then rename it over path (readers never see half a file)."""
    path = check_target(path, base)
    make_dirs(path.parent, base)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be read and shared
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        check_target(path, base)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(
    path: str | os.PathLike, obj: Any, indent: int | None = None, base: str | os.PathLike | None = None
) -> None:
    """Write obj as strict JSON (NaN and inf refused) atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, allow_nan=False), base)


def atomic_save(path: str | os.PathLike, save, base: str | os.PathLike | None = None) -> None:
    """Call save(tmp_path) (e.g. DataFrame.to_csv, torch.save), then rename the temporary file over path."""
    path = check_target(path, base)
    make_dirs(path.parent, base)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be read and shared
    try:
        save(tmp)
        check_target(path, base)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Move a fully written folder tmp into place at final, removing the old folder only afterwards."""
    tmp, final = Path(tmp), Path(final)
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def append_line(path: str | os.PathLike, line: str, base: str | os.PathLike | None = None) -> None:
    """Append one line with a single write to an O_APPEND file, flushed to disk (no interleaving, no half lines
    unless the machine stops mid-write); a path that is a link or a folder is refused (see check_target)."""
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    fd = open_append(path, base=base)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def load_tensors(path: str | os.PathLike, hint: str | None = None) -> Any:
    """torch.load with weights_only=True (tensors, numbers, strings and containers only: no code runs);
    any failure is one ValueError line naming the file and how to clear it."""
    import torch

    path = Path(path)
    hint = hint or f"it is a cache file: delete it to recompute ({clear_hint(path)})"
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError (unsafe content), EOFError/RuntimeError (torn), OSError
        full = " ".join(str(e).split())
        reason = full.split(". ")[0][:160] or "empty or damaged file"
        if "weights_only" in full or "Unsupported global" in full or "WeightsUnpickler" in full:
            reason = "it holds Python objects other than tensors and numbers, which are not loaded"
        raise ValueError(f"{path}: cannot be loaded safely ({type(e).__name__}: {reason}); {hint}") from None


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Parse a JSON file; any failure (missing, not UTF-8, not JSON) is one ValueError line naming the file."""
    path = Path(path)
    if not path.is_file() and not (path.exists() and not path.is_dir()):
        raise ValueError(f"{path}: {what} not found" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        return json.loads(read_regular(path, what).decode("utf-8"))
    except RecursionError:
        raise ValueError(f"{path}: {what} is nested too deeply to be valid") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: {what} is not UTF-8 text (byte {e.object[e.start]:#04x} at {e.start})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: {what} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except OSError as e:
        raise ValueError(f"{path}: {what} cannot be read ({e.strerror})") from None


def _is_int(v: Any) -> bool:
    """A true integer (bool excluded)."""
    return isinstance(v, int) and not isinstance(v, bool)


def check_neurons(
    d: Any,
    source: str,
    model: str | None = None,
    shape: tuple[int, int] | None = None,
    emotions: list[str] | None = None,
) -> dict:
    """Check a neurons.json mapping (keys model, n_layers, d_ff, emotions, neurons; extra keys ignored), and when
    given, that it matches the model id, the FFN shape (n_layers, d_ff) and the emotions; one ValueError line."""

    def bad(msg: str) -> None:
        raise ValueError(f"{source}: {msg}")

    if not isinstance(d, dict):
        bad(f"must be a JSON object with model, n_layers, d_ff, emotions, neurons; got {type(d).__name__}")
    missing = [k for k in ("model", "n_layers", "d_ff", "emotions", "neurons") if k not in d]
    if missing:
        bad(f"lacks key(s) {', '.join(missing)}; is it a neurons.json written by stage 2?")
    if not isinstance(d["model"], str) or not d["model"]:
        bad(f"'model' must be a model id string, got {d['model']!r}")
    for k in ("n_layers", "d_ff"):
        if not _is_int(d[k]) or d[k] < 1:
            bad(f"'{k}' must be a positive integer, got {d[k]!r}")
    L, D = d["n_layers"], d["d_ff"]
    E = d["emotions"]
    if not isinstance(E, list) or not E or any(e not in EMOTIONS for e in E):
        bad(f"'emotions' must be a non-empty list among {', '.join(EMOTIONS)}, got {E!r}")
    if len(set(E)) != len(E):
        bad(f"'emotions' lists an emotion twice: {E!r}")
    if not isinstance(d["neurons"], dict):
        bad("'neurons' must map each emotion to a list of [layer, index] pairs")

    def check_sets(sets: Any, where: str) -> None:
        if not isinstance(sets, dict):
            bad(f"'{where}' must map each emotion to a list of [layer, index] pairs")
        for e in E:
            pairs = sets.get(e)
            if not isinstance(pairs, list):
                bad(f"'{where}' has no list of [layer, index] pairs for {e}")
            for x in pairs:
                if not (isinstance(x, (list, tuple)) and len(x) == 2 and all(_is_int(v) for v in x)):
                    bad(f"'{where}.{e}' entries must be [layer, index] integer pairs, got {x!r}")
                if not (0 <= x[0] < L and 0 <= x[1] < D):
                    bad(f"'{where}.{e}' has [{x[0]}, {x[1]}] outside layers 0..{L - 1} and indices 0..{D - 1}")

    check_sets(d["neurons"], "neurons")
    named = d.get("named_sets")  # every named set, not only the first: classify --ablate, steer and 03-05 use them
    if named is not None:
        if not isinstance(named, dict) or not named:
            bad("'named_sets' must map set names to {neurons: {emotion: [[layer, index], ...]}}")
        for name, entry in named.items():
            if not isinstance(entry, dict):
                bad(f"'named_sets.{name}' must be an object with 'neurons', got {type(entry).__name__}")
            check_sets(entry.get("neurons"), f"named_sets.{name}.neurons")
    if model is not None and d["model"] != model:
        bad(f"was made for model {d['model']!r}, not {model!r}")
    if shape is not None and (L, D) != tuple(shape):  # so every set's [layer, index], checked above, fits the model
        bad(f"was made for an FFN of {L} layers x {D} neurons; the loaded model has {shape[0]} x {shape[1]}")
    if emotions is not None and list(E) != list(emotions):
        bad(
            f"has emotions {', '.join(E)}; the parameters have {', '.join(emotions)} (rerun stage 02, or set "
            "emotions to match)"
        )
    return d


def load_neurons_json(
    path: str | os.PathLike,
    model: str | None = None,
    shape: tuple[int, int] | None = None,
    emotions: list[str] | None = None,
) -> dict:
    """Read and check a neurons.json (see check_neurons); one ValueError line naming the file on any problem."""
    return check_neurons(read_json(path, "neurons file"), str(path), model, shape, emotions)


def finite(value: float) -> bool:
    """True for a real, finite number."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class FolderBusy(RuntimeError):
    """Another process holds the run folder's lock."""


@contextmanager
def folder_lock(folder: str | os.PathLike, name: str = ".emolib.lock") -> Iterator[Path]:
    """Hold an exclusive lock on a folder (fcntl.flock on folder/name, released when the process ends);
    a second holder gets FolderBusy naming the folder and the holder's pid."""
    import fcntl

    folder = Path(folder)
    path = folder / name
    check_target(path)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as e:  # a link or a pipe planted between the check and the open
            check_target(path)
            raise ValueError(f"{path}: the run's lock cannot be opened ({e.strerror})") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            check_target(path)
            raise ValueError(f"{path}: the run's lock is not a regular file; move it away")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FolderBusy(
                f"{folder} is in use by another run (pid {holder}); wait for it to finish, "
                "or run into another folder with --out"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino  # not unlinked by a holder releasing meanwhile
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield path
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def json_safe(x: Any) -> Any:
    """x for strict JSON: NaN and infinities as None, numpy numbers as Python's, recursively."""
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        return x
    if isinstance(x, numbers.Integral):
        return int(x)
    return float(x) if math.isfinite(x) else None
