"""The floor: the least a process on the daemon's own libraries can spend to
move the audit log into Splunk HEC.

It does only what no forwarder can skip: one request per page with httpx,
the page decoded with orjson, each event encoded into a HEC envelope, the
envelopes gzipped (the daemon's level) and posted with httpx, 1,000 at a
time. No checkpoint, no retry, no metric, no concurrency, no time slices.
The daemon's CPU per event over this script's is what all of its guarantees
cost; this script's alone is what the stack costs on the machine.

Run as its own process (``python3 -m bench.floor_script``), like the SDK
baseline; it prints what it did as one JSON line.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import time
from urllib.parse import urlencode

import anyio
import httpx
import orjson

from bench.script_arguments import parse_arguments

PAGE_SIZE = 100
EVENTS_PER_POST = 1000
# The daemon's level (a test holds them equal), not imported: the floor loads
# no more than the libraries it measures.
GZIP_LEVEL = 3


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(__doc__, argv)
    report = anyio.run(_drain, arguments)
    print(orjson.dumps(report).decode())
    return 0


async def _drain(arguments: argparse.Namespace) -> dict[str, float]:
    url = (
        f"{arguments.base_url.rstrip('/')}/workspaces/{arguments.workspace}"
        "/audit_log_events"
    )
    api_headers = {"Authorization": f"Bearer {arguments.token}"}
    hec_url = arguments.hec_url.rstrip("/") + "/services/collector/event"
    hec_headers = {
        "Authorization": f"Splunk {arguments.hec_token}",
        "Content-Encoding": "gzip",
        "Content-Type": "application/json",
    }
    started = time.monotonic()
    events = pages = 0
    envelopes: list[bytes] = []
    offset: str | None = None
    async with httpx.AsyncClient(timeout=30.0) as http:
        while True:
            query = {"limit": str(PAGE_SIZE)}
            if offset is not None:
                query["offset"] = offset
            response = await http.get(f"{url}?{urlencode(query)}", headers=api_headers)
            response.raise_for_status()
            page = orjson.loads(response.content)
            data = page["data"]
            if not data:
                break
            envelopes += [b'{"event":' + orjson.dumps(event) + b"}" for event in data]
            if len(envelopes) >= EVENTS_PER_POST:
                await _post(http, hec_url, hec_headers, envelopes)
                envelopes = []
            events += len(data)
            pages += 1
            offset = page["next_page"]["offset"]
        if envelopes:
            await _post(http, hec_url, hec_headers, envelopes)
    return {"events": events, "pages": pages, "seconds": time.monotonic() - started}


async def _post(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], envelopes: list[bytes]
) -> None:
    body = gzip.compress(b"\n".join(envelopes), GZIP_LEVEL, mtime=0)
    response = await http.post(url, content=body, headers=headers)
    if response.status_code != 200:
        raise RuntimeError(f"HEC answered {response.status_code}: {response.text}")


if __name__ == "__main__":
    sys.exit(main())
