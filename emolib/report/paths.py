"""Paths as a reader should see them: relative to the project, and never the local folders of this machine."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..params import ROOT


def local_roots() -> list[str]:
    """The local folders no committed notebook may show: the project root, the temporary folder and the home."""
    roots = {str(ROOT), str(ROOT.resolve()), tempfile.gettempdir(), "/tmp", os.path.expanduser("~")}
    return sorted((r.rstrip("/") for r in roots if r and r not in ("/", "~")), key=len, reverse=True)


def relative_to_root(path: str | Path) -> str:
    """A path as a reader should see it: relative to the project when inside it (no local folders in outputs), else
    absolute (the one path helper of the book)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(Path(path).resolve())
