from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# the HTTP receiver is shared with tests/incidents
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "incidents"))

from webhook_receiver import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    if server.hold is not None:
        server.hold.set()
    server.stop()
