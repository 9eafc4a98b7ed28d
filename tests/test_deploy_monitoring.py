"""The operations assets against real tools and real output.

- Prometheus alert rules: ``promtool check rules`` and ``promtool test rules``
  (ops/prometheus/alerts.test.yaml proves each alert fires on the series that
  should trigger it, and stays silent on healthy ones).
- A live scrape of the real daemon, running against the simulator, passes
  ``promtool check metrics``; the Grafana dashboard and the alert rules name
  only metrics and labels that scrape has.
- The Splunk props.conf and the Sumo Logic notes find the event time and the
  fields in what the daemon's file sink really wrote, in each format.

promtool comes with Debian's prometheus package (/usr/bin/promtool).
"""

from __future__ import annotations

import configparser
import json
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from forwarder.simulator import AuditLogSimulator, SimulatorSettings
from forwarder.sinks.splunk_hec import SplunkHecSinkConfig
from tests.daemon_process import DaemonProcess, free_port, wait_for, write_config
from tests.receivers import unavailable

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parent.parent
OPS = PROJECT / "ops"
ALERTS = OPS / "prometheus" / "alerts.yaml"
ALERT_TESTS = OPS / "prometheus" / "alerts.test.yaml"
DASHBOARD = OPS / "grafana" / "asana-audit-forwarder.json"
PROPS = OPS / "splunk" / "props.conf"
SUMO = OPS / "sumo" / "README.md"
TOKEN = "monitoring-test-token"
BACKLOG = 120
FORMATS = ("raw", "normalized", "ocsf")
# Series Prometheus adds itself, and labels the scrape configuration adds.
PROMETHEUS_SERIES = frozenset({"up"})
TARGET_LABELS = frozenset({"job", "instance", "workspace", "le"})


def promtool() -> str:
    path = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(path).is_file():
        unavailable("promtool not found: apt-get install prometheus")
    return path


def run_promtool(
    *arguments: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *arguments],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# -- the live daemon ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Live:
    """What one run of the real daemon left: its /metrics text, the file
    sinks' output per format, and its exit code after SIGTERM."""

    scrape: str
    outputs: dict[str, Path]
    exit_code: int
    log: str


def _delivered(port: int) -> dict[str, float]:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.TransportError:
        return {}
    return {
        sample.labels["sink"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "asana_forwarder_sink_events_delivered_total"
    }


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    directory = tmp_path_factory.mktemp("live")
    outputs = {name: directory / "out" / f"{name}.jsonl" for name in FORMATS}
    port = free_port()
    settings = SimulatorSettings(token=TOKEN, backlog=BACKLOG, seed=11)
    with AuditLogSimulator(settings) as simulator:
        config = write_config(
            directory / "forwarder.toml",
            {
                "source": {
                    "workspace_gid": settings.workspace_gid,
                    "token": TOKEN,
                    "base_url": simulator.base_url,
                    "allow_insecure_http": True,
                    "poll_interval": "100ms",
                },
                "state": {"directory": str(directory / "state")},
                "server": {"listen": f"127.0.0.1:{port}"},
                "log": {"level": "info", "format": "json"},
                "sinks": [
                    {"name": name, "type": "file", "format": name, "path": str(path)}
                    for name, path in outputs.items()
                ],
            },
        )
        daemon = DaemonProcess(config)
        try:
            wait_for(
                lambda: _delivered(port) == dict.fromkeys(FORMATS, float(BACKLOG)),
                30,
                "every sink to deliver the backlog",
            )
            scrape = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            daemon.signal(signal.SIGTERM)
            exit_code = daemon.wait(30)
        finally:
            daemon.stop()
        yield Live(scrape, outputs, exit_code, daemon.output)


def exported_names(scrape: str) -> set[str]:
    return {
        sample.name
        for family in text_string_to_metric_families(scrape)
        for sample in family.samples
    }


def exported_labels(scrape: str) -> set[str]:
    return {
        label
        for family in text_string_to_metric_families(scrape)
        for sample in family.samples
        for label in sample.labels
    }


def test_the_daemon_behind_the_scrape_stopped_cleanly(live: Live) -> None:
    """The daemon that served the scrape delivered the backlog to every sink
    and exited 0 on SIGTERM."""
    assert live.exit_code == 0, live.log
    for path in live.outputs.values():
        assert len(path.read_text().splitlines()) == BACKLOG


def test_live_scrape_passes_promtool_check_metrics(live: Live) -> None:
    """promtool's lint of names, units, types and help texts finds nothing
    to say about a real scrape."""
    result = run_promtool("check", "metrics", stdin=live.scrape)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (result.stdout + result.stderr).strip() == ""


def test_promtool_check_metrics_flags_a_badly_named_counter() -> None:
    """The lint is real: a counter without _total is reported."""
    exposition = (
        "# HELP forwarder_sent_seconds Sent.\n"
        "# TYPE forwarder_sent_seconds counter\n"
        "forwarder_sent_seconds 1\n"
    )
    result = run_promtool("check", "metrics", stdin=exposition)
    assert result.returncode != 0
    assert "_total" in result.stdout + result.stderr


# -- PromQL: which metrics and labels an expression reads ---------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)"
)
_MATCHERS = re.compile(r"\{([^}]*)\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENTIFIER = re.compile(r"(?<![\w$.:])([A-Za-z_:][\w:]*)(?![\w:]|\s*\()")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without"}
)


def metric_names(expr: str) -> set[str]:
    """Series names an expression selects (functions, keywords, label
    matchers, grouping labels, ranges and strings left out)."""
    text = _STRING.sub('""', expr)
    text = _GROUPING.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    return {name for name in _IDENTIFIER.findall(text) if name.lower() not in _KEYWORDS}


def label_names(expr: str) -> set[str]:
    """Labels an expression matches on or groups by."""
    text = _STRING.sub('""', expr)
    labels = set()
    for group in _GROUPING.findall(text):
        labels |= {name.strip() for name in group.split(",") if name.strip()}
    for matchers in _MATCHERS.findall(text):
        labels |= set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    return labels


def test_metric_and_label_extraction_reads_promql_correctly() -> None:
    """The checker below is only as good as this extraction."""
    expr = (
        'histogram_quantile(0.95, sum by (sink, le) (rate(a_bucket{job=~"$job",'
        ' x="y{z}"}[$__rate_interval]))) / on(job) group_left() b_total'
        " and time() - c > 3e2 unless bool d offset 5m"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c", "d"}
    assert label_names(expr) == {"sink", "le", "job", "x"}
    assert metric_names('absent(up{job="x"}) or vector(1)') == {"up"}


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def dashboard_panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def dashboard_exprs() -> list[str]:
    exprs = [t["expr"] for p in dashboard_panels() for t in p["targets"]]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = re.fullmatch(
                r"label_values\((.*),\s*(\w+)\)", variable["definition"]
            )
            assert query is not None, variable["definition"]
            exprs.append(query.group(1))
    return exprs


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_queries_name_only_metrics_and_labels_the_daemon_exports(
    live: Live, source: str
) -> None:
    """Every series a dashboard query or an alert reads is in a live scrape
    (or is Prometheus' own ``up``); every label is one the daemon or the
    scrape configuration sets."""
    exprs = (
        dashboard_exprs()
        if source == "dashboard"
        else [rule["expr"] for rule in alert_rules()]
    )
    names = exported_names(live.scrape) | PROMETHEUS_SERIES
    labels = exported_labels(live.scrape) | TARGET_LABELS
    used = set().union(*(metric_names(expr) for expr in exprs))
    used_labels = set().union(*(label_names(expr) for expr in exprs))

    assert used, "no metric found in the queries"
    assert used - names == set()
    assert used_labels - labels == set()


def test_dashboard_shows_what_operators_watch() -> None:
    """Events fetched and delivered per sink, lag per sink, API status codes
    and latency quantiles, rate-limit waits and retries each have a panel."""
    exprs = "\n".join(dashboard_exprs())
    for needed in (
        r"rate\(asana_forwarder_events_fetched_total",
        r"sum by \(sink\) \(rate\(asana_forwarder_sink_events_delivered_total",
        r"max by \(sink\) \(asana_forwarder_sink_lag_seconds",
        r"sum by \(status\) \(rate\(asana_forwarder_api_requests_total",
        r"histogram_quantile\(0\.95, sum by \(le\) \(rate\("
        r"asana_forwarder_api_request_duration_seconds_bucket",
        r"rate\(asana_forwarder_rate_limit_waits_total",
        r"rate\(asana_forwarder_api_retries_total",
        r"rate\(asana_forwarder_sink_delivery_retries_total",
    ):
        assert re.search(needed, exprs), needed
    for expr in dashboard_exprs():
        if "histogram_quantile" in expr:
            assert "_bucket" in expr
            assert re.search(r"by \([^)]*\ble\b", expr), expr


def test_dashboard_is_a_well_formed_grafana_dashboard() -> None:
    """Unique panel ids, panels inside the 24-column grid without overlap,
    every query on the datasource variable, every variable used defined."""
    document = dashboard()
    panels = document["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    assert document["uid"]
    assert document["title"]
    assert isinstance(document["schemaVersion"], int)

    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area

    variables = {v["name"] for v in document["templating"]["list"]}
    for panel in dashboard_panels():
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["title"]
        assert panel["description"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval"}
            assert used <= variables, used - variables


# -- alert rules --------------------------------------------------------------


def test_alert_rules_pass_promtool_check_rules() -> None:
    """promtool parses every rule and finds no problem."""
    result = run_promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_alert_rule_unit_tests_pass() -> None:
    """promtool test rules: every case of alerts.test.yaml holds."""
    result = run_promtool("test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_silent() -> None:
    """alerts.test.yaml has, for every alert, a case where it fires and a
    case where healthy series leave it silent."""
    cases = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    firing: set[str] = set()
    silent: set[str] = set()
    for case in cases:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set()
    assert names - silent == set()


@pytest.mark.parametrize(
    ("mutation", "expr"),
    [("never fires", "vector(1) < 0"), ("always fires", "vector(1)")],
)
def test_the_unit_tests_catch_a_broken_alert(
    tmp_path: Path, mutation: str, expr: str
) -> None:
    """Replacing any one alert's expression with one that never (or always)
    fires makes promtool test rules fail: the tests pin every alert."""
    document = yaml.safe_load(ALERTS.read_text())
    runs = []
    for index, rule in enumerate(alert_rules()):
        directory = tmp_path / rule["alert"]
        directory.mkdir()
        shutil.copy(ALERT_TESTS, directory / ALERT_TESTS.name)
        broken = json.loads(json.dumps(document))
        broken["groups"][0]["rules"][index]["expr"] = expr
        (directory / ALERTS.name).write_text(yaml.safe_dump(broken))
        # promtool takes half a second a run: all of them at once.
        process = subprocess.Popen(
            [promtool(), "test", "rules", str(directory / ALERT_TESTS.name)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        runs.append((rule["alert"], process))
    try:
        passed = [name for name, process in runs if process.wait(60) == 0]
    finally:
        for _, process in runs:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert passed == [], f"the tests still pass when these alerts {mutation}"


# -- Splunk -------------------------------------------------------------------

# Splunk's strptime() directives used in props.conf, as regular expressions
# and as Python's directives.
_SPLUNK_TIME = {
    "%Y": (r"\d{4}", "%Y"),
    "%m": (r"\d{2}", "%m"),
    "%d": (r"\d{2}", "%d"),
    "%H": (r"\d{2}", "%H"),
    "%M": (r"\d{2}", "%M"),
    "%S": (r"\d{2}", "%S"),
    "%3N": (r"\d{3}", "%f"),
    "%Z": (r"Z|[+-]\d{2}:?\d{2}", "%z"),
}


def splunk_time(window: str, time_format: str) -> datetime:
    """The time Splunk reads at the start of ``window`` with TIME_FORMAT."""
    if time_format == "%s%3N":
        match = re.match(r"\d{13}", window)
        assert match, window
        return datetime.fromtimestamp(int(match.group()) / 1000, UTC)
    pattern, python = "", ""
    for token in re.split(r"(%3N|%[A-Za-z])", time_format):
        regex, directive = _SPLUNK_TIME.get(token, (re.escape(token), token))
        pattern += f"(?:{regex})"
        python += directive
    match = re.match(pattern, window)
    assert match, f"{time_format} does not match {window!r}"
    return datetime.strptime(match.group(), python)


def props() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(
        interpolation=None, delimiters=("=",), comment_prefixes=("#",), strict=True
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(PROPS.read_text())
    return parser


def event_time(line: str, fmt: str) -> datetime:
    """The event's created_at, read from the line by its format's rules."""
    document = json.loads(line)
    if fmt == "ocsf":
        return datetime.fromtimestamp(document["time"] / 1000, UTC)
    text = document["event"]["created_at"] if fmt == "raw" else document["time"]
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_splunk_props_break_and_timestamp_the_file_sink_output(
    live: Live, fmt: str
) -> None:
    """Splunk's rules for the file sink's sourcetype, applied to what the
    file sink wrote: one event per line, stamped with the event's own time
    (not the time it was received)."""
    stanza = props()[f"asana:audit:file:{fmt}"]
    data = live.outputs[fmt].read_text()
    breaker = re.compile(stanza["LINE_BREAKER"])
    events = [e for e in breaker.split(data)[::2] if e]
    truncate = int(stanza["TRUNCATE"])

    assert stanza["SHOULD_LINEMERGE"] == "false"
    assert stanza["KV_MODE"] == "json"
    assert events == data.splitlines()
    assert len(events) == BACKLOG
    received_differs = False
    for event in events:
        assert truncate == 0 or len(event.encode()) < truncate
        prefix = re.search(stanza["TIME_PREFIX"], event)
        assert prefix, event
        lookahead = int(stanza["MAX_TIMESTAMP_LOOKAHEAD"])
        window = event[prefix.end() : prefix.end() + lookahead]
        stamped = splunk_time(window, stanza["TIME_FORMAT"])
        assert stamped == event_time(event, fmt)
        if fmt == "raw":
            received = json.loads(event)["received_at"]
            received_differs |= stamped != datetime.fromisoformat(
                received.replace("Z", "+00:00")
            )
    assert received_differs or fmt != "raw"


def test_splunk_hec_stanza_is_the_sinks_sourcetype() -> None:
    """The HEC stanza is named for the splunk_hec sink's default sourcetype
    and extracts JSON at search time, without merging lines."""
    sourcetype = SplunkHecSinkConfig.model_fields["sourcetype"].default
    stanza = props()[sourcetype]
    assert stanza["KV_MODE"] == "json"
    assert stanza["SHOULD_LINEMERGE"] == "false"


# -- Sumo Logic ---------------------------------------------------------------


def sumo_blocks() -> list[tuple[str, str]]:
    """(format, query) of every ```sumo block of the notes."""
    blocks = re.findall(r"```sumo\n// format: (\w+)\n(.*?)```", SUMO.read_text(), re.S)
    return [(fmt, query.strip()) for fmt, query in blocks]


def json_path(document: Any, path: str) -> Any:
    for key in path.split("."):
        assert isinstance(document, dict), path
        assert key in document, path
        document = document[key]
    return document


def test_sumo_field_extraction_paths_exist_in_real_events(live: Live) -> None:
    """Every JSON path the Sumo Logic parse expressions name is present in
    the events the daemon wrote in that format, with one alias per path."""
    blocks = sumo_blocks()
    assert {fmt for fmt, _ in blocks} == set(FORMATS)
    checked = 0
    for fmt, query in blocks:
        for paths, aliases in re.findall(
            r'json field=_raw ((?:"[^"]+",?\s*)+) as ([\w, ]+?)(?: nodrop)?$',
            query,
            re.M,
        ):
            names = re.findall(r'"([^"]+)"', paths)
            assert len(names) == len(aliases.split(","))
            line = live.outputs[fmt].read_text().splitlines()[0]
            for name in names:
                json_path(json.loads(line), name)
                checked += 1
    assert checked >= 20


def test_sumo_timestamp_locators_find_the_event_time(live: Live) -> None:
    """The notes' timestamp locator for each format captures the event's own
    time from real lines, not the envelope's received_at."""
    rows = re.findall(r"^\| `(\w+)` \| `([^`]+)` \|", SUMO.read_text(), re.M)
    locators = dict(rows)
    assert set(locators) == set(FORMATS)
    for fmt, locator in locators.items():
        for line in live.outputs[fmt].read_text().splitlines()[:20]:
            match = re.search(locator, line)
            assert match, (fmt, line)
            value = match.group(1)
            found = (
                datetime.fromtimestamp(int(value) / 1000, UTC)
                if fmt == "ocsf"
                else datetime.fromisoformat(value.replace("Z", "+00:00"))
            )
            assert found == event_time(line, fmt)
