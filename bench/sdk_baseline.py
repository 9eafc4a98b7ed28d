"""The baseline: what a short script on Asana's official Python SDK does.

It pages through the audit log with ``AuditLogAPIApi.get_audit_log_events``
and posts each page to Splunk HEC as one gzipped request of ``{"event": ...}``
envelopes, one page after another, until a page comes back empty. (The SDK's
page iterator never stops on the audit log: ``next_page`` is always there.)

Run as its own process (``python3 -m bench.sdk_baseline``) so that the
bench measures its CPU and memory the way it measures the daemon's; it
prints what it did as one JSON line.
"""

from __future__ import annotations

import gzip
import json
import sys
import time
from typing import Any

import asana
import urllib3

from bench.script_arguments import parse_arguments

PAGE_SIZE = 100


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(__doc__, argv)

    configuration = asana.Configuration()
    configuration.host = arguments.base_url
    configuration.access_token = arguments.token
    audit_log = asana.AuditLogAPIApi(asana.ApiClient(configuration))
    hec = urllib3.PoolManager()
    headers = {
        "Authorization": f"Splunk {arguments.hec_token}",
        "Content-Encoding": "gzip",
        "Content-Type": "application/json",
    }
    url = arguments.hec_url.rstrip("/") + "/services/collector/event"

    started = time.monotonic()
    events = pages = 0
    offset: str | None = None
    while True:
        page = _page(audit_log, arguments.workspace, offset)
        data = page.get("data") or []
        if not data:
            break
        _post(hec, url, headers, data)
        events += len(data)
        pages += 1
        offset = page["next_page"]["offset"]
    seconds = time.monotonic() - started
    print(json.dumps({"events": events, "pages": pages, "seconds": seconds}))
    return 0


def _page(
    audit_log: asana.AuditLogAPIApi, workspace: str, offset: str | None
) -> dict[str, Any]:
    options: dict[str, Any] = {"limit": PAGE_SIZE}
    if offset is not None:
        options["offset"] = offset
    # full_payload: the page itself, with next_page, not the SDK's iterator.
    page: dict[str, Any] = audit_log.get_audit_log_events(
        workspace, options, full_payload=True
    )
    return page


def _post(
    hec: urllib3.PoolManager,
    url: str,
    headers: dict[str, str],
    events: list[dict[str, Any]],
) -> None:
    body = "\n".join(json.dumps({"event": event}) for event in events)
    response = hec.request(
        "POST", url, body=gzip.compress(body.encode("utf-8")), headers=headers
    )
    if response.status != 200:
        raise RuntimeError(f"HEC answered {response.status}: {response.data!r}")


if __name__ == "__main__":
    sys.exit(main())
