"""Shared fixtures: the anyio backend, configurations and a fake Asana API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Tests that run the CLI in-process configure logging to a stream that
    pytest closes afterwards; every test starts from structlog's defaults."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def base_config(state: Path, **source: Any) -> dict[str, Any]:
    """A valid configuration document with one file sink, for tests to adjust."""
    return {
        "source": {
            "workspace_gid": "1111",
            "token": "test-token-123456",
            "base_url": "https://app.asana.test/api/1.0",
            "poll_interval": "50ms",
            **source,
        },
        "state": {"directory": str(state / "state")},
        "server": {"listen": "127.0.0.1:0"},
        "sinks": [{"name": "file", "type": "file", "path": str(state / "out.jsonl")}],
    }
