"""Configuration: every problem names its key, secrets and durations resolve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from forwarder.config import load_config, parse_config
from forwarder.errors import ConfigError
from tests.conftest import base_config


def problems(document: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(document)
    return dict(caught.value.problems)


def test_a_valid_document_has_documented_defaults(tmp_path: Path) -> None:
    """Defaults: 15 s poll interval (when unset), 100 events a page, TLS only."""
    document = base_config(tmp_path)
    del document["source"]["poll_interval"]
    document["source"]["base_url"] = "https://app.asana.com/api/1.0"
    config = parse_config(document)

    assert config.source.poll_interval == 15
    assert config.source.page_size == 100
    assert config.sinks[0].format == "raw"
    assert config.daemon.shutdown_grace == 10


@pytest.mark.parametrize(
    ("change", "key", "fragment"),
    [
        (("source", "poll_interval", "soon"), "source.poll_interval", "not a duration"),
        (("source", "page_size", 500), "source.page_size", "less than or equal"),
        (("source", "workspace_gid", "abc"), "source.workspace_gid", "pattern"),
        (
            ("source", "token", "env:FORWARDER_TEST_UNSET"),
            "source.token",
            "FORWARDER_TEST_UNSET is not set",
        ),
        (
            ("source", "token", "file:/nonexistent/token"),
            "source.token",
            "cannot read secret file",
        ),
        (("source", "colour", "blue"), "source.colour", "unknown key"),
        (
            ("source", "max_requests_per_minute", 0),
            "source.max_requests_per_minute",
            "greater than or equal",
        ),
        (("source", "start_at", "yesterday"), "source.start_at", "not a duration"),
        (("server", "listen", "9464"), "server.listen", "HOST:PORT"),
        (("log", "level", "loud"), "log.level", "'debug'"),
    ],
)
def test_each_wrong_key_is_named(
    tmp_path: Path, change: tuple[str, str, Any], key: str, fragment: str
) -> None:
    """A wrong value is reported with its key and what is wrong with it."""
    document = base_config(tmp_path)
    section, name, value = change
    document.setdefault(section, {})[name] = value

    found = problems(document)

    assert key in found, found
    assert fragment in found[key]


def test_sink_problems_name_the_sink_index(tmp_path: Path) -> None:
    """Sink keys are reported as sinks[N].key, without pydantic's union tags."""
    document = base_config(tmp_path)
    document["sinks"] = [
        {"name": "a", "type": "file"},
        {"name": "b", "type": "carrier-pigeon"},
        {"name": "c", "type": "stdout", "fromat": "raw"},
        {"name": "c", "type": "stdout", "format": "xml"},
    ]
    found = problems(document)

    assert found["sinks[0].path"] == "required key is missing"
    assert "unknown sink type" in found["sinks[1]"]
    assert "unknown key" in found["sinks[2].fromat"]
    assert "sinks[3].format" in found


def test_duplicate_sink_names_are_refused(tmp_path: Path) -> None:
    """Two sinks with one name would share a checkpoint: refused."""
    document = base_config(tmp_path)
    document["sinks"].append(dict(document["sinks"][0]))

    assert "used twice" in problems(document)["sinks"]


def test_plain_http_is_refused_unless_allowed(tmp_path: Path) -> None:
    """The token must not travel in clear: http:// needs an explicit opt-in."""
    document = base_config(tmp_path, base_url="http://127.0.0.1:8080/api/1.0")
    assert "in clear" in problems(document)["source"]

    document["source"]["allow_insecure_http"] = True
    assert parse_config(document).source.base_url.startswith("http://")


def test_secrets_come_from_env_and_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """env: and file: secrets resolve, trimmed, and never show in repr."""
    monkeypatch.setenv("FORWARDER_TEST_TOKEN", "from-the-environment\n")
    document = base_config(tmp_path, token="env:FORWARDER_TEST_TOKEN")
    config = parse_config(document)
    assert config.source.token.reveal() == "from-the-environment"
    assert "from-the-environment" not in repr(config)

    secret_file = tmp_path / "token"
    secret_file.write_text("from-a-file\n")
    document["source"]["token"] = f"file:{secret_file}"
    assert parse_config(document).source.token.reveal() == "from-a-file"


def test_durations_and_relative_start(tmp_path: Path) -> None:
    """Durations accept ms/s/m/h/d; start_at accepts a time or a duration ago."""
    document = base_config(
        tmp_path,
        poll_interval="1m",
        start_at="2026-10-01T00:00:00Z",
        request_timeout="500ms",
    )
    source = parse_config(document).source
    assert source.poll_interval == 60
    assert source.request_timeout == 0.5
    assert source.start_at is not None
    assert source.start_at.isoformat() == "2026-10-01T00:00:00+00:00"


def test_toml_errors_name_the_file(tmp_path: Path) -> None:
    """A file that is not TOML is reported with its path."""
    path = tmp_path / "bad.toml"
    path.write_text("[source\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_the_example_configuration_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    """config/forwarder.example.toml documents a configuration that loads."""
    for name in (
        "ASANA_TOKEN",
        "SPLUNK_HEC_TOKEN",
        "SUMO_SOURCE_URL",
        "VECTOR_AUTHORIZATION",
    ):
        monkeypatch.setenv(name, f"https://example.com/{name.lower()}")
    example = Path(__file__).parent.parent / "config" / "forwarder.example.toml"
    config = load_config(example)
    assert [sink.type for sink in config.sinks] == [
        "file",
        "stdout",
        "splunk_hec",
        "sumo_logic",
        "http",
        "syslog",
    ]
