"""Real syslog receivers for tests: rsyslogd and syslog-ng, run in a test's
directory on 127.0.0.1 ephemeral ports, each writing what it parsed of every
message as one JSON line, so that tests assert on the receiver's reading and
not on what the sink meant to send.

rsyslogd is found at /usr/sbin/rsyslogd (Debian package rsyslog, with
rsyslog-gnutls for TLS). syslog-ng conflicts with rsyslog as a Debian
package, so it is unpacked without installing (``apt-get download
syslog-ng-core`` then ``dpkg -x``) into the directory named by
SYSLOG_NG_ROOT, /opt/syslog-ng by default. A missing receiver skips the
test, unless FORWARDER_REQUIRE_RECEIVERS=1 (as in CI) makes it a failure.

Every record, from either receiver, has the keys ``pri``, ``timestamp``,
``hostname``, ``app_name``, ``procid``, ``msgid``, ``sd`` (the raw
structured data), ``sd_params`` (the receiver's own parse of it: SD-ID ->
PARAM-NAME -> value), ``msg`` and ``input`` (which listener took it).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn

import anyio
import pytest
import trustme

REQUIRE_RECEIVERS_ENV = "FORWARDER_REQUIRE_RECEIVERS"
SYSLOG_NG_ROOT_ENV = "SYSLOG_NG_ROOT"
DEFAULT_SYSLOG_NG_ROOT = Path("/opt/syslog-ng")
RSYSLOGD = Path("/usr/sbin/rsyslogd")
# Messages from this app name only prove a UDP listener is up; records()
# leaves them out.
PROBE_APP = "receiver-probe"
PROBE = f"<14>1 - - {PROBE_APP} - - - ready".encode()
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
# Large enough for the largest event any test sends.
RECEIVER_MAX_MESSAGE_BYTES = 1_000_000


def unavailable(message: str) -> NoReturn:
    """Skip for want of a receiver, or fail where receivers are required."""
    if os.environ.get(REQUIRE_RECEIVERS_ENV) == "1":
        pytest.fail(f"{message} ({REQUIRE_RECEIVERS_ENV}=1)", pytrace=False)
    pytest.skip(message)


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port free on 127.0.0.1 now (bound to 0, read, released)."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files of one test CA: a server certificate for 127.0.0.1 and
    localhost, and a client certificate for mutual TLS."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls_files(directory: Path, ca: trustme.CA | None = None) -> TlsFiles:
    directory.mkdir(parents=True, exist_ok=True)
    ca = ca or trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("forwarder@example.com")
    files = TlsFiles(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )
    ca.cert_pem.write_to_path(files.ca)
    server.cert_chain_pems[0].write_to_path(files.server_cert)
    for pem in server.cert_chain_pems[1:]:
        pem.write_to_path(files.server_cert, append=True)
    server.private_key_pem.write_to_path(files.server_key)
    client.cert_chain_pems[0].write_to_path(files.client_cert)
    client.private_key_pem.write_to_path(files.client_key)
    return files


@dataclass
class Receiver:
    """A receiver process and the JSON lines it writes to ``output``."""

    name: str
    argv: list[str]
    directory: Path
    output: Path
    ports: dict[str, int]
    udp_ports: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    _process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.directory / f"{self.name}.log"

    def start(self) -> None:
        """Start the process and return once every listener takes messages."""
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            cwd=self.directory,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM, wait, SIGKILL if it will not go."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        waiting = set(self.ports)
        while waiting:
            self._check_running()
            for key in sorted(waiting):
                if self._ready(key):
                    waiting.discard(key)
            if waiting and time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.name} did not open {sorted(waiting)} within "
                    f"{START_TIMEOUT}s:\n{self.log_tail()}"
                )
            if waiting:
                time.sleep(0.02)

    def _check_running(self) -> None:
        assert self._process is not None
        if self._process.poll() is None:
            return
        tail = self.log_tail()
        if "error while loading shared libraries" in tail:
            unavailable(f"{self.name} cannot start: {tail.strip()}")
        raise RuntimeError(
            f"{self.name} exited with {self._process.returncode}:\n{tail}"
        )

    def _ready(self, key: str) -> bool:
        port = self.ports[key]
        if key in self.udp_ports:
            # UDP has no handshake: a probe must come out the other end.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.sendto(PROBE, ("127.0.0.1", port))
            return any(r["app_name"] == PROBE_APP for r in self._all_records())
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        return False

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def _all_records(self) -> list[dict[str, Any]]:
        if not self.output.exists():
            return []
        records = []
        # The receiver may be in the middle of writing the last line: only
        # lines it has ended count.
        complete = self.output.read_bytes().split(b"\n")[:-1]
        for line in complete:
            if line.strip():
                records.append(_normalized(json.loads(line.decode("utf-8"))))
        return records

    def records(self) -> list[dict[str, Any]]:
        """What the receiver wrote so far, probes left out."""
        return [r for r in self._all_records() if r["app_name"] != PROBE_APP]

    async def wait_for(self, count: int, within: float = 10.0) -> list[dict[str, Any]]:
        """The records once there are at least ``count`` (files are written
        asynchronously), or an AssertionError at the deadline."""
        deadline = time.monotonic() + within
        while True:
            records = self.records()
            if len(records) >= count:
                return records
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name} wrote {len(records)} of {count} records within "
                    f"{within}s:\n{self.log_tail()}"
                )
            await anyio.sleep(0.02)


def _normalized(record: dict[str, Any]) -> dict[str, Any]:
    """One shape for both receivers' records."""
    params = record.pop("sd_params", None)
    if "_SDATA" in record:
        params = record.pop("_SDATA")
    if isinstance(params, str):
        params = json.loads(params) if params.strip() else {}
    record["sd_params"] = params or {}
    for key in ("pri", "hostname", "app_name", "procid", "msgid", "sd", "msg"):
        record.setdefault(key, "")
    return record


# -- rsyslog -------------------------------------------------------------------

RSYSLOG_TEMPLATE = """
template(name="parsed" type="list" option.jsonf="on") {
  property(name="pri" format="jsonf" outname="pri")
  property(name="timereported" dateFormat="rfc3339" format="jsonf"
           outname="timestamp")
  property(name="hostname" format="jsonf" outname="hostname")
  property(name="app-name" format="jsonf" outname="app_name")
  property(name="procid" format="jsonf" outname="procid")
  property(name="msgid" format="jsonf" outname="msgid")
  property(name="structured-data" format="jsonf" outname="sd")
  property(name="msg" format="jsonf" outname="msg")
  property(name="inputname" format="jsonf" outname="input")
  property(name="$!rfc5424-sd" format="jsonf" outname="sd_params")
}
"""


@contextlib.contextmanager
def rsyslog_receiver(
    directory: Path,
    *,
    udp: bool = True,
    tcp: bool = True,
    tls: TlsFiles | None = None,
    mutual_tls: bool = False,
) -> Iterator[Receiver]:
    """rsyslogd with imudp (port "udp"), imtcp (port "tcp") and imtcp over
    gtls (port "tls", client certificates required when ``mutual_tls``)."""
    if not RSYSLOGD.is_file():
        unavailable(f"{RSYSLOGD} not found; apt-get install rsyslog rsyslog-gnutls")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "work").mkdir(exist_ok=True)
    ports: dict[str, int] = {}
    if udp:
        ports["udp"] = free_port(socket.SOCK_DGRAM)
    if tcp:
        ports["tcp"] = free_port()
    if tls is not None:
        ports["tls"] = free_port()
    output = directory / "received.jsonl"
    conf = directory / "rsyslog.conf"
    conf.write_text(_rsyslog_config(directory, output, ports, tls, mutual_tls))
    receiver = Receiver(
        name="rsyslogd",
        argv=[str(RSYSLOGD), "-n", "-f", str(conf), "-i", str(directory / "pid")],
        directory=directory,
        output=output,
        ports=ports,
        udp_ports=("udp",),
    )
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


def _rsyslog_config(
    directory: Path,
    output: Path,
    ports: dict[str, int],
    tls: TlsFiles | None,
    mutual_tls: bool,
) -> str:
    size = RECEIVER_MAX_MESSAGE_BYTES
    lines = [
        f'global(workDirectory="{directory / "work"}" maxMessageSize="{size}"',
        '       net.enableDNS="off"',
    ]
    if tls is not None:
        lines += [
            f'       defaultNetstreamDriverCAFile="{tls.ca}"',
            f'       defaultNetstreamDriverCertFile="{tls.server_cert}"',
            f'       defaultNetstreamDriverKeyFile="{tls.server_key}"',
        ]
    lines[-1] += ")"
    lines += [
        'module(load="imudp")',
        f'module(load="imtcp" maxFrameSize="{size}")',
        'module(load="mmpstrucdata")',
        RSYSLOG_TEMPLATE,
        'ruleset(name="remote") {',
        '  action(type="mmpstrucdata" sd_name.lowercase="off")',
        f'  action(type="omfile" file="{output}" template="parsed")',
        "}",
    ]
    common = 'address="127.0.0.1" ruleset="remote"'
    if "udp" in ports:
        lines.append(f'input(type="imudp" {common} port="{ports["udp"]}")')
    if "tcp" in ports:
        lines.append(f'input(type="imtcp" {common} port="{ports["tcp"]}")')
    if "tls" in ports:
        mode = "x509/certvalid" if mutual_tls else "anon"
        lines.append(
            f'input(type="imtcp" {common} port="{ports["tls"]}" '
            f'streamDriver.name="gtls" streamDriver.mode="1" '
            f'streamDriver.authMode="{mode}")'
        )
    return "\n".join(lines) + "\n"


# -- syslog-ng -----------------------------------------------------------------

SYSLOG_NG_TEMPLATE = (
    "$(format-json --key .SDATA.* pri=$PRI timestamp=$S_ISODATE hostname=$HOST "
    "app_name=$PROGRAM procid=$PID msgid=$MSGID sd=$SDATA msg=$MESSAGE "
    "input=$SOURCE)\\n"
)


def syslog_ng_root() -> Path:
    return Path(os.environ.get(SYSLOG_NG_ROOT_ENV) or DEFAULT_SYSLOG_NG_ROOT)


@contextlib.contextmanager
def syslog_ng_receiver(
    directory: Path, *, tls: TlsFiles | None = None, mutual_tls: bool = False
) -> Iterator[Receiver]:
    """syslog-ng with a syslog() source (RFC 5424, octet counting) on port
    "syslog_tcp" and, with ``tls``, "syslog_tls"; and a network() source
    (BSD syslog, one message per line) on port "bsd_tcp"."""
    root = syslog_ng_root()
    binary = root / "usr/sbin/syslog-ng"
    modules = sorted(root.glob("usr/lib/syslog-ng/*/libafsocket.so"))
    if not binary.is_file() or not modules:
        unavailable(
            f"syslog-ng not found under {root} (set {SYSLOG_NG_ROOT_ENV}); "
            "apt-get download syslog-ng-core and dpkg -x it there"
        )
    directory.mkdir(parents=True, exist_ok=True)
    ports = {"syslog_tcp": free_port(), "bsd_tcp": free_port()}
    if tls is not None:
        ports["syslog_tls"] = free_port()
    output = directory / "received.jsonl"
    conf = directory / "syslog-ng.conf"
    conf.write_text(_syslog_ng_config(output, ports, tls, mutual_tls))
    # A control socket path must fit in sun_path (108 bytes): pytest's
    # directories can be longer.
    control = Path(tempfile.mkdtemp(prefix="sng-"))
    libraries = [root / "usr/lib/syslog-ng", root / "usr/lib/x86_64-linux-gnu"]
    receiver = Receiver(
        name="syslog-ng",
        argv=[
            str(binary),
            "-F",
            "--no-caps",
            "-f",
            str(conf),
            "-R",
            str(directory / "persist"),
            "-p",
            str(directory / "pid"),
            "-c",
            str(control / "ctl"),
            f"--module-path={modules[0].parent}",
        ],
        directory=directory,
        output=output,
        ports=ports,
        env={
            "LD_LIBRARY_PATH": ":".join(str(p) for p in libraries if p.is_dir()),
            "TZ": "UTC",
        },
    )
    try:
        receiver.start()
        try:
            yield receiver
        finally:
            receiver.stop()
    finally:
        shutil.rmtree(control, ignore_errors=True)


def _syslog_ng_config(
    output: Path, ports: dict[str, int], tls: TlsFiles | None, mutual_tls: bool
) -> str:
    size = RECEIVER_MAX_MESSAGE_BYTES
    listen = 'ip("127.0.0.1")'
    sources = {
        "syslog_tcp": f"syslog({listen} port({ports['syslog_tcp']}) "
        f'transport("tcp") log-msg-size({size}))',
        "bsd_tcp": f'network({listen} port({ports["bsd_tcp"]}) transport("tcp") '
        f"log-msg-size({size}))",
    }
    if tls is not None:
        verify = "required-trusted" if mutual_tls else "optional-untrusted"
        sources["syslog_tls"] = (
            f'syslog({listen} port({ports["syslog_tls"]}) transport("tls") '
            f'tls(key-file("{tls.server_key}") cert-file("{tls.server_cert}") '
            f'ca-file("{tls.ca}") peer-verify({verify})) log-msg-size({size}))'
        )
    lines = [
        "@version: 3.38",
        "options { stats-freq(0); keep-hostname(yes); chain-hostnames(no);",
        f"  use-dns(no); dns-cache(no); frac-digits(3); log-msg-size({size}); }};",
    ]
    for name, driver in sources.items():
        lines.append(f"source {name} {{ {driver}; }};")
    lines.append(
        f'destination parsed {{ file("{output}" template("{SYSLOG_NG_TEMPLATE}")); }};'
    )
    uses = " ".join(f"source({name});" for name in sources)
    lines.append(f"log {{ {uses} destination(parsed); }};")
    return "\n".join(lines) + "\n"
