"""Secrets never leave the forwarder except towards their own receiver.

Recognizable secrets (the Asana token, a HEC token, a Sumo Logic source URL
whose path holds a unique code, HTTP header values), given in every form a
configuration takes (``env:``, ``file:``, literal), are set in a
configuration with every sink type. Every command runs in a subprocess, in
every scenario that makes the forwarder talk about its credentials: success
at debug level, the API refusing the token (and echoing it), receivers
refusing theirs (and echoing them), receivers down, TLS failures. Their
stdout and stderr, the probes (/metrics, /healthz, /readyz), the checkpoint
and dead-letter files and what the sinks delivered are scanned for each
secret, and for its base64 and URL-encoded forms.

In-process, the same holds for ``str`` and ``repr`` of the errors sinks and
the API client raise (with their causes), of the configuration and of the
sink objects, and for the log pipeline itself.

The syslog sink carries no credential, but takes part in every scenario:
its errors and the events it sends are scanned too.
"""

from __future__ import annotations

import base64
import io
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import orjson
import pytest
import structlog
import trustme

from forwarder.checkpoint import Cursor
from forwarder.config import parse_config
from forwarder.errors import ApiError, SinkError
from forwarder.logs import configure_logging
from forwarder.secrets import Secret
from forwarder.simulator import AuditLogSimulator, SimulatorSettings
from forwarder.sinks import build_sink
from forwarder.sinks.base import Sink
from forwarder.sinks.http import HttpSink
from forwarder.sinks.splunk_hec import SplunkHecSink
from forwarder.sinks.sumo_logic import SumoLogicSink
from forwarder.source import AuditLogClient
from tests.daemon_process import (
    PROJECT,
    DaemonProcess,
    free_port,
    probe,
    wait_for,
    write_config,
)
from tests.doubles import HecDouble, HecToken, HttpReceiver, SumoDouble, batch_of
from tests.doubles.http_receiver import Request, Response
from tests.security import (
    FakeAuditApi,
    TcpCollector,
    api_event,
    server_context,
)

# Recognizable; most hold characters that URL encoding changes, so that the
# encoded forms are scanned for as well.
ASANA_TOKEN = "2/1207000000000001/1207999999999999:a5ana5ecre7t0ken0f7he7e57"
HEC_TOKEN = "hec5ecre7-0b4f-4c1e-9e57-5p1unk7ok3n"
SUMO_CODE = "ZaVnC4dhaV3+5umo5ecre7/C0deQ2xvdWRTZWNyZXQ=="
SUMO_CODE_404 = "5umo5ecre7c0deF0rAn0therPa7hBeh1ndA404=="
HTTP_KEY = "h77p-5ecre7-literal-ap1-key:v4lue"
HTTP_BEARER = "Bearer h77p-5ecre7-bearer-from-a-f1le"
SECRETS = (ASANA_TOKEN, HEC_TOKEN, SUMO_CODE, SUMO_CODE_404, HTTP_KEY, HTTP_BEARER)
# The credential part of the bearer header, which receivers may echo alone.
HTTP_BEARER_CREDENTIAL = HTTP_BEARER.removeprefix("Bearer ")

ASANA_ENV = "SECURITY_TEST_ASANA_TOKEN"
SUMO_ENV = "SECURITY_TEST_SUMO_URL"
SUMO_PREFIX = "/receiver/v1/http/"
WAIT_SECONDS = 30.0
BACKLOG = 12


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- the scan ------------------------------------------------------------------


def secret_forms(secret: str) -> dict[str, str]:
    """The secret as it could leak: verbatim, URL-encoded, base64."""
    raw = secret.encode()
    return {
        "verbatim": secret,
        "url-encoded": quote(secret, safe=""),
        "form-encoded": quote_plus(secret),
        "base64": base64.b64encode(raw).decode().rstrip("="),
        "base64url": base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }


def leaks(outputs: dict[str, str], secrets: tuple[str, ...] = SECRETS) -> list[str]:
    """Where any form of any secret appears: "output: form of secret N"."""
    found = []
    for name, text in outputs.items():
        for number, secret in enumerate(secrets):
            for form, value in secret_forms(secret).items():
                if value in text:
                    found.append(f"{name}: {form} of secret {number}")
    return found


@dataclass
class Transcript:
    """Everything the forwarder produced in one scenario, by origin."""

    outputs: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, text: str | bytes) -> None:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        self.outputs[name] = self.outputs.get(name, "") + text

    def add_command(self, name: str, result: subprocess.CompletedProcess[str]) -> None:
        self.add(f"{name} stdout", result.stdout)
        self.add(f"{name} stderr", result.stderr)

    def add_files(self, directory: Path) -> None:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                self.add(str(path), path.read_bytes())

    def add_probes(self, port: int) -> None:
        for path in ("/metrics", "/healthz", "/readyz"):
            response = probe(port, path)
            headers = "".join(f"{k}: {v}\n" for k, v in response.headers.items())
            self.add(f"GET {path}", headers + response.text)

    def assert_no_secret(self) -> None:
        assert self.outputs, "nothing was collected"
        assert leaks(self.outputs) == []


def test_the_scan_finds_every_form_of_a_planted_secret() -> None:
    """The scan is not blind: a secret planted verbatim, URL-encoded or
    base64-encoded in any output is reported with the output's name."""
    for form, value in secret_forms(ASANA_TOKEN).items():
        found = leaks({"stderr": f"text {value} text", "metrics": "clean"})
        assert f"stderr: {form} of secret 0" in found
        assert not any(item.startswith("metrics") for item in found)


# -- receivers and configuration -------------------------------------------------


class EchoingReceiver(HttpReceiver):
    """A generic receiver that, like some careless proxies, echoes the
    request's headers in every error reply, the credentials first (a reply
    text is cut at 200 characters, after redaction)."""

    def handle(self, request: Request) -> Response:
        response = super().handle(request)
        if response.status < 400:
            return response
        credentials = ("authorization", "x-api-key")
        first = sorted(request.headers.items(), key=lambda i: i[0] not in credentials)
        echoed = "; ".join(f"{k}: {v}" for k, v in first)
        return Response.text(response.status, f"refused, you sent {echoed}")


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the API and each receiver of one scenario are."""

    api: str
    hec: str
    sumo: str
    http: str
    syslog: str
    sumo_404: str | None = None


def secret_files(tmp_path: Path) -> dict[str, Path]:
    directory = tmp_path / "config"
    directory.mkdir(exist_ok=True)
    hec = directory / "hec-token"
    hec.write_text(HEC_TOKEN + "\n")
    bearer = directory / "http-bearer"
    bearer.write_text(HTTP_BEARER + "\n")
    return {"hec": hec, "bearer": bearer}


def delivery() -> dict[str, Any]:
    return {
        "batch_max_wait": "50ms",
        "retry_initial_delay": "50ms",
        "retry_max_delay": "200ms",
    }


def sinks_config(tmp_path: Path, at: Endpoints) -> list[dict[str, Any]]:
    files = secret_files(tmp_path)
    sinks: list[dict[str, Any]] = [
        {"name": "stdout", "type": "stdout", "delivery": delivery()},
        {
            "name": "file",
            "type": "file",
            "format": "normalized",
            "path": str(tmp_path / "output" / "events.jsonl"),
            "delivery": delivery(),
        },
        {
            "name": "hec",
            "type": "splunk_hec",
            "url": at.hec,
            "token": f"file:{files['hec']}",
            "request_timeout": "5s",
            "delivery": delivery(),
        },
        {
            "name": "sumo",
            "type": "sumo_logic",
            "url": f"env:{SUMO_ENV}",
            "request_timeout": "5s",
            "delivery": delivery(),
        },
        {
            "name": "http",
            "type": "http",
            "url": at.http,
            "request_timeout": "5s",
            "headers": {
                "X-Api-Key": HTTP_KEY,
                "Authorization": f"file:{files['bearer']}",
            },
            "delivery": delivery(),
        },
    ]
    if at.sumo_404 is not None:
        # A literal secret: the URL written into the configuration file.
        sinks.append(
            {
                "name": "sumo404",
                "type": "sumo_logic",
                "url": at.sumo_404,
                "delivery": delivery(),
            }
        )
    sinks.append(
        {
            "name": "syslog",
            "type": "syslog",
            "address": at.syslog,
            "connect_timeout": "2s",
            "delivery": delivery(),
        }
    )
    return sinks


def config_path(tmp_path: Path, at: Endpoints, port: int) -> Path:
    document = {
        "source": {
            "workspace_gid": "1111111111111111",
            "token": f"env:{ASANA_ENV}",
            "base_url": at.api,
            "allow_insecure_http": True,
            "poll_interval": "100ms",
            "request_timeout": "5s",
        },
        "state": {"directory": str(tmp_path / "state")},
        "server": {"listen": f"127.0.0.1:{port}"},
        "log": {"level": "debug", "format": "json"},
        "daemon": {"shutdown_grace": "1s", "access_retry_interval": "200ms"},
        "sinks": sinks_config(tmp_path, at),
    }
    return write_config(tmp_path / "config" / "forwarder.toml", document)


def sumo_url(base: str, code: str = SUMO_CODE) -> str:
    return f"{base}{SUMO_PREFIX}{code}"


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The env: secrets; the Sumo URL is set by each scenario."""
    monkeypatch.setenv(ASANA_ENV, ASANA_TOKEN)
    return monkeypatch


def closed_url(scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{free_port()}"


# -- running commands --------------------------------------------------------------


def run_cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forwarder.cli", *arguments],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
        cwd=PROJECT,
        timeout=60,
        check=False,
    )


def log_events(output: str) -> list[dict[str, Any]]:
    """The forwarder's JSON log lines in an output (event lines of the
    stdout sink are not log lines)."""
    events = []
    for line in output.splitlines():
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(item, dict) and "level" in item and "event" in item:
            events.append(item)
    return events


def logged(output: str, event: str, **match: Any) -> list[dict[str, Any]]:
    return [
        item
        for item in log_events(output)
        if item["event"] == event and all(item.get(k) == v for k, v in match.items())
    ]


def seen(
    daemon: DaemonProcess, event: str, match: dict[str, Any]
) -> Callable[[], bool]:
    return lambda: bool(logged(daemon.output, event, **match))


def run_daemon(
    config: Path,
    transcript: Transcript,
    port: int,
    until: list[tuple[str, dict[str, Any]]],
) -> str:
    """``run`` until every (event, match) of ``until`` was logged; scrape the
    probes; SIGTERM; return the output (also added to the transcript)."""
    daemon = DaemonProcess(config)
    try:
        for event, match in until:
            wait_for(
                seen(daemon, event, match),
                WAIT_SECONDS,
                f"{event} {match} in the daemon's log",
            )
        transcript.add_probes(port)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    finally:
        daemon.stop()
    transcript.add("run", daemon.output)
    return daemon.output


def collect_state(transcript: Transcript, tmp_path: Path) -> None:
    """Checkpoints, dead letters, the file sink's output."""
    for directory in ("state", "output"):
        if (tmp_path / directory).exists():
            transcript.add_files(tmp_path / directory)


# -- the scenarios ---------------------------------------------------------------------


def test_every_command_in_a_healthy_run_keeps_secrets_out(
    tmp_path: Path, environment: pytest.MonkeyPatch
) -> None:
    """check-config, test-sinks, run --once at debug level, state show, state
    reset and a running daemon's probes, with every sink delivering, one
    event dead-lettered for being malformed and one refused by a receiver
    that echoes the credentials it got: no form of any secret appears in any
    output, checkpoint, dead-letter file or delivered event."""
    transcript = Transcript()
    settings = SimulatorSettings(token=ASANA_TOKEN, backlog=BACKLOG)
    with AuditLogSimulator(settings) as simulator:
        simulator.append_raw("an entry that is not an event")
        refused_gid = simulator.events()[3]["gid"]
        with (
            HecDouble([HecToken(HEC_TOKEN)]) as hec,
            SumoDouble([SUMO_CODE]) as sumo,
            EchoingReceiver(
                required_headers={"X-Api-Key": HTTP_KEY, "Authorization": HTTP_BEARER},
                refuse=lambda doc: doc["event"].get("gid") == refused_gid,
            ) as http,
            TcpCollector() as syslog,
        ):
            environment.setenv(SUMO_ENV, sumo_url(sumo.url))
            port = free_port()
            at = Endpoints(
                api=simulator.base_url,
                hec=hec.url,
                sumo=sumo.url,
                http=f"{http.url}{http.path}",
                syslog=f"tcp://127.0.0.1:{syslog.port}",
            )
            config = config_path(tmp_path, at, port)
            commands = [
                ("check-config", ["check-config", "--config", str(config)]),
                ("test-sinks", ["test-sinks", "--config", str(config)]),
                ("run --once", ["run", "--once", "--config", str(config)]),
                ("state show", ["state", "show", "--config", str(config)]),
                (
                    "state reset",
                    ["state", "reset", "--config", str(config), "--all", "--beginning"],
                ),
            ]
            for name, arguments in commands:
                result = run_cli(*arguments)
                transcript.add_command(name, result)
                assert result.returncode == 0, (name, result.stderr)
            delivered_once = len(hec.indexed())
            assert delivered_once == BACKLOG + 1  # the test event, then the log
            assert len(http.documents) == BACKLOG  # one refused, test event in
            run_daemon(config, transcript, port, [("batch_delivered", {"sink": "hec"})])
            assert len(hec.indexed()) > delivered_once  # delivered again
            for document in (*hec.indexed(), *http.documents):
                transcript.add("delivered", orjson.dumps(document))
            transcript.add("delivered", b"\n".join(sumo.messages()))
            assert refused_gid.encode() in syslog.data  # syslog took part
            transcript.add("syslog", syslog.data)
    collect_state(transcript, tmp_path)
    dead = (tmp_path / "state" / "dead-letter" / "http.jsonl").read_text()
    assert refused_gid in dead
    assert "refused, you sent" in dead
    assert "***" in dead  # the echoed credentials, blanked
    assert (
        "an entry that is not an event"
        in (tmp_path / "state" / "dead-letter" / "stdout.jsonl").read_text()
    )
    assert (
        "asana_forwarder_sink_events_delivered_total"
        in transcript.outputs["GET /metrics"]
    )
    transcript.assert_no_secret()


def test_the_api_refusing_and_echoing_the_token_keeps_it_out(
    tmp_path: Path, environment: pytest.MonkeyPatch
) -> None:
    """An API that answers 401 with the Authorization header in its error
    message: the refusal is logged and shown by /readyz with the token
    blanked out."""
    transcript = Transcript()
    with FakeAuditApi([api_event(1)], echo_refusal=True) as api:
        environment.setenv(SUMO_ENV, sumo_url(closed_url()))
        port = free_port()
        at = Endpoints(
            api=api.base_url,
            hec=closed_url(),
            sumo=closed_url(),
            http=closed_url(),
            syslog=f"tcp://127.0.0.1:{free_port()}",
        )
        config = config_path(tmp_path, at, port)
        output = run_daemon(config, transcript, port, [("api_access_refused", {})])
    [refusal, *_] = logged(output, "api_access_refused")
    assert refusal["status"] == 401
    assert "Not Authorized: Bearer ***" in refusal["error"]
    assert "Not Authorized: Bearer ***" in transcript.outputs["GET /readyz"]
    collect_state(transcript, tmp_path)
    transcript.assert_no_secret()


def test_receivers_refusing_the_credentials_keep_them_out(
    tmp_path: Path, environment: pytest.MonkeyPatch
) -> None:
    """HEC refuses the token (403), Sumo Logic does not know the source
    (401) or the path (404), the HTTP receiver refuses the headers (403) and
    echoes them: test-sinks and the running daemon report each refusal,
    without the credentials."""
    transcript = Transcript()
    with (
        AuditLogSimulator(SimulatorSettings(token=ASANA_TOKEN, backlog=3)) as simulator,
        HecDouble([HecToken("another-token")]) as hec,
        SumoDouble(["another-code"]) as sumo,
        EchoingReceiver(required_headers={"X-Api-Key": "another-key"}) as http,
        TcpCollector() as syslog,
    ):
        environment.setenv(SUMO_ENV, sumo_url(sumo.url))
        port = free_port()
        at = Endpoints(
            api=simulator.base_url,
            hec=hec.url,
            sumo=sumo.url,
            http=f"{http.url}{http.path}",
            syslog=f"tcp://127.0.0.1:{syslog.port}",
            sumo_404=f"{sumo.url}/collector/{SUMO_CODE_404}",
        )
        config = config_path(tmp_path, at, port)
        result = run_cli("test-sinks", "--config", str(config))
        transcript.add_command("test-sinks", result)
        assert result.returncode == 1
        for sink in ("hec", "sumo", "sumo404", "http"):
            assert f"FAILED {sink}: " in result.stdout
        assert "refused the source URL (HTTP 404" in result.stdout
        refused = "sink_credentials_refused"
        output = run_daemon(
            config,
            transcript,
            port,
            [(refused, {"status": s}) for s in (401, 403, 404)],
        )
        transcript.add("syslog", syslog.data)
    [http_refusal, *_] = logged(output, "sink_credentials_refused", sink="http")
    assert "you sent" in http_refusal["reply"]
    assert "***" in http_refusal["reply"]
    collect_state(transcript, tmp_path)
    transcript.assert_no_secret()


def test_receivers_down_keep_secrets_out(
    tmp_path: Path, environment: pytest.MonkeyPatch
) -> None:
    """Every receiver refuses the connection: test-sinks and the daemon's
    retries say so, without a secret (the Sumo URL's path included)."""
    transcript = Transcript()
    with AuditLogSimulator(
        SimulatorSettings(token=ASANA_TOKEN, backlog=3)
    ) as simulator:
        environment.setenv(SUMO_ENV, sumo_url(closed_url()))
        port = free_port()
        at = Endpoints(
            api=simulator.base_url,
            hec=closed_url(),
            sumo=closed_url(),
            http=closed_url() + "/ingest",
            syslog=f"tcp://127.0.0.1:{free_port()}",
        )
        config = config_path(tmp_path, at, port)
        result = run_cli("test-sinks", "--config", str(config))
        transcript.add_command("test-sinks", result)
        assert result.returncode == 1
        assert result.stdout.count("FAILED") == 4  # all but stdout and file
        output = run_daemon(
            config,
            transcript,
            port,
            [
                ("sink_open_retry", {"sink": "hec"}),
                ("sink_delivery_retry", {"sink": "sumo"}),
                ("sink_delivery_retry", {"sink": "http"}),
            ],
        )
    assert "onnect" in logged(output, "sink_delivery_retry", sink="sumo")[0]["error"]
    collect_state(transcript, tmp_path)
    transcript.assert_no_secret()


def test_tls_failures_of_the_receivers_keep_secrets_out(
    tmp_path: Path, environment: pytest.MonkeyPatch
) -> None:
    """Receivers whose certificate comes from an unknown CA: every sink
    fails with the certificate problem named, and no secret shows."""
    transcript = Transcript()
    context = server_context(trustme.CA())
    with (
        AuditLogSimulator(SimulatorSettings(token=ASANA_TOKEN, backlog=3)) as simulator,
        HecDouble([HecToken(HEC_TOKEN)], tls=context) as hec,
        SumoDouble([SUMO_CODE], tls=context) as sumo,
        EchoingReceiver(required_headers={"X-Api-Key": HTTP_KEY}, tls=context) as http,
        TcpCollector(tls=context) as syslog,
    ):
        environment.setenv(SUMO_ENV, sumo_url(sumo.url))
        port = free_port()
        at = Endpoints(
            api=simulator.base_url,
            hec=hec.url,
            sumo=sumo.url,
            http=f"{http.url}{http.path}",
            syslog=f"tls://127.0.0.1:{syslog.port}",
        )
        config = config_path(tmp_path, at, port)
        result = run_cli("test-sinks", "--config", str(config))
        transcript.add_command("test-sinks", result)
        assert result.returncode == 1
        failed = [line for line in result.stdout.splitlines() if "FAILED" in line]
        assert len(failed) == 4
        assert all("certificate verify failed" in line.lower() for line in failed), (
            failed
        )
        run_daemon(
            config,
            transcript,
            port,
            [
                ("sink_open_retry", {"sink": "hec"}),
                ("sink_delivery_retry", {"sink": "sumo"}),
                ("sink_delivery_retry", {"sink": "http"}),
            ],
        )
        assert hec.events == []
        assert sumo.accepted == []
        assert http.received == []
    collect_state(transcript, tmp_path)
    transcript.assert_no_secret()


@pytest.mark.parametrize("failure", ["untrusted certificate", "connection refused"])
def test_an_unreachable_api_keeps_the_token_out(
    tmp_path: Path, environment: pytest.MonkeyPatch, failure: str
) -> None:
    """The API cannot be reached (its certificate is from an unknown CA, or
    nothing listens): the retries are logged with the reason, no token."""
    transcript = Transcript()
    context = server_context(trustme.CA())
    with FakeAuditApi([api_event(1)], tls=context) as api:
        base_url = api.base_url
        if failure == "connection refused":
            base_url = closed_url("https") + "/api/1.0"
        environment.setenv(SUMO_ENV, sumo_url(closed_url()))
        port = free_port()
        at = Endpoints(
            api=base_url,
            hec=closed_url(),
            sumo=closed_url(),
            http=closed_url(),
            syslog=f"tcp://127.0.0.1:{free_port()}",
        )
        config = config_path(tmp_path, at, port)
        # A certificate problem needs a person (ERROR, unready); a refused
        # connection is retried as transient.
        event, reason = (
            ("api_access_refused", "certificate verification failed")
            if failure == "untrusted certificate"
            else ("api_request_retry", "onnect")
        )
        output = run_daemon(config, transcript, port, [(event, {})])
    assert reason in logged(output, event)[0]["error"]
    collect_state(transcript, tmp_path)
    transcript.assert_no_secret()


# -- in-process: objects, errors, the log pipeline --------------------------------


def config_document(tmp_path: Path, endpoints: dict[str, str]) -> dict[str, Any]:
    files = secret_files(tmp_path)
    return {
        "source": {"workspace_gid": "1111", "token": f"env:{ASANA_ENV}"},
        "state": {"directory": str(tmp_path / "state")},
        "sinks": [
            {"name": "stdout", "type": "stdout"},
            {"name": "file", "type": "file", "path": str(tmp_path / "out.jsonl")},
            {
                "name": "hec",
                "type": "splunk_hec",
                "url": endpoints["hec"],
                "token": f"file:{files['hec']}",
            },
            {"name": "sumo", "type": "sumo_logic", "url": f"env:{SUMO_ENV}"},
            {"name": "syslog", "type": "syslog", "address": "tls://siem.test:6514"},
            {
                "name": "http",
                "type": "http",
                "url": endpoints["http"],
                "headers": {
                    "X-Api-Key": HTTP_KEY,
                    "Authorization": f"file:{files['bearer']}",
                },
            },
        ],
    }


def test_config_and_sinks_never_show_secrets(
    tmp_path: Path, environment: pytest.MonkeyPatch
) -> None:
    """repr and str of the configuration, of each sink's section, of its
    model_dump and of each sink object show no secret, although the
    secrets are there to use (reveal)."""
    environment.setenv(SUMO_ENV, sumo_url("https://collectors.example.com"))
    config = parse_config(
        config_document(
            tmp_path,
            {"hec": "https://hec.example.com", "http": "https://h.example.com/in"},
        )
    )
    assert config.source.token.reveal() == ASANA_TOKEN
    revealed = [
        secret.reveal()
        for sink_config in config.sinks
        for value in vars(sink_config).values()
        for secret in (value.values() if isinstance(value, dict) else [value])
        if isinstance(secret, Secret)
    ]
    # The HEC token, the Sumo URL and both headers are there to use.
    assert len(leaks({"revealed": " ".join(revealed)})) >= 4
    outputs = {
        "repr(config)": repr(config),
        "str(config)": str(config),
        "model_dump": repr(config.model_dump()),
        "secret format": f"{config.source.token} {config.source.token!r}",
    }
    for sink_config in config.sinks:
        sink = build_sink(sink_config)
        outputs[f"sink {sink_config.name}"] = f"{sink_config!r} {sink!r} {sink!s}"
    assert leaks(outputs) == []


def errors_text(error: BaseException) -> str:
    """str and repr of an error and of every error behind it."""
    texts = []
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        texts += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    return "\n".join(texts)


def http_sinks(hec: str, sumo: str, http: str) -> list[Sink]:
    return [
        SplunkHecSink("hec", url=hec, token=Secret(HEC_TOKEN), request_timeout=5),
        SumoLogicSink("sumo", url=Secret(sumo_url(sumo)), request_timeout=5),
        HttpSink(
            "http",
            url=f"{http}/ingest",
            headers={
                "X-Api-Key": Secret(HTTP_KEY),
                "Authorization": Secret(HTTP_BEARER),
            },
            request_timeout=5,
        ),
    ]


async def failures_of(sinks: list[Sink]) -> dict[str, str]:
    """Open each sink and deliver one event; the text of each SinkError."""
    failures = {}
    for sink in sinks:
        try:
            await sink.open()
            await sink.deliver(batch_of([api_event(1)]))
        except SinkError as error:
            failures[sink.name] = errors_text(error)
        finally:
            await sink.aclose()
    return failures


@pytest.mark.anyio
@pytest.mark.parametrize("failure", ["refused", "down", "untrusted certificate"])
async def test_sink_errors_and_their_log_lines_hold_no_secret(failure: str) -> None:
    """Every HTTP sink fails (credentials refused by receivers that echo
    them, connection refused, unknown CA): each raises a SinkError, whose
    str and repr (causes included) and the log lines written meanwhile hold
    no secret."""
    stream = io.StringIO()
    configure_logging("debug", "json", stream)
    context = (
        server_context(trustme.CA()) if failure == "untrusted certificate" else None
    )
    with (
        HecDouble([HecToken("another-token")], tls=context) as hec,
        SumoDouble(["another-code"], tls=context) as sumo,
        EchoingReceiver(required_headers={"X-Api-Key": "other"}, tls=context) as http,
    ):
        urls = (hec.url, sumo.url, http.url)
        if failure == "down":
            urls = (closed_url(), closed_url(), closed_url())
        failures = await failures_of(http_sinks(*urls))
    assert sorted(failures) == ["hec", "http", "sumo"]
    if failure == "refused":
        assert "refused the" in failures["http"]
    if failure == "untrusted certificate":
        assert all("CERTIFICATE_VERIFY_FAILED" in text for text in failures.values())
    assert leaks({**failures, "log": stream.getvalue()}) == []


@pytest.mark.anyio
async def test_api_errors_hold_no_token() -> None:
    """The API client's errors (a refusal echoing the Authorization header,
    a refused connection) show no token in str or repr, causes included."""
    with FakeAuditApi([], echo_refusal=True) as api:
        for base_url in (api.base_url, closed_url() + "/api/1.0"):
            async with httpx.AsyncClient() as http:
                client = AuditLogClient(
                    http,
                    base_url=base_url,
                    workspace_gid="1111",
                    token=Secret(ASANA_TOKEN),
                )
                with pytest.raises(ApiError) as caught:
                    await client.fetch(Cursor())
            assert leaks({base_url: errors_text(caught.value)}) == []


def test_the_log_pipeline_blanks_secrets_wherever_they_are() -> None:
    """A secret inside a string value, a nested structure, an exception
    with its traceback, or the event name itself is blanked in the JSON log
    line, at every level."""
    Secret(ASANA_TOKEN)
    stream = io.StringIO()
    configure_logging("debug", "json", stream)
    log = structlog.get_logger("tests.security")
    named_after_the_secret = "event " + ASANA_TOKEN
    log.debug(named_after_the_secret, url=f"https://x/{ASANA_TOKEN}")
    log.info("nested", details={"headers": [f"Bearer {ASANA_TOKEN}"]})
    try:
        raise RuntimeError(f"failed with {ASANA_TOKEN}")
    except RuntimeError:
        log.exception("failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert "RuntimeError: failed with ***" in lines[2]
    assert leaks({"log": stream.getvalue()}) == []


@pytest.mark.anyio
async def test_a_bearer_credential_echoed_without_its_scheme_is_blanked() -> None:
    """A receiver that answers "invalid token <credential>" (the header's
    value without "Bearer ") does not get the credential into the error or
    the log line."""

    class CredentialEcho(HttpReceiver):
        def handle(self, request: Request) -> Response:
            credential = request.headers.get("authorization", "").split(" ")[-1]
            return Response.text(401, f"invalid token {credential}")

    stream = io.StringIO()
    configure_logging("debug", "json", stream)
    with CredentialEcho() as receiver:
        sink = HttpSink(
            "http",
            url=f"{receiver.url}/ingest",
            headers={"Authorization": Secret(HTTP_BEARER)},
        )
        failures = await failures_of([sink])
    assert "invalid token" in failures["http"]
    outputs = {**failures, "log": stream.getvalue()}
    assert leaks(outputs, (HTTP_BEARER_CREDENTIAL,)) == []


# A reply text is cut (HTTP sinks: 200 characters; the API: 500) before the
# known secrets are blanked out, so a secret that straddles the cut is not
# recognized and its head stays in the text.


@pytest.mark.anyio
async def test_a_secret_cut_by_the_sink_reply_limit_is_still_blanked() -> None:
    """A receiver's refusal that echoes a credential around the 200th
    character leaves no part of it in the SinkError or the log line."""

    class LateEcho(HttpReceiver):
        def handle(self, request: Request) -> Response:
            key = request.headers.get("x-api-key", "")
            return Response.text(403, f"{'p' * 180} wrong key {key}")

    stream = io.StringIO()
    configure_logging("debug", "json", stream)
    with LateEcho() as receiver:
        sink = HttpSink(
            "http",
            url=f"{receiver.url}/ingest",
            headers={"X-Api-Key": Secret(HTTP_KEY)},
        )
        failures = await failures_of([sink])
    assert "wrong key" in failures["http"]
    outputs = {**failures, "log": stream.getvalue()}
    assert leaks(outputs, (HTTP_KEY[:8],)) == []


@pytest.mark.anyio
async def test_a_token_cut_by_the_api_message_limit_is_still_blanked() -> None:
    """An API refusal that echoes the token around the 500th character of
    its message leaves no part of the token in the ApiError."""
    with FakeAuditApi([], echo_refusal=True, echo_padding=460) as api:
        async with httpx.AsyncClient() as http:
            client = AuditLogClient(
                http,
                base_url=api.base_url,
                workspace_gid="1111",
                token=Secret(ASANA_TOKEN),
            )
            with pytest.raises(ApiError) as caught:
                await client.fetch(Cursor())
    text = errors_text(caught.value)
    assert "Not Authorized: Bearer" in text
    assert leaks({"error": text}, (ASANA_TOKEN[:8],)) == []
