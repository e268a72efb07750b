"""The README's Python examples run as written (issue 8 item 9)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_examples() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Python API"):]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_readme_has_the_python_examples() -> None:
    assert len(python_examples()) == 2


@pytest.mark.parametrize("index", range(2))
def test_a_readme_example_runs_as_written(index: int, tmp_path: Path) -> None:
    code = python_examples()[index]
    env = {**os.environ}
    env.pop("HAILING_ICE_HOSTS", None)  # the example restricts ICE itself
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    if index == 0:
        assert "bob got: hello" in proc.stdout
