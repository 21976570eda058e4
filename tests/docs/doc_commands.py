"""Shell commands of the documentation pages, as a reader would type them.

Shared by the tests in this directory (not a test module itself).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")),
         *sorted((ROOT / "examples").rglob("README.md"))]
BASH = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)


@dataclass(frozen=True)
class Command:
    """One shell command of a page: its words (comments dropped) and the directory it runs in."""

    page: str
    words: tuple[str, ...]
    cwd: Path
    block: str

    def __str__(self) -> str:
        return f"{self.page}: {shlex.join(self.words)}"


def page_commands(page: Path) -> list[Command]:
    """The page's commands in order; ``cd`` moves the directory for the rest of its block."""
    found = []
    for block in BASH.findall(page.read_text()):
        name = str(page.relative_to(ROOT))
        cwd = ROOT
        heredoc = None
        pending = ""
        for line in block.replace("\\\n", " ").splitlines():
            if heredoc is not None:  # a here-document's body is data, not commands
                heredoc = None if line.strip() == heredoc else heredoc
                continue
            if (match := re.search(r"<<-?\s*'?(\w+)'?", line)) is not None:
                heredoc = match.group(1)
            try:
                words = shlex.split(pending + line, comments=True)
            except ValueError:  # a quote spans lines: read on
                pending += line + "\n"
                continue
            pending = ""
            # Split `a && b`, `a; b` and `a &` into commands.
            command: list[str] = []
            for word in [*words, "&&"]:
                if word in ("&&", ";", "&", "||"):
                    if command:
                        found.append(Command(name, tuple(command), cwd, block))
                        if command[0] == "cd":
                            cwd = (cwd / command[1]).resolve()
                    command = []
                else:
                    command.append(word)
    return found


COMMANDS = [c for page in PAGES for c in page_commands(page)]
def assignments(command: Command) -> dict[str, str]:
    """Variables a command sets: ``export A=1 B=2`` or a ``A=1 cmd`` prefix."""
    words = command.words[1:] if command.words[0] == "export" else command.words
    found = {}
    for word in words:
        name, eq, value = word.partition("=")
        if not eq or not re.fullmatch(r"[A-Z_][A-Z0-9_]*", name):
            break
        found[name] = value
    return found
