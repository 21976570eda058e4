"""Code blocks in the README and docs/ run in CI, so they cannot rot.

Every ```python block is executed in a fresh interpreter (a block that needs a running server or
framework app says so with a first line ``# doc: compile-only`` and is only compiled). Blocks of
one file run separately, each from the repository root.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")),
         *sorted((ROOT / "examples").rglob("README.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks() -> list[tuple[str, str]]:
    found = []
    for path in FILES:
        for index, match in enumerate(BLOCK.finditer(path.read_text())):
            found.append((f"{path.relative_to(ROOT)}#{index}", match.group(1)))
    return found


@pytest.mark.parametrize(("where", "code"), _blocks(), ids=[w for w, _ in _blocks()])
def test_python_block_runs(where: str, code: str, tmp_path: Path) -> None:
    compile(code, where, "exec")
    if code.lstrip().startswith("# doc: compile-only"):
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRODLENS_", "OTEL_"))}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"{where} failed:\n{result.stderr[-3000:]}"


def test_examples_quickstart_prints_tagged_spans() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart" / "quickstart.py")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert '"enduser.id": "acme"' in lines["GET"]  # the server span, tagged late
    assert '"prodlens.cohort.plan": "pro"' in lines["charge-card"]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Test it", 1)[1]
    command = re.search(r"```bash\n(.*?)\n```", section, re.S).group(1).strip()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert f"{command} || exit 1" in ci_lines
