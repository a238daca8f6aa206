"""Run by tests/conftest.py in the background: the tiny book end to end into one folder, then a copy of that folder
(modification times kept) rerun from stage 02 on, which should redo no work. The tests read both folders."""

import os
import shutil
import sys
from pathlib import Path

from emolib import runner

ROOT = Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    first, rerun = sys.argv[1], sys.argv[2]
    params = str(ROOT / "params/test-tiny.yaml")
    print("== the tiny book, every stage", flush=True)
    runner.run(params, out=first)
    shutil.copytree(first, rerun)  # copy2: contents and modification times
    print("== a copy of it, rerun from stage 02, the scorer's throughput forced far from the first run's", flush=True)
    os.environ["EMOLIB_THROUGHPUT"] = "0.5"  # the kernels inherit it: no design may change (test_book)
    runner.run(params, only=["02", "03", "04"], out=rerun)
