"""State on disk is owner-only: checkpoints decide which events a sink gets
(a tampered one skips events), dead-letter files hold whole events (emails,
IP addresses). Proved for the real command line run under the usual umask
022 and under umask 000, where only explicit modes protect anything.

The file sink's output is 0640: the events are for the SIEM's shipper
(Splunk's forwarder, Filebeat, Vector), which commonly runs as another user
in the file's group; others get nothing.

Also here: every runtime dependency has an upper version bound, so that an
incompatible major release cannot reach an installation unreviewed.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from forwarder.checkpoint import Checkpoint, FileCheckpointStore
from forwarder.simulator import AuditLogSimulator, SimulatorSettings
from tests.daemon_process import PROJECT, write_config

OWNER_ONLY_FILE = 0o600
OWNER_ONLY_DIRECTORY = 0o700
FILE_SINK_MODE = 0o640
# Run the command line with a given umask, the way a service manager would.
WITH_UMASK = (
    "import os, sys; os.umask(int(sys.argv[1], 8)); "
    "from forwarder.cli import main; sys.exit(main(sys.argv[2:]))"
)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module", params=[0o022, 0o000], ids=["umask-022", "umask-000"])
def created(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Everything ``run --once`` and ``state reset`` create, run in a
    subprocess under the umask: state directory, lock, checkpoint (with the
    copy a reset keeps aside), dead-letter file, the file sink's output."""
    umask: int = request.param
    root = tmp_path_factory.mktemp(f"umask-{umask:03o}")
    settings = SimulatorSettings(token="permissions-token", backlog=5)
    with AuditLogSimulator(settings) as simulator:
        simulator.append_raw("not an event: dead-lettered")
        document = {
            "source": {
                "workspace_gid": settings.workspace_gid,
                "token": "permissions-token",
                "base_url": simulator.base_url,
                "allow_insecure_http": True,
                "poll_interval": "50ms",
            },
            "state": {"directory": str(root / "state")},
            "server": {"listen": "127.0.0.1:0"},
            "sinks": [
                {"name": "file", "type": "file", "path": str(root / "out" / "a.jsonl")}
            ],
        }
        config = str(write_config(root / "forwarder.toml", document))
        for arguments in (
            ["run", "--once", "--config", config],
            ["state", "reset", "--config", config, "--all", "--beginning"],
        ):
            result = subprocess.run(
                [sys.executable, "-c", WITH_UMASK, f"{umask:o}", *arguments],
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": str(PROJECT)},
                timeout=60,
                check=False,
            )
            assert result.returncode == 0, result.stderr
    state = root / "state"
    [kept] = (state / "checkpoints").glob("file.json.replaced-*")
    return {
        "state": state,
        "lock": state / "lock",
        "checkpoints": state / "checkpoints",
        "checkpoint": state / "checkpoints" / "file.json",
        "kept checkpoint": kept,
        "dead-letter": state / "dead-letter",
        "dead-letter file": state / "dead-letter" / "file.jsonl",
        "output directory": root / "out",
        "output": root / "out" / "a.jsonl",
    }


def test_checkpoints_and_dead_letters_are_owner_only(created: dict[str, Path]) -> None:
    """Checkpoint files (the live one and the one a reset keeps) and the
    dead-letter file are 0600, their directories 0700, whatever the umask."""
    assert "not an event" in created["dead-letter file"].read_text()
    modes = {name: oct(mode_of(path)) for name, path in created.items()}
    expected = {
        "checkpoints": OWNER_ONLY_DIRECTORY,
        "checkpoint": OWNER_ONLY_FILE,
        "kept checkpoint": OWNER_ONLY_FILE,
        "dead-letter": OWNER_ONLY_DIRECTORY,
        "dead-letter file": OWNER_ONLY_FILE,
    }
    assert {name: modes[name] for name in expected} == {
        name: oct(mode) for name, mode in expected.items()
    }


def test_the_file_sink_output_is_readable_by_its_group_only(
    created: dict[str, Path],
) -> None:
    """The file sink's output is 0640 whatever the umask: the owner writes,
    the shipper's group reads, others get nothing."""
    assert created["output"].read_text().count("\n") == 5
    assert oct(mode_of(created["output"])) == oct(FILE_SINK_MODE)


def test_the_state_directory_is_owner_only(created: dict[str, Path]) -> None:
    """The state directory the forwarder creates is 0700: nobody else can
    list it, reach the lock, or rename its subdirectories."""
    assert oct(mode_of(created["state"])) == oct(OWNER_ONLY_DIRECTORY)


def test_the_lock_file_is_owner_only(created: dict[str, Path]) -> None:
    """The lock file is 0600 (it is empty, but it is state like the rest)."""
    assert oct(mode_of(created["lock"])) == oct(OWNER_ONLY_FILE)


@pytest.mark.parametrize("created", [0o000], ids=["umask-000"], indirect=True)
def test_the_file_sink_directory_is_not_writable_by_others(
    created: dict[str, Path],
) -> None:
    """Even under umask 000, the directory the file sink creates for its
    output cannot be written by group or others, who could otherwise
    replace the file the SIEM reads. (Under umask 022 the umask does it.)"""
    mode = mode_of(created["output directory"])
    assert not mode & (stat.S_IWGRP | stat.S_IWOTH), oct(mode)


def test_a_checkpoint_saved_over_a_looser_file_becomes_owner_only(
    tmp_path: Path,
) -> None:
    """A checkpoint file someone made readable (0644) is replaced by an
    owner-only one at the next save: saves write a new file and rename it,
    they never inherit the old file's mode."""
    store = FileCheckpointStore(tmp_path / "state")
    store.prepare()
    store.save(Checkpoint(sink="s"))
    store.path_of("s").chmod(0o644)
    store.save(Checkpoint(sink="s", delivered_total=1))
    assert oct(mode_of(store.path_of("s"))) == oct(OWNER_ONLY_FILE)
    assert [p.name for p in store.checkpoint_directory.iterdir()] == ["s.json"]


# -- dependency bounds -------------------------------------------------------------

# Development tools, not installed with the forwarder: a new release can only
# fail the CI's checks, never change what runs in production, and the CI is
# where their new findings should show up.
UNBOUNDED_DEVELOPMENT_TOOLS = frozenset({"mypy", "ruff", "types-pyyaml"})
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")


def bounds(requirement: str) -> tuple[str, set[str]]:
    """(normalized name, set of version operators) of a PEP 508 string."""
    match = _REQUIREMENT.match(requirement.split(";", 1)[0])
    assert match is not None, requirement
    name = re.sub(r"[-_.]+", "-", match[1]).lower()
    operators = {
        re.match(r"\s*(===|==|~=|!=|<=|>=|<|>)", part)[1]  # type: ignore[index]
        for part in match[3].split(",")
        if part.strip()
    }
    return name, operators


def test_the_requirement_parser_sees_bounds() -> None:
    """The parser reads names and operators, so the checks below can fail."""
    assert bounds("Foo_Bar[x] >=1.2, <2 ; python_version>'3'") == (
        "foo-bar",
        {">=", "<"},
    )
    assert bounds("ruff>=0.5") == ("ruff", {">="})
    assert bounds("types-PyYAML") == ("types-pyyaml", set())


def pyproject() -> dict[str, object]:
    return tomllib.loads((PROJECT / "pyproject.toml").read_text())


def test_every_runtime_dependency_has_both_bounds() -> None:
    """Each runtime dependency has a lower bound (a version known to work)
    and an upper bound (the next major, unreviewed, is not taken)."""
    project = pyproject()["project"]
    assert isinstance(project, dict)
    dependencies = project["dependencies"]
    assert dependencies, "no runtime dependencies found"
    unbounded = [
        requirement
        for requirement in dependencies
        if not bounds(requirement)[1] & {"<", "<=", "==", "~=", "==="}
        or not bounds(requirement)[1] & {">=", ">", "==", "~=", "==="}
    ]
    assert unbounded == []
    assert project["requires-python"].startswith(">=")


def test_test_dependencies_are_bounded_but_for_development_tools() -> None:
    """The test extra is bounded too, except the development tools named
    in UNBOUNDED_DEVELOPMENT_TOOLS (reason beside it)."""
    project = pyproject()["project"]
    assert isinstance(project, dict)
    unbounded = [
        requirement
        for requirement in project["optional-dependencies"]["test"]
        if bounds(requirement)[0] not in UNBOUNDED_DEVELOPMENT_TOOLS
        and not bounds(requirement)[1] & {"<", "<=", "==", "~=", "==="}
    ]
    assert unbounded == []
