"""``prodlens.tag`` is typed with ParamSpec: decorated functions keep their signatures for mypy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _mypy(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir=/dev/null",
         "--follow-imports=silent",
         str(path)],
        capture_output=True, text=True, timeout=300, cwd=HERE,
    )


def test_decorated_functions_keep_their_signatures():
    result = _mypy(HERE / "decorated.py")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_wrong_call_to_a_decorated_function_is_a_type_error():
    result = _mypy(HERE / "wrong.py")
    assert result.returncode == 1
    assert 'Argument 1 to "checkout" has incompatible type "str"; expected "int"' in result.stdout
