"""Every Python block of README.md and docs/*.md runs as pasted (each alone, as a file, in a fresh process).

Blocks that train on MNIST need the real files (FASTNET_DATA) and are slow; blocks on the GPU need a
working CuPy; blocks using dask need the distributed extra. Those are skipped with the reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fastnet

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MNIST_FILES = ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz")


def _blocks():
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for n, match in enumerate(re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M), 1):
            line = text[: match.start()].count("\n") + 1
            code = match.group(1)
            marks = [pytest.mark.slow] if "load_mnist(" in code or "distributed" in code else []
            yield pytest.param(code, id=f"{doc.name}:{line}", marks=marks)


def _skip_reason(code: str) -> str | None:
    if "load_mnist(" in code:
        data = os.environ.get("FASTNET_DATA", "")
        if not data or not all((Path(data) / name).exists() for name in MNIST_FILES):
            return "needs the real MNIST: set FASTNET_DATA to a folder with the IDX .gz files"
    live = "\n".join(line.split("#", 1)[0] for line in code.splitlines())  # comments only mention backends
    if '"cupy"' in live:
        status = fastnet.available_backends()["cupy"]
        if not status.available:
            return f"needs a GPU: {status.reason}"
    if "import distributed" in code or "from fastnet import" in code and "distributed" in code:
        try:
            import distributed  # noqa: F401
        except ImportError:
            return "needs the distributed extra: pip install 'fastnet[distributed]'"
    return None


def test_docs_have_python_blocks():
    assert len(list(_blocks())) >= 8


@pytest.mark.parametrize("code", list(_blocks()))
def test_block_runs_as_pasted(code, tmp_path):
    reason = _skip_reason(code)
    if reason:
        pytest.skip(reason)
    script = tmp_path / "block.py"
    script.write_text(code, encoding="utf-8")
    env = {**os.environ, "FASTNET_OFFLINE": "1", "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("FASTNET_BACKEND", None)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900, check=False)
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
