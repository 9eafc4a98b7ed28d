"""The forwarder's benchmark: ``bench/run`` (or ``python3 -m bench``).

Every scenario starts its own simulated audit-log API in the bench process
and the real daemon as a subprocess (``python3 -m forwarder.cli run``),
whose own CPU time and peak memory the kernel reports when it exits:

- drain: a backlog into a file, the Splunk HEC double and a real rsyslogd,
  and by the floor script (the daemon's libraries, nothing else) into HEC;
- sdk: the same drain by a script on Asana's official Python SDK;
- backfill: 90 days of history behind Asana's latency and limits, at
  ``backfill_concurrency = 1``, at the default, over uneven history, and by
  the SDK script;
- memory: a large backlog while one of two sinks is down;
- lag: live events, from ``created_at`` until indexed.

It prints a table and writes the figures as JSON (``--json``); ``--quick``
runs small sizes in about a minute. Install with ``pip install -e
'.[bench]'``; rsyslogd must be at /usr/sbin/rsyslogd for the syslog drain.
"""
