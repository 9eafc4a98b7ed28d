"""``syslog``: RFC 5424 or RFC 3164 messages over UDP, TCP or TLS, carrying
the event as JSON, CEF or LEEF.

Syslog has no acknowledgement above the transport, unlike HEC: a batch
counts as delivered once every byte of it was handed to a connected stream
(TCP, TLS) or every datagram was sent (UDP, which may still lose some). A
connection that breaks in the middle of a batch fails the whole batch, and
the pipeline sends it again: duplicates are bounded by one batch.

Two checks narrow the window where a batch goes into a dead connection and
looks delivered. Before each batch the sink peeks at the socket: a syslog
receiver never sends anything, so an end of stream or bytes waiting (a TLS
alert, close_notify) mean it hung up, and the sink reconnects first. After a
TLS handshake it listens briefly: with TLS 1.3 a receiver that refuses the
client certificate only says so after the client finished its handshake.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import anyio.abc
import structlog
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSStream
from pydantic import BeforeValidator, Field, field_validator, model_validator

from forwarder.config_types import Duration, SinkBaseConfig
from forwarder.errors import SinkError
from forwarder.formats.syslog_message import (
    FACILITIES,
    MIN_MESSAGE_BYTES,
    Framing,
    MessageFormat,
    Syntax,
    SyslogMessage,
    frame,
    parse_facility,
)
from forwarder.sinks.base import Batch, DeliveryReport

log = structlog.get_logger("forwarder.sinks.syslog")

Transport = Literal["udp", "tcp", "tls"]
Payload = Literal["json", "cef", "leef"]

DEFAULT_MAX_BYTES: dict[Transport, int] = {"udp": 2048, "tcp": 65536, "tls": 65536}
# RFC 3164 section 4.1: a BSD syslog packet is at most 1024 bytes.
RFC3164_MAX_BYTES = 1024
UDP_MAX_BYTES = 65507
STREAM_MAX_BYTES = 16 * 1024 * 1024
# How long to listen after a TLS handshake for a refusal of our certificate.
TLS_SETTLE_SECONDS = 0.3
# Framed messages are written in chunks of about this size.
WRITE_CHUNK_BYTES = 256 * 1024

_ADDRESS = re.compile(
    r"^(?P<scheme>[a-z]+)://(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[^\s:/\[\]@]+))"
    r":(?P<port>\d{1,5})$"
)
_TRANSPORTS: dict[str, Transport] = {"udp": "udp", "tcp": "tcp", "tls": "tls"}
_TLS_KEYS = ("ca_file", "cert_file", "key_file", "tls_verify", "tls_server_name")


def parse_address(text: str) -> tuple[Transport, str, int]:
    """(transport, host, port) from "udp://host:port", "tcp://..." or
    "tls://..."; IPv6 hosts in brackets."""
    match = _ADDRESS.match(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a syslog address; write udp://HOST:PORT, "
            "tcp://HOST:PORT or tls://HOST:PORT"
        )
    scheme, port = match["scheme"], int(match["port"])
    transport = _TRANSPORTS.get(scheme)
    if transport is None:
        raise ValueError(f"unknown transport {scheme!r}; expected udp, tcp or tls")
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range; expected 1 to 65535")
    return transport, match["ipv6"] or match["host"], port


def default_max_bytes(transport: Transport, syntax: Syntax) -> int:
    if syntax == "rfc3164":
        return RFC3164_MAX_BYTES
    return DEFAULT_MAX_BYTES[transport]


class SyslogSinkConfig(SinkBaseConfig):
    type: Literal["syslog"]
    address: str
    syntax: Syntax = "rfc5424"
    payload: Payload = "json"
    framing: Framing | None = None
    # local0: the local-use facilities let a relay route these events apart
    # from the relay host's own; "auth" would land them in its auth.log.
    facility: Annotated[int, BeforeValidator(parse_facility)] = FACILITIES["local0"]
    app_name: Annotated[str, Field(pattern=r"^[!-~]{1,48}$")] = "asana-audit"
    hostname: Annotated[
        str, Field(pattern=r"^[!-~]{1,255}$", default_factory=socket.gethostname)
    ]
    max_message_bytes: (
        Annotated[int, Field(ge=MIN_MESSAGE_BYTES, le=STREAM_MAX_BYTES)] | None
    ) = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_verify: bool = True
    tls_server_name: str | None = None
    connect_timeout: Annotated[Duration, Field(gt=0)] = 10.0
    write_timeout: Annotated[Duration, Field(gt=0)] = 30.0

    @field_validator("address")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        parse_address(value)
        return value.strip()

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _existing_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file not found: {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SyslogSinkConfig:
        transport = self.transport
        tls_keys = [key for key in _TLS_KEYS if key in self.model_fields_set]
        if transport != "tls" and tls_keys:
            raise ValueError(
                f"{', '.join(tls_keys)}: TLS settings, but the address is "
                f"{transport}://; use tls://HOST:PORT for TLS"
            )
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file (the client certificate)")
        if transport == "udp" and self.framing is not None:
            raise ValueError("framing only applies to tcp:// and tls://")
        if transport == "udp" and self.message_limit > UDP_MAX_BYTES:
            raise ValueError(f"max_message_bytes over udp is at most {UDP_MAX_BYTES}")
        return self

    @property
    def transport(self) -> Transport:
        return parse_address(self.address)[0]

    @property
    def host(self) -> str:
        return parse_address(self.address)[1]

    @property
    def port(self) -> int:
        return parse_address(self.address)[2]

    @property
    def stream_framing(self) -> Framing:
        """RFC 6587 octet counting unless set: it survives newlines. BSD
        syslog receivers expect one message per line, so rfc3164 gets LF."""
        if self.framing is not None:
            return self.framing
        return "lf" if self.syntax == "rfc3164" else "octet-counting"

    @property
    def message_limit(self) -> int:
        if self.max_message_bytes is not None:
            return self.max_message_bytes
        return default_max_bytes(self.transport, self.syntax)

    @property
    def render_format(self) -> str:
        return self.payload if self.payload in ("cef", "leef") else self.format


class SyslogSink:
    def __init__(
        self,
        name: str,
        *,
        transport: Transport,
        host: str,
        port: int,
        syntax: Syntax = "rfc5424",
        framing: Framing = "octet-counting",
        facility: int = FACILITIES["local0"],
        app_name: str = "asana-audit",
        hostname: str | None = None,
        max_message_bytes: int | None = None,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        tls_verify: bool = True,
        tls_server_name: str | None = None,
        connect_timeout: float = 10.0,
        write_timeout: float = 30.0,
        on_truncated: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.transport = transport
        self.host = host
        self.port = port
        self.framing = framing
        self.format = MessageFormat(
            syntax=syntax,
            facility=facility,
            hostname=hostname or socket.gethostname(),
            app_name=app_name,
            max_bytes=max_message_bytes or default_max_bytes(transport, syntax),
        )
        self.ca_file = ca_file
        self.cert_file = cert_file
        self.key_file = key_file
        self.tls_verify = tls_verify
        self.tls_server_name = tls_server_name
        self.connect_timeout = connect_timeout
        self.write_timeout = write_timeout
        self.on_truncated = on_truncated
        # Events delivered truncated since the sink was made.
        self.truncated_total = 0
        self._ssl_context: ssl.SSLContext | None = None
        self._stream: anyio.abc.ByteStream | None = None
        self._tcp: anyio.abc.SocketStream | None = None
        self._peek: socket.socket | None = None
        self._udp: socket.socket | None = None

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    # -- lifecycle ----------------------------------------------------------

    async def open(self) -> None:
        if self.transport == "tls":
            self._ssl_context = self._make_ssl_context()
        if self.transport == "udp":
            await self._open_udp()
        else:
            await self._connect()

    async def aclose(self) -> None:
        await self._disconnect()
        if self._udp is not None:
            self._udp.close()
            self._udp = None

    async def deliver(self, batch: Batch) -> DeliveryReport:
        messages = [
            self.format.build(event, payload)
            for event, payload in zip(batch.events, batch.payloads, strict=True)
        ]
        if self.transport == "udp":
            await self._send_datagrams(messages)
        else:
            await self._send_stream(messages)
        self._count_truncated(messages)
        return DeliveryReport()

    def _count_truncated(self, messages: list[SyslogMessage]) -> None:
        """Counted once the batch is delivered, so a retried batch counts once."""
        truncated = [message for message in messages if message.truncated]
        if not truncated:
            return
        self.truncated_total += len(truncated)
        if self.on_truncated is not None:
            for _ in truncated:
                self.on_truncated()
        log.warning(
            "syslog_events_truncated",
            sink=self.name,
            count=len(truncated),
            max_message_bytes=self.format.max_bytes,
            largest_payload_bytes=max(m.original_size for m in truncated),
        )

    # -- UDP ------------------------------------------------------------------

    async def _open_udp(self) -> None:
        try:
            infos = await anyio.getaddrinfo(
                self.host, self.port, type=socket.SOCK_DGRAM
            )
            family, kind, proto, _, sockaddr = infos[0]
            udp = socket.socket(family, kind, proto)
        except OSError as error:
            raise SinkError(
                f"cannot resolve {self.address}: {_reason(error)}"
            ) from error
        try:
            udp.setblocking(False)
            # Connected, so that an ICMP "port unreachable" surfaces as an
            # error on a later send instead of vanishing.
            udp.connect(sockaddr)
        except OSError as error:
            udp.close()
            raise SinkError(f"cannot reach {self.address}: {_reason(error)}") from error
        self._udp = udp

    async def _send_datagrams(self, messages: list[SyslogMessage]) -> None:
        if self._udp is None:
            await self._open_udp()
        assert self._udp is not None
        try:
            with anyio.fail_after(self.write_timeout):
                for message in messages:
                    await self._send_datagram(self._udp, message.data)
        except TimeoutError:
            raise SinkError(
                f"sending to {self.address} timed out after {self.write_timeout}s"
            ) from None
        except OSError as error:
            # A fresh socket next time: the address may resolve differently.
            self._udp.close()
            self._udp = None
            raise SinkError(
                f"cannot send a datagram to {self.address}: {_reason(error)}"
            ) from error

    @staticmethod
    async def _send_datagram(udp: socket.socket, data: bytes) -> None:
        while True:
            try:
                udp.send(data)
                return
            except BlockingIOError:
                await anyio.wait_writable(udp)

    # -- TCP and TLS ------------------------------------------------------------

    def _make_ssl_context(self) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(
                cafile=str(self.ca_file) if self.ca_file else None
            )
            if self.cert_file is not None:
                context.load_cert_chain(
                    self.cert_file, self.key_file if self.key_file else None
                )
        except (OSError, ssl.SSLError) as error:
            raise SinkError(f"cannot load the TLS files: {_reason(error)}") from error
        if not self.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            log.warning(
                "syslog_tls_verification_disabled",
                sink=self.name,
                address=self.address,
                risk="anyone on the path can read and alter the events",
            )
        return context

    async def _connect(self) -> None:
        try:
            with anyio.fail_after(self.connect_timeout):
                tcp = await anyio.connect_tcp(self.host, self.port)
                stream: anyio.abc.ByteStream = tcp
                if self.transport == "tls":
                    try:
                        stream = await self._handshake(tcp)
                    except BaseException:
                        await tcp.aclose()
                        raise
        except TimeoutError:
            raise SinkError(
                f"connecting to {self.address} timed out after {self.connect_timeout}s"
            ) from None
        except ssl.SSLCertVerificationError as error:
            raise SinkError(
                f"TLS handshake with {self.address} failed: certificate verify "
                f"failed: {error.verify_message}"
            ) from error
        except ssl.SSLError as error:
            reason = _reason(error)
            if "CERTIFICATE_REQUIRED" in reason:
                reason += "; the receiver requires a client certificate (cert_file)"
            raise SinkError(
                f"TLS handshake with {self.address} failed: {reason}"
            ) from error
        except (anyio.EndOfStream, anyio.BrokenResourceError) as error:
            raise SinkError(
                f"TLS handshake with {self.address} failed: the receiver closed "
                "the connection"
            ) from error
        except OSError as error:
            raise SinkError(
                f"cannot connect to {self.address}: {_reason(error)}"
            ) from error
        self._tcp = tcp
        self._stream = stream
        self._peek = tcp.extra(SocketAttribute.raw_socket).dup()
        log.info(
            "syslog_connected",
            sink=self.name,
            address=self.address,
            transport=self.transport,
        )

    async def _handshake(self, tcp: anyio.abc.SocketStream) -> TLSStream:
        if self._ssl_context is None:
            self._ssl_context = self._make_ssl_context()
        tls = await TLSStream.wrap(
            tcp,
            hostname=self.tls_server_name or self.host,
            ssl_context=self._ssl_context,
            standard_compatible=False,
        )
        with anyio.move_on_after(min(TLS_SETTLE_SECONDS, self.connect_timeout / 2)):
            try:
                await tls.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError) as error:
                raise SinkError(
                    f"TLS handshake with {self.address} failed: the receiver "
                    "closed the connection right after it; does it require a "
                    "client certificate (cert_file, key_file)?"
                ) from error
        return tls

    async def _disconnect(self) -> None:
        stream, self._stream, self._tcp = self._stream, None, None
        if self._peek is not None:
            self._peek.close()
            self._peek = None
        if stream is not None:
            with (
                anyio.CancelScope(shield=True),
                anyio.move_on_after(1),
                contextlib.suppress(OSError, anyio.BrokenResourceError),
            ):
                await stream.aclose()

    async def _still_open(self) -> bool:
        """False when the receiver hung up since the last batch."""
        assert self._peek is not None
        assert self._stream is not None
        try:
            waiting = self._peek.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not waiting:
            return False
        # A receiver never writes; bytes mean an alert, close_notify or noise.
        with anyio.move_on_after(0.05):
            try:
                await self._stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError) as error:
                log.info(
                    "syslog_receiver_hung_up",
                    sink=self.name,
                    address=self.address,
                    reason=_reason(error),
                )
                return False
        return True

    async def _send_stream(self, messages: list[SyslogMessage]) -> None:
        if self._stream is not None and not await self._still_open():
            await self._disconnect()
        if self._stream is None:
            await self._connect()
        assert self._stream is not None
        assert self._tcp is not None
        written = False
        try:
            with anyio.fail_after(self.write_timeout):
                for chunk in self._chunks(messages):
                    await self._stream.send(chunk)
                # Returns once the transport handed every byte to the kernel,
                # and raises if the connection broke meanwhile.
                await self._tcp.send(b"")
            written = True
        except TimeoutError:
            raise SinkError(
                f"writing {len(messages)} events to {self.address} timed out after "
                f"{self.write_timeout}s; the batch will be sent again"
            ) from None
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as error:
            raise SinkError(
                f"connection to {self.address} lost while sending "
                f"{len(messages)} events ({_reason(error)}); the batch will be "
                "sent again"
            ) from error
        finally:
            if not written:
                # Whatever stopped the batch (an error, a cancelled shutdown)
                # left the stream in an unknown state; never write after it.
                await self._disconnect()

    def _chunks(self, messages: list[SyslogMessage]) -> Iterator[bytes]:
        pending: list[bytes] = []
        size = 0
        for message in messages:
            framed = frame(message.data, self.framing)
            pending.append(framed)
            size += len(framed)
            if size >= WRITE_CHUNK_BYTES:
                yield b"".join(pending)
                pending, size = [], 0
        if pending:
            yield b"".join(pending)


def _reason(error: BaseException) -> str:
    """The most telling text of an error or of the error behind it."""
    cause: Any = error.__cause__ or error.__context__
    for candidate in (error, cause):
        if isinstance(candidate, ssl.SSLError) and candidate.reason:
            return str(candidate.reason)
        if isinstance(candidate, OSError) and candidate.strerror:
            return str(candidate.strerror)
        if candidate is not None and str(candidate):
            return str(candidate)
    return type(error).__name__
