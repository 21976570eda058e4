from __future__ import annotations

from collections.abc import Iterator

import pytest
from webhook_receiver import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    if server.hold is not None:
        server.hold.set()
    server.stop()
