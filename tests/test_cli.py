"""The command line: check-config, state show and reset, --version, demo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from forwarder import __version__
from forwarder.checkpoint import Checkpoint, Cursor, FileCheckpointStore
from forwarder.cli import main
from tests.conftest import base_config
from tests.daemon_process import PROJECT, write_config

SECRET = "cli-secret-token-value"


def config_file(tmp_path: Path) -> Path:
    document = base_config(tmp_path, token=SECRET)
    return write_config(tmp_path / "forwarder.toml", document)


def test_check_config_accepts_a_valid_file_without_showing_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-config says the file is valid and summarizes it, token hidden."""
    assert main(["check-config", "--config", str(config_file(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "is valid" in out
    assert "sink file: file, format raw" in out
    assert SECRET not in out


def test_check_config_names_the_wrong_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An invalid file exits 2 with the key and the problem."""
    path = config_file(tmp_path)
    path.write_text(
        path.read_text().replace('poll_interval = "50ms"', 'poll_interval = "often"')
    )
    assert main(["check-config", "--config", str(path)]) == 2
    error = capsys.readouterr().err
    assert "source.poll_interval: 'often' is not a duration" in error


def test_state_show_and_reset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """state show prints each sink's position; state reset moves a sink to a
    time, keeping the previous file aside."""
    path = config_file(tmp_path)
    store = FileCheckpointStore(tmp_path / "state")
    store.prepare()
    store.save(
        Checkpoint(
            sink="file",
            cursors=(Cursor(offset="opaque-offset"),),
            newest_created_at="2026-11-30T10:00:00.000Z",
            delivered_total=12,
        )
    )

    assert main(["state", "show", "--config", str(path)]) == 0
    shown = capsys.readouterr().out
    assert "file: offset opaque-offset" in shown
    assert "12 delivered" in shown

    assert (
        main(
            [
                "state",
                "reset",
                "--config",
                str(path),
                "--sink",
                "file",
                "--to",
                "2026-11-29T00:00:00Z",
            ]
        )
        == 0
    )
    assert "previous checkpoint kept" in capsys.readouterr().out
    reset = store.load("file")
    assert reset is not None
    assert reset.cursor == Cursor(start_at="2026-11-29T00:00:00.000Z")
    assert len(list((tmp_path / "state" / "checkpoints").glob("*.replaced-*"))) == 1


def test_state_show_reports_a_corrupt_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A corrupt checkpoint is reported, with exit code 1."""
    path = config_file(tmp_path)
    store = FileCheckpointStore(tmp_path / "state")
    store.prepare()
    store.path_of("file").write_text("nonsense")

    assert main(["state", "show", "--config", str(path)]) == 1
    assert "UNREADABLE" in capsys.readouterr().out


def test_state_reset_refuses_unknown_sinks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Resetting a sink that is not configured is refused."""
    path = config_file(tmp_path)
    assert (
        main(["state", "reset", "--config", str(path), "--sink", "nope", "--beginning"])
        == 2
    )
    assert "no sink named nope" in capsys.readouterr().err


@pytest.mark.parametrize("command", [[], ["run"], ["state", "show"], ["demo"]])
def test_version_everywhere(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """--version works on every command."""
    with pytest.raises(SystemExit) as caught:
        main([*command, "--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.strip() == f"asana-audit-forwarder {__version__}"


@pytest.mark.slow
def test_demo_prints_simulated_events_without_configuration() -> None:
    """The README's first command forwards simulator events to stdout as
    normalized JSON lines, needing no token or configuration."""
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "forwarder.cli",
            "demo",
            "--stop-after",
            "3s",
            "--backlog",
            "25",
        ],
        capture_output=True,
        timeout=60,
        cwd=PROJECT,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
        check=False,
    )
    assert completed.returncode == 0, completed.stderr.decode()
    lines = [orjson.loads(line) for line in completed.stdout.splitlines()]
    assert len(lines) >= 25
    assert {"time", "event_id", "action", "actor_email"} <= set(lines[0])
    assert len({line["event_id"] for line in lines}) == len(lines)


def test_test_sinks_reports_each_sink(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """test-sinks delivers one marked event per sink and reports each result,
    touching no checkpoint; a sink that fails makes the exit code 1."""
    document = base_config(tmp_path, token=SECRET)
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    document["sinks"].append(
        {"name": "broken", "type": "file", "path": str(blocked / "x.jsonl")}
    )
    path = write_config(tmp_path / "forwarder.toml", document)

    assert main(["test-sinks", "--config", str(path)]) == 1
    out = capsys.readouterr().out
    assert "ok     file: delivered" in out
    assert "FAILED broken: cannot open" in out
    line = orjson.loads((tmp_path / "out.jsonl").read_bytes())
    assert line["event"]["event_type"] == "asana_audit_forwarder_test"
    assert not (tmp_path / "state" / "checkpoints").exists()
