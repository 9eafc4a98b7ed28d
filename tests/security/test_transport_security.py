"""Transport security: TLS verified by default on every connection the
forwarder makes (the Asana API, every HTTP sink, syslog over TLS), with an
error that names the certificate problem; ``tls_verify = false`` only with a
WARNING; no ``http://`` API base URL unless allowed; and a probe listener on
loopback by default that serves three paths, to GET only, and exposes
nothing but the version and the sink names.
"""

from __future__ import annotations

import ssl
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import trustme
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from forwarder import __version__
from forwarder.cli import main
from forwarder.config import Config, ServerConfig, parse_config
from forwarder.daemon import Daemon
from forwarder.errors import ConfigError, SinkError
from forwarder.health import Health
from forwarder.metrics import API_STATUSES, Metrics
from forwarder.secrets import Secret
from forwarder.server import ProbeServer
from forwarder.simulator import AuditLogSimulator, SimulatorSettings
from forwarder.sinks.base import Sink
from forwarder.sinks.http import HttpSink, HttpSinkConfig
from forwarder.sinks.splunk_hec import SplunkHecSink, SplunkHecSinkConfig
from forwarder.sinks.sumo_logic import SumoLogicSink, SumoLogicSinkConfig
from forwarder.sinks.syslog import SyslogSink, SyslogSinkConfig
from tests.daemon_process import PROJECT, write_config
from tests.doubles import HecDouble, HecToken, HttpReceiver, SumoDouble, batch_of
from tests.doubles.http_receiver import DoubleServer
from tests.memory_sink import MemorySink
from tests.security import (
    FakeAuditApi,
    TcpCollector,
    api_event,
    server_context,
    write_ca,
)

HEC_TOKEN = "transport-hec-token-5ecre7"
API_TOKEN = "transport-asana-token-5ecre7"
HTTP_SINK_KINDS = ("splunk_hec", "sumo_logic", "http")
PROBE_PATHS = ("/metrics", "/healthz", "/readyz")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    """The CA of the receivers' certificates; nothing trusts it by default."""
    return trustme.CA()


@pytest.fixture
def ca_file(authority: trustme.CA, tmp_path: Path) -> Path:
    return write_ca(authority, tmp_path / "ca.pem")


async def eventually(condition: Any, what: str, within: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``within``
    seconds."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await anyio.sleep(0.02)


# -- defaults ---------------------------------------------------------------------


def test_tls_verification_is_on_by_default_and_cannot_be_off_for_the_api() -> None:
    """Every sink section with TLS defaults to tls_verify = true, and the
    source has no key that turns verification off (a misspelt or invented
    key is an error, not an ignored setting)."""
    for section in (
        SplunkHecSinkConfig,
        SumoLogicSinkConfig,
        HttpSinkConfig,
        SyslogSinkConfig,
    ):
        assert section.model_fields["tls_verify"].default is True, section
    document = minimal_document()
    document["source"]["tls_verify"] = False
    with pytest.raises(ConfigError) as caught:
        parse_config(document)
    assert caught.value.problems == [
        ("source.tls_verify", "unknown key (misspelt, or not valid in this section)")
    ]


def minimal_document(**source: Any) -> dict[str, Any]:
    return {
        "source": {"workspace_gid": "1111", "token": API_TOKEN, **source},
        "sinks": [{"name": "out", "type": "stdout"}],
    }


# -- the Asana API -------------------------------------------------------------------


def api_config(base_url: str, state: Path) -> Config:
    return parse_config(
        {
            "source": {
                "workspace_gid": "1111",
                "token": API_TOKEN,
                "base_url": base_url,
                "poll_interval": "50ms",
                # One reader: a test that cancels the daemon once the first
                # refusal is logged would otherwise cut other readers' TLS
                # handshakes short, which leaves their sockets unclosed
                # (a ResourceWarning in whichever test runs next).
                "backfill_concurrency": 1,
            },
            "state": {"directory": str(state)},
            "server": {"listen": "127.0.0.1:0"},
            "sinks": [{"name": "memory", "type": "stdout"}],
        }
    )


@pytest.fixture
def tls_api(authority: trustme.CA) -> Iterator[FakeAuditApi]:
    with FakeAuditApi(
        [api_event(1), api_event(2)], tls=server_context(authority)
    ) as api:
        yield api
    assert not api.errors


@pytest.mark.anyio
async def test_the_api_client_refuses_an_untrusted_certificate(
    tls_api: FakeAuditApi, tmp_path: Path
) -> None:
    """The daemon's API client verifies the server's certificate: one from
    an unknown CA fails every request before anything is sent (the token
    included); the failure is logged at ERROR with the certificate problem
    named, and the daemon turns unready, as for a refused token."""
    sink = MemorySink()
    daemon = Daemon(
        api_config(tls_api.base_url, tmp_path / "state"),
        registry=CollectorRegistry(),
        sink_factory=lambda _config, _metrics: sink,
    )
    with capture_logs() as logs:
        async with anyio.create_task_group() as group:
            group.start_soon(partial(daemon.run, serve_probes=False))

            def refused() -> bool:
                return any(e["event"] == "api_access_refused" for e in logs)

            await eventually(refused, "a logged refusal")
            unready = daemon.health.ready()
            group.cancel_scope.cancel()
    [refusal, *_] = [e for e in logs if e["event"] == "api_access_refused"]
    assert refusal["log_level"] == "error"
    assert "certificate verification failed" in refusal["error"]
    assert "unable to get local issuer certificate" in refusal["error"]
    assert unready[0] is False
    assert "certificate" in unready[1]
    assert tls_api.requests_seen == 0
    assert sink.documents == []


@pytest.mark.anyio
async def test_the_api_client_trusts_a_ca_named_by_ssl_cert_file(
    tls_api: FakeAuditApi,
    ca_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the private CA named by SSL_CERT_FILE, the same server is
    trusted and its events delivered."""
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    sink = MemorySink()
    daemon = Daemon(
        api_config(tls_api.base_url, tmp_path / "state"),
        once=True,
        registry=CollectorRegistry(),
        sink_factory=lambda _config, _metrics: sink,
    )
    with anyio.fail_after(20):
        await daemon.run(serve_probes=False)
    assert sink.gids == [api_event(1)["gid"], api_event(2)["gid"]]


@pytest.mark.anyio
async def test_the_api_client_trusts_the_source_ca_file(
    tls_api: FakeAuditApi, ca_file: Path, tmp_path: Path
) -> None:
    """source.ca_file names a CA to trust for the API alone."""
    sink = MemorySink()
    document = api_config(tls_api.base_url, tmp_path / "state").model_dump()
    document["source"]["token"] = API_TOKEN
    document["source"]["ca_file"] = str(ca_file)
    daemon = Daemon(
        parse_config(document),
        once=True,
        registry=CollectorRegistry(),
        sink_factory=lambda _config, _metrics: sink,
    )
    with anyio.fail_after(20):
        await daemon.run(serve_probes=False)
    assert sink.gids == [api_event(1)["gid"], api_event(2)["gid"]]


@pytest.mark.parametrize("scheme", ["http", "HTTP", "ftp", "file"])
def test_a_base_url_that_is_not_https_is_refused(scheme: str) -> None:
    """A base_url that is not https:// is a configuration error that says
    why: a scheme other than http on the key itself, plain http (which
    allow_insecure_http would permit) on the source section."""
    url = f"{scheme}://app.asana.example/api/1.0"
    with pytest.raises(ConfigError) as caught:
        parse_config(minimal_document(base_url=url))
    [(key, problem)] = caught.value.problems
    if scheme.lower() == "http":
        assert key == "source"
        assert "base_url" in problem
    else:
        assert key == "source.base_url"
        assert "https://" in problem


def test_http_base_url_needs_allow_insecure_http(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-config refuses an http:// base_url (exit 2, the message names
    the source, base_url and the setting that allows it), and accepts it
    once allow_insecure_http = true."""
    document = minimal_document(base_url="http://127.0.0.1:8080/api/1.0")
    path = write_config(tmp_path / "insecure.toml", dict(document))
    assert main(["check-config", "--config", str(path)]) == 2
    error = capsys.readouterr().err
    assert "source: base_url is http://, which would send the token in clear" in error
    assert "allow_insecure_http" in error
    document = minimal_document(
        base_url="http://127.0.0.1:8080/api/1.0", allow_insecure_http=True
    )
    path = write_config(tmp_path / "allowed.toml", document)
    assert main(["check-config", "--config", str(path)]) == 0


# -- HTTP sinks ------------------------------------------------------------------------


@dataclass
class Receiver:
    """A TLS receiver double and how to build a sink for it."""

    kind: str
    double: DoubleServer

    def sink(self, **tls: Any) -> Sink:
        double = self.double
        if isinstance(double, HecDouble):
            return SplunkHecSink("hec", url=double.url, token=Secret(HEC_TOKEN), **tls)
        if isinstance(double, SumoDouble):
            return SumoLogicSink("sumo", url=Secret(double.source_url), **tls)
        assert isinstance(double, HttpReceiver)
        return HttpSink("http", url=f"{double.url}{double.path}", **tls)

    def delivered(self) -> int:
        double = self.double
        if isinstance(double, HecDouble):
            return len(double.indexed())
        if isinstance(double, SumoDouble):
            return len(double.messages())
        assert isinstance(double, HttpReceiver)
        return len(double.documents)


def receiver_double(kind: str, context: ssl.SSLContext) -> DoubleServer:
    if kind == "splunk_hec":
        return HecDouble([HecToken(HEC_TOKEN)], tls=context)
    if kind == "sumo_logic":
        return SumoDouble(tls=context)
    return HttpReceiver(tls=context)


@pytest.fixture(params=HTTP_SINK_KINDS)
def receiver(
    request: pytest.FixtureRequest, authority: trustme.CA
) -> Iterator[Receiver]:
    with receiver_double(request.param, server_context(authority)) as double:
        yield Receiver(request.param, double)
    assert not double.errors


async def deliver_one(sink: Sink) -> None:
    try:
        await sink.open()
        await sink.deliver(batch_of([api_event(1)]))
    finally:
        await sink.aclose()


@pytest.mark.anyio
async def test_http_sinks_refuse_an_untrusted_certificate(receiver: Receiver) -> None:
    """Without ca_file, a receiver whose CA is unknown gets nothing: the
    sink raises a SinkError that names the certificate problem."""
    with pytest.raises(SinkError) as caught:
        await deliver_one(receiver.sink())
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert receiver.delivered() == 0


@pytest.mark.anyio
async def test_http_sinks_trust_the_configured_ca_file(
    receiver: Receiver, ca_file: Path
) -> None:
    """With the receiver's CA as ca_file the event is delivered, and no
    warning is logged."""
    with capture_logs() as logs:
        await deliver_one(receiver.sink(ca_file=ca_file))
    assert receiver.delivered() == 1
    assert [e for e in logs if e["log_level"] == "warning"] == []


@pytest.mark.anyio
async def test_http_sinks_without_verification_warn(receiver: Receiver) -> None:
    """tls_verify = false delivers to the untrusted receiver and logs a
    WARNING that says what is at risk."""
    with capture_logs() as logs:
        await deliver_one(receiver.sink(tls_verify=False))
    assert receiver.delivered() == 1
    [warning] = [e for e in logs if e["event"] == "sink_tls_verify_disabled"]
    assert warning["log_level"] == "warning"
    assert "consequence" in warning


@pytest.mark.anyio
async def test_http_sinks_check_the_host_name(
    ca_file: Path, authority: trustme.CA
) -> None:
    """A certificate from the trusted CA but for another name is refused:
    verification checks the host name, not only the chain."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("siem.example.com").configure_cert(context)
    with HttpReceiver(tls=context) as double:
        sink = HttpSink("http", url=f"{double.url}/ingest", ca_file=ca_file)
        with pytest.raises(SinkError, match="CERTIFICATE_VERIFY_FAILED"):
            await deliver_one(sink)
        assert double.documents == []


# -- syslog over TLS ------------------------------------------------------------------


def syslog_sink(port: int, **tls: Any) -> SyslogSink:
    return SyslogSink(
        "syslog", transport="tls", host="127.0.0.1", port=port, connect_timeout=5, **tls
    )


@pytest.fixture
def tls_collector(authority: trustme.CA) -> Iterator[TcpCollector]:
    with TcpCollector(tls=server_context(authority)) as collector:
        yield collector


@pytest.mark.anyio
async def test_syslog_tls_refuses_an_untrusted_certificate(
    tls_collector: TcpCollector,
) -> None:
    """tls:// without ca_file: the handshake fails with a SinkError naming
    the certificate problem, and not a byte of an event is sent."""
    with pytest.raises(SinkError) as caught:
        await deliver_one(syslog_sink(tls_collector.port))
    message = str(caught.value)
    assert (
        "certificate verify failed: unable to get local issuer certificate" in message
    )
    assert tls_collector.data == b""


@pytest.mark.anyio
async def test_syslog_tls_trusts_the_ca_file_and_checks_the_name(
    tls_collector: TcpCollector, ca_file: Path
) -> None:
    """With ca_file the event arrives over TLS; with the same CA but a
    server name the certificate does not carry, the handshake fails."""
    await deliver_one(syslog_sink(tls_collector.port, ca_file=ca_file))
    gid = api_event(1)["gid"].encode()
    await eventually(lambda: gid in tls_collector.data, "the event at the receiver")
    misnamed = syslog_sink(
        tls_collector.port, ca_file=ca_file, tls_server_name="siem.example.com"
    )
    with pytest.raises(SinkError, match="certificate verify failed"):
        await deliver_one(misnamed)


@pytest.mark.anyio
async def test_syslog_tls_without_verification_warns(
    tls_collector: TcpCollector,
) -> None:
    """tls_verify = false connects to the untrusted receiver, with a
    WARNING at open."""
    with capture_logs() as logs:
        await deliver_one(syslog_sink(tls_collector.port, tls_verify=False))
    gid = api_event(1)["gid"].encode()
    await eventually(lambda: gid in tls_collector.data, "the event at the receiver")
    warnings = [e for e in logs if e["event"] == "syslog_tls_verification_disabled"]
    assert [e["log_level"] for e in warnings] == ["warning"]


# -- the probe listener ------------------------------------------------------------


def test_the_probe_listener_is_on_loopback_by_default() -> None:
    """Outside a container nothing else on the network reaches /metrics:
    the default listen address, and the example configuration's, is
    127.0.0.1, and the listener binds exactly that."""
    assert ServerConfig().listen == "127.0.0.1:9464"
    assert parse_config(minimal_document()).server.host == "127.0.0.1"
    example = tomllib.loads((PROJECT / "config" / "forwarder.example.toml").read_text())
    assert example["server"]["listen"].startswith("127.0.0.1:")
    server = ProbeServer(ServerConfig().host, 0, Metrics(), Health(poll_interval=1))
    server.start()
    try:
        assert server.address.startswith("127.0.0.1:")
    finally:
        server.stop()


@pytest.fixture
def probe_server() -> Iterator[ProbeServer]:
    server = ProbeServer("127.0.0.1", 0, Metrics(), Health(poll_interval=1)).start()
    yield server
    server.stop()


@pytest.mark.parametrize(
    "method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]
)
def test_the_probe_listener_answers_get_only(
    probe_server: ProbeServer, method: str
) -> None:
    """Any method but GET, on any of the three paths, is answered 501."""
    with httpx.Client(base_url=f"http://{probe_server.address}") as client:
        for path in PROBE_PATHS:
            assert client.request(method, path).status_code == 501


def test_the_probe_listener_serves_three_paths_only(probe_server: ProbeServer) -> None:
    """GET answers /metrics, /healthz and /readyz (not ready: no page yet);
    every other path, look-alikes included, is 404."""
    with httpx.Client(base_url=f"http://{probe_server.address}") as client:
        statuses = [client.get(path).status_code for path in PROBE_PATHS]
        assert statuses == [200, 200, 503]
        for path in ("/", "/metrics/", "/debug", "/config", "/state", "/..%2fstate"):
            assert client.get(path).status_code == 404, path


def metrics_config(tmp_path: Path, simulator: AuditLogSimulator, **urls: str) -> Config:
    delivery = {"batch_max_wait": "50ms", "retry_max_delay": "200ms"}
    return parse_config(
        {
            "source": {
                "workspace_gid": simulator.settings.workspace_gid,
                "token": API_TOKEN,
                "base_url": simulator.base_url,
                "allow_insecure_http": True,
                "poll_interval": "50ms",
            },
            "state": {"directory": str(tmp_path / "state-directory")},
            "server": {"listen": "127.0.0.1:0"},
            "sinks": [
                {
                    "name": "archive",
                    "type": "file",
                    "path": str(tmp_path / "archive-output.jsonl"),
                    "delivery": delivery,
                },
                {
                    "name": "splunk",
                    "type": "splunk_hec",
                    "url": urls["hec"],
                    "token": HEC_TOKEN,
                    "index": "index-name-7e57",
                    "sourcetype": "sourcetype-7e57",
                    "delivery": delivery,
                },
                {
                    "name": "sumo",
                    "type": "sumo_logic",
                    "url": urls["sumo"],
                    "category": "category-7e57",
                    "delivery": delivery,
                },
                {
                    "name": "vector",
                    "type": "http",
                    "url": urls["http"],
                    "headers": {"X-Header-7e57": "header-value-7e57"},
                    "delivery": delivery,
                },
                {
                    "name": "qradar",
                    "type": "syslog",
                    "address": urls["syslog"],
                    "app_name": "app-name-7e57",
                    "delivery": delivery,
                },
            ],
        }
    )


@pytest.mark.anyio
async def test_metrics_expose_the_version_and_sink_names_only(tmp_path: Path) -> None:
    """After a run with every kind of receiver, /metrics has no label but
    sink, status, version and le, its sink values are the configured sink
    names, and no configuration value (token, URL, host, path, index,
    header, workspace) appears anywhere in it."""
    settings = SimulatorSettings(
        token=API_TOKEN, backlog=5, workspace_gid="98765432101"
    )
    with (
        AuditLogSimulator(settings) as simulator,
        HecDouble([HecToken(HEC_TOKEN)]) as hec,
        SumoDouble() as sumo,
        HttpReceiver(required_headers={"X-Header-7e57": "header-value-7e57"}) as http,
        TcpCollector() as syslog,
    ):
        urls = {
            "hec": hec.url,
            "sumo": sumo.source_url,
            "http": f"{http.url}{http.path}",
            "syslog": f"tcp://127.0.0.1:{syslog.port}",
        }
        config = metrics_config(tmp_path, simulator, **urls)
        daemon = Daemon(config, once=True, registry=CollectorRegistry())
        with anyio.fail_after(30):
            await daemon.run(serve_probes=False)
        assert len(hec.indexed()) == 5
        server = ProbeServer("127.0.0.1", 0, daemon.metrics, daemon.health).start()
        try:
            async with httpx.AsyncClient() as client:
                text = (await client.get(f"http://{server.address}/metrics")).text
        finally:
            server.stop()
        forbidden = [
            API_TOKEN,
            HEC_TOKEN,
            sumo.source_url.rsplit("/", 1)[1],
            simulator.base_url,
            *(url.split("://", 1)[1].split("/", 1)[0] for url in urls.values()),
            str(tmp_path),
            "98765432101",
            "7e57",
        ]
    assert [value for value in forbidden if value in text] == []
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for name, value in sample.labels.items():
                labels.setdefault(name, set()).add(value)
    assert set(labels) <= {"sink", "status", "version", "le"}
    assert labels["sink"] == {"archive", "splunk", "sumo", "vector", "qradar"}
    assert labels["version"] == {__version__}
    assert labels["status"] <= set(API_STATUSES)
