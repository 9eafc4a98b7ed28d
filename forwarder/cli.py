"""The command line: run, check-config, state, test tools (simulate, demo)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio

from forwarder import __version__
from forwarder.checkpoint import Checkpoint, Cursor, FileCheckpointStore
from forwarder.config import Config, load_config, parse_config
from forwarder.daemon import Daemon, filters_fingerprint
from forwarder.durations import format_duration, parse_duration
from forwarder.errors import ConfigError, ForwarderError, StateError
from forwarder.logs import configure_logging
from forwarder.timestamps import format_timestamp, parse_timestamp, utc_now

EXIT_USAGE = 2
EXIT_FAILURE = 1


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    arguments = parser.parse_args(argv)
    if not hasattr(arguments, "command"):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        result: int = arguments.command(arguments)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except StateError as error:
        print(f"error: {error}", file=sys.stderr)
        print(_state_recovery_hint(error, arguments), file=sys.stderr)
        return EXIT_FAILURE
    except ForwarderError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    return result


def _state_recovery_hint(error: StateError, arguments: argparse.Namespace) -> str:
    config = getattr(arguments, "config", None) or "CONFIG"
    sink = error.sink or "SINK"
    return (
        "The forwarder does not replace a checkpoint it cannot read, since that\n"
        "would silently skip or repeat events. Inspect the file; to restart this\n"
        "sink from a known time (events from then on are delivered again), run:\n"
        f"  asana-audit-forwarder state reset --config {config} --sink {sink} "
        "--to 2026-01-01T00:00:00Z\n"
        "The old file is kept beside the new one."
    )


def _parser() -> argparse.ArgumentParser:
    version = f"asana-audit-forwarder {__version__}"
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--version", action="version", version=version)
    parser = argparse.ArgumentParser(
        prog="asana-audit-forwarder",
        description="Forward the Asana audit log to SIEMs, with per-sink checkpoints.",
        parents=[common],
    )
    commands = parser.add_subparsers(metavar="COMMAND")

    run = commands.add_parser("run", help="run the forwarder", parents=[common])
    _config_argument(run)
    run.add_argument(
        "--once", action="store_true", help="drain until caught up, then exit"
    )
    run.set_defaults(command=_run)

    check = commands.add_parser(
        "check-config", help="validate a configuration file", parents=[common]
    )
    _config_argument(check)
    check.set_defaults(command=_check_config)

    test_sinks = commands.add_parser(
        "test-sinks",
        help="deliver one synthetic event to each sink and report",
        parents=[common],
    )
    _config_argument(test_sinks)
    test_sinks.set_defaults(command=_test_sinks)

    state = commands.add_parser(
        "state", help="show or reset checkpoints", parents=[common]
    )
    state_commands = state.add_subparsers(metavar="ACTION", required=True)
    show = state_commands.add_parser(
        "show", help="print every sink's checkpoint", parents=[common]
    )
    _config_argument(show)
    show.set_defaults(command=_state_show)
    reset = state_commands.add_parser(
        "reset",
        help="restart sinks from a time (refused while the forwarder runs)",
        parents=[common],
    )
    _config_argument(reset)
    which = reset.add_mutually_exclusive_group(required=True)
    which.add_argument("--sink", action="append", help="sink name (repeatable)")
    which.add_argument("--all", action="store_true", help="every configured sink")
    when = reset.add_mutually_exclusive_group(required=True)
    when.add_argument("--to", help="RFC 3339 time, or a duration ago such as '24h'")
    when.add_argument(
        "--beginning", action="store_true", help="the oldest event the API keeps"
    )
    reset.set_defaults(command=_state_reset)

    simulate = commands.add_parser(
        "simulate",
        help="serve a simulated Asana audit-log API for testing pipelines",
        parents=[common],
    )
    _simulator_arguments(simulate)
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=8080)
    simulate.set_defaults(command=_simulate)

    demo = commands.add_parser(
        "demo",
        help="the simulator and a forwarder to stdout, no configuration needed",
        parents=[common],
    )
    _simulator_arguments(demo, backlog=20, rate=1.0)
    demo.add_argument("--format", choices=("raw", "normalized"), default="normalized")
    demo.add_argument(
        "--stop-after",
        type=parse_duration,
        default=None,
        metavar="DURATION",
        help="stop after this long (default: run until interrupted)",
    )
    demo.set_defaults(command=_demo)
    return parser


def _config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", type=Path, required=True, metavar="FILE")


def _simulator_arguments(
    parser: argparse.ArgumentParser, *, backlog: int = 1000, rate: float = 1.0
) -> None:
    parser.add_argument(
        "--backlog",
        type=int,
        default=backlog,
        help="events already in the log at start",
    )
    parser.add_argument(
        "--rate", type=float, default=rate, help="new events per second"
    )
    parser.add_argument("--seed", type=int, default=1)


# -- commands -----------------------------------------------------------------


def _run(arguments: argparse.Namespace) -> int:
    config = load_config(arguments.config)
    configure_logging(config.log.level, config.log.format)
    daemon = Daemon(config, once=arguments.once)
    anyio.run(daemon.run)
    if daemon.abandoned:
        # A sink's write may still hang in a thread (a stdout nobody reads);
        # the usual interpreter exit would wait for it, or flush into it.
        sys.stderr.flush()
        os._exit(0)
    return 0


def _check_config(arguments: argparse.Namespace) -> int:
    config = load_config(arguments.config)
    source = config.source
    print(f"configuration {arguments.config} is valid")
    print(f"  workspace {source.workspace_gid} at {source.base_url}")
    print(
        f"  poll every {format_duration(source.poll_interval)}, "
        f"at most {source.max_requests_per_minute} requests/min"
    )
    print(f"  state in {config.state.directory}, probes on {config.server.listen}")
    for sink in config.sinks:
        print(f"  sink {sink.name}: {sink.type}, format {sink.format}")
    return 0


def _test_sinks(arguments: argparse.Namespace) -> int:
    from forwarder.sink_check import check_sinks

    config = load_config(arguments.config)
    configure_logging("warning", config.log.format)
    results = anyio.run(check_sinks, config)
    for result in results:
        status = "ok    " if result.ok else "FAILED"
        print(f"{status} {result.sink}: {result.detail} ({result.seconds:.2f}s)")
    return 0 if all(result.ok for result in results) else EXIT_FAILURE


def _state_show(arguments: argparse.Namespace) -> int:
    config = load_config(arguments.config)
    store = FileCheckpointStore(config.state.directory)
    names = [sink.name for sink in config.sinks]
    names += [name for name in store.sinks() if name not in names]
    failed = False
    for name in names:
        try:
            checkpoint = store.load(name)
        except StateError as error:
            print(f"{name}: UNREADABLE: {error}")
            failed = True
            continue
        print(
            _describe(name, checkpoint, configured=name in names[: len(config.sinks)])
        )
    return EXIT_FAILURE if failed else 0


def _describe(name: str, checkpoint: Checkpoint | None, *, configured: bool) -> str:
    note = "" if configured else " (not in the configuration)"
    if checkpoint is None:
        return f"{name}{note}: no checkpoint yet (starts at the configured start_at)"
    cursor = checkpoint.cursor
    position = (
        f"offset {cursor.offset[:24]}..."
        if cursor.offset
        else f"start_at {cursor.start_at or 'the oldest event kept'}"
    )
    return (
        f"{name}{note}: {position}; newest delivered event "
        f"{checkpoint.newest_created_at or '-'}; {checkpoint.delivered_total} "
        f"delivered; saved {checkpoint.updated_at}"
    )


def _state_reset(arguments: argparse.Namespace) -> int:
    config = load_config(arguments.config)
    configured = [sink.name for sink in config.sinks]
    names = configured if arguments.all else arguments.sink
    unknown = [name for name in names if name not in configured]
    if unknown:
        print(
            f"error: no sink named {', '.join(unknown)} in the configuration",
            file=sys.stderr,
        )
        return EXIT_USAGE
    start_at = None if arguments.beginning else _reset_time(arguments.to)
    store = FileCheckpointStore(config.state.directory)
    store.lock()
    try:
        for name in names:
            checkpoint = Checkpoint(
                sink=name,
                cursors=(Cursor(start_at=start_at),),
                filters=filters_fingerprint(config),
            )
            kept = store.reset(name, checkpoint)
            where = f"; previous checkpoint kept as {kept}" if kept else ""
            print(f"{name}: starts again at {start_at or 'the oldest event'}{where}")
    finally:
        store.unlock()
    return 0


def _reset_time(text: str) -> str:
    try:
        if "T" in text:
            return format_timestamp(parse_timestamp(text))
        return format_timestamp(utc_now() - timedelta(seconds=parse_duration(text)))
    except ValueError as error:
        raise ConfigError([("--to", str(error))]) from None


def _simulate(arguments: argparse.Namespace) -> int:
    from forwarder.simulator import SimulatorSettings, serve_forever

    settings = SimulatorSettings(
        backlog=arguments.backlog,
        events_per_second=arguments.rate,
        seed=arguments.seed,
    )
    serve_forever(settings, arguments.host, arguments.port)
    return 0


def _demo(arguments: argparse.Namespace) -> int:
    from forwarder.simulator import AuditLogSimulator, SimulatorSettings

    configure_logging("info", "auto")
    settings = SimulatorSettings(
        backlog=arguments.backlog,
        backlog_span=3600.0,
        events_per_second=arguments.rate,
        seed=arguments.seed,
    )
    with (
        tempfile.TemporaryDirectory(prefix="asana-forwarder-demo-") as state,
        AuditLogSimulator(settings) as simulator,
    ):
        config = demo_config(
            simulator.base_url, settings, Path(state), arguments.format
        )
        daemon = Daemon(config)
        anyio.run(_run_for, daemon, arguments.stop_after)
    return 0


def demo_config(base_url: str, settings: Any, state: Path, output: str) -> Config:
    """The configuration of ``demo``: the simulator, one stdout sink."""
    return parse_config(
        {
            "source": {
                "workspace_gid": settings.workspace_gid,
                "token": settings.token,
                "base_url": base_url,
                "allow_insecure_http": True,
                "poll_interval": "2s",
            },
            "state": {"directory": str(state)},
            "server": {"listen": "127.0.0.1:0"},
            "sinks": [{"name": "stdout", "type": "stdout", "format": output}],
        }
    )


async def _run_for(daemon: Daemon, seconds: float | None) -> None:
    if seconds is None:
        await daemon.run()
        return
    async with anyio.create_task_group() as group:
        group.start_soon(daemon.run)
        await anyio.sleep(seconds)
        daemon.stop()


if __name__ == "__main__":
    sys.exit(main())
