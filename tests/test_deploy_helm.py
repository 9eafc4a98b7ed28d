"""The Helm chart, checked by Helm itself and by Kubernetes' schemas.

Helm's own Go engine (the ``helm-python-sdk`` package) lints and renders the
chart offline for its defaults and several combinations of values; every
rendered manifest validates strictly against the schemas of a current
Kubernetes (``kubernetes-validate``); the configuration the chart renders
passes the forwarder's own ``check-config``; values.schema.json turns wrong
values into install-time errors that name the value.
"""

from __future__ import annotations

import base64
import importlib
import json
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, get_args

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forwarder import cli
from forwarder.config import SINK_TYPES
from forwarder.config_types import SinkBaseConfig
from tests.receivers import unavailable

PROJECT = Path(__file__).resolve().parent.parent
CHART = PROJECT / "helm" / "asana-audit-forwarder"
ALERTS = PROJECT / "ops" / "prometheus" / "alerts.yaml"
KUBERNETES_VERSION = "1.31.0"
RELEASE = "acme"
NAMESPACE = "audit"
FULLNAME = f"{RELEASE}-asana-audit-forwarder"
STATE_DIR = "/var/lib/asana-audit-forwarder"
SECRET_DIR = "/var/run/secrets/asana-audit-forwarder"
CONFIG_PATH = "/etc/asana-audit-forwarder/config.toml"
METRICS_PORT = 9464
WORKSPACE = "1204000000000001"
# Custom resources of the Prometheus operator: Kubernetes has no schema for
# them, so their structure is checked here instead.
CRD_KINDS = frozenset({"ServiceMonitor", "PrometheusRule"})
SUMO_URL = "https://endpoint4.collection.sumologic.com/receiver/v1/http/ZaVnC4dhaV0"


def helm() -> ModuleType:
    try:
        return importlib.import_module("helm_python")
    except ImportError:
        unavailable("helm-python-sdk is not installed: pip install helm-python-sdk")


def kubernetes_validate() -> ModuleType:
    try:
        return importlib.import_module("kubernetes_validate")
    except ImportError:
        unavailable("kubernetes-validate is not installed: pip install ...")


def render(values: dict[str, Any]) -> dict[str, str]:
    """Template path -> rendered text, as ``helm template`` would produce."""
    with helm().Chart.load(CHART) as chart:
        rendered: dict[str, str] = chart.render(
            values, name=RELEASE, namespace=NAMESPACE
        )
        return rendered


def manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    documents = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".txt"):
            continue
        documents += [doc for doc in yaml.safe_load_all(text) if doc]
    return documents


def one(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [doc for doc in documents if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def config_text(documents: list[dict[str, Any]]) -> str:
    text: str = one(documents, "ConfigMap")["data"]["config.toml"]
    return text


def with_required(**values: Any) -> dict[str, Any]:
    """The chart's two required values, plus ``values``."""
    asana = {
        "workspaceGid": WORKSPACE,
        "token": "asana-token-1",
        **values.pop("asana", {}),
    }
    return {"asana": asana, **values}


# -- scenarios ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scenario:
    """Values to install with, and the keys of a Secret the user manages."""

    values: dict[str, Any]
    existing_secret: dict[str, str] = field(default_factory=dict)
    kinds: frozenset[str] = frozenset(
        {"ConfigMap", "Secret", "Service", "ServiceAccount", "StatefulSet"}
    )


EVERY_SINK_TYPE = [
    {
        "name": "archive",
        "type": "file",
        "format": "raw",
        "path": f"{STATE_DIR}/events.jsonl",
        "max_bytes": 104857600,
        "keep_files": 3,
        "fsync": True,
        "include_event_types": ["user_*", "*_deleted"],
        "exclude_event_types": [],
        "delivery": {"batch_max_events": 1000, "batch_max_wait": "2s"},
    },
    {"name": "console", "type": "stdout", "format": "normalized"},
    {
        "name": "splunk",
        "type": "splunk_hec",
        "format": "raw",
        "url": "https://splunk.example.com:8088",
        "token": f"file:{SECRET_DIR}/splunk-hec-token",
        "index": "asana",
        "acknowledgements": True,
        "fields": {"environment": "production", "teams": ["security", "it"]},
        "delivery": {"retry_max_delay": "5m"},
    },
    {
        "name": "sumo",
        "type": "sumo_logic",
        "url": f"file:{SECRET_DIR}/sumo-url",
        "category": "security/asana",
    },
    {
        "name": "relay",
        "type": "syslog",
        "address": "tcp://syslog.logging.svc:6514",
        "payload": "cef",
        "facility": "local4",
    },
    {
        "name": "collector",
        "type": "http",
        "format": "ocsf",
        "url": "https://collector.example.com/ingest",
        "headers": {"Authorization": f"file:{SECRET_DIR}/collector-auth"},
        "encoding": "json_array",
    },
]

SCENARIOS = {
    "defaults": Scenario(with_required()),
    "created_secret_with_sink_credentials": Scenario(
        with_required(
            extraSecrets={"splunk-hec-token": "hec-0000", "sumo-url": SUMO_URL},
            sinks=EVERY_SINK_TYPE[2:4],
        )
    ),
    "existing_secret": Scenario(
        with_required(asana={"token": "", "existingSecret": "asana-creds"}),
        existing_secret={"token": "asana-token-2"},
        kinds=frozenset({"ConfigMap", "Service", "ServiceAccount", "StatefulSet"}),
    ),
    "prometheus_operator": Scenario(
        with_required(
            serviceMonitor={"enabled": True, "labels": {"release": "prometheus"}},
            prometheusRule={"enabled": True},
        ),
        kinds=frozenset(
            {
                "ConfigMap",
                "Secret",
                "Service",
                "ServiceAccount",
                "StatefulSet",
                "ServiceMonitor",
                "PrometheusRule",
            }
        ),
    ),
    "network_policy_with_sinks": Scenario(
        with_required(
            networkPolicy={
                "enabled": True,
                "sinkPorts": [{"port": 9997}],
                "asanaApiCidrs": ["0.0.0.0/0"],
                "metricsFrom": [
                    {"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}
                ],
            },
            extraSecrets={"splunk-hec-token": "hec-0000"},
            sinks=[EVERY_SINK_TYPE[2], EVERY_SINK_TYPE[4], EVERY_SINK_TYPE[1]],
        ),
        kinds=frozenset(
            {
                "ConfigMap",
                "Secret",
                "Service",
                "ServiceAccount",
                "StatefulSet",
                "NetworkPolicy",
            }
        ),
    ),
    "sinks_of_every_type_and_tuned_config": Scenario(
        with_required(
            asana={"token": "", "existingSecret": "asana-creds", "tokenKey": "asana"},
            config={
                "source": {
                    "poll_interval": "30s",
                    "page_size": 50,
                    "start_at": "7d",
                    "max_requests_per_minute": 300,
                    "filters": {"actor_type": "user"},
                },
                "server": {"sink_stuck_after": "10m"},
                "log": {"level": "debug", "format": "json"},
                "daemon": {"shutdown_grace": "20s", "access_retry_interval": "2m"},
            },
            sinks=EVERY_SINK_TYPE,
            terminationGracePeriodSeconds=40,
            extraEnv=[{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
            extraVolumes=[{"name": "ca", "configMap": {"name": "corporate-ca"}}],
            extraVolumeMounts=[{"name": "ca", "mountPath": "/etc/ssl/corporate"}],
        ),
        existing_secret={
            "asana": "asana-token-3",
            "splunk-hec-token": "hec-1111",
            "sumo-url": SUMO_URL,
            "collector-auth": "Bearer abc",
        },
        kinds=frozenset({"ConfigMap", "Service", "ServiceAccount", "StatefulSet"}),
    ),
}


@pytest.fixture(params=sorted(SCENARIOS), ids=str)
def scenario(request: pytest.FixtureRequest) -> Scenario:
    return SCENARIOS[request.param]


# -- lint and schemas --------------------------------------------------------


def test_chart_lints_clean_with_each_scenario(scenario: Scenario) -> None:
    """``helm lint`` reports no error and no warning for any scenario."""
    report = helm().lint(CHART, scenario.values)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [], report
    assert problems == [], report


def test_lint_without_the_required_values_names_them() -> None:
    """The chart has no usable default workspace: linting it bare fails and
    names asana.workspaceGid."""
    report = helm().lint(CHART)
    assert report["errors"], report
    assert any("/asana/workspaceGid" in error for error in report["errors"])


def test_every_manifest_validates_against_kubernetes(scenario: Scenario) -> None:
    """Every rendered object validates strictly (unknown fields rejected)
    against Kubernetes 1.31's schemas; the operator's custom resources have
    the structure the operator reads."""
    validator = kubernetes_validate()
    documents = manifests(render(scenario.values))
    assert {doc["kind"] for doc in documents} == scenario.kinds
    for document in documents:
        assert document["metadata"]["namespace"] == NAMESPACE
        if document["kind"] in CRD_KINDS:
            check_custom_resource(document)
            continue
        validator.validate(document, KUBERNETES_VERSION, strict=True)


def test_a_manifest_kubernetes_would_refuse_fails_validation() -> None:
    """The validation is not a formality: a misspelt field fails it."""
    validator = kubernetes_validate()
    statefulset = one(manifests(render(with_required())), "StatefulSet")
    statefulset["spec"]["replica"] = 1
    with pytest.raises(validator.ValidationError):
        validator.validate(statefulset, KUBERNETES_VERSION, strict=True)


def check_custom_resource(document: dict[str, Any]) -> None:
    assert document["apiVersion"] == "monitoring.coreos.com/v1"
    if document["kind"] == "ServiceMonitor":
        spec = document["spec"]
        assert set(spec) == {"selector", "namespaceSelector", "endpoints"}
        assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        (endpoint,) = spec["endpoints"]
        assert set(endpoint) <= {
            "port",
            "path",
            "interval",
            "scrapeTimeout",
            "relabelings",
        }
        for relabeling in endpoint["relabelings"]:
            assert set(relabeling) <= {"targetLabel", "replacement", "sourceLabels"}
    else:
        (group,) = document["spec"]["groups"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
            assert isinstance(rule["expr"], str)


# -- the configuration -------------------------------------------------------


def secret_files(documents: list[dict[str, Any]], scenario: Scenario) -> dict[str, str]:
    """The files the pod sees under SECRET_DIR: every key of its Secret."""
    created = [doc for doc in documents if doc["kind"] == "Secret"]
    if not created:
        return dict(scenario.existing_secret)
    (secret,) = created
    return {
        key: base64.b64decode(value).decode() for key, value in secret["data"].items()
    }


def localized(text: str, root: Path, secrets: dict[str, str]) -> str:
    """The configuration with the pod's paths moved under ``root``, the
    Secret's keys written there as files (``file:`` secrets are read when
    the configuration is validated)."""
    (root / "secrets").mkdir()
    (root / "state").mkdir()
    for key, value in secrets.items():
        (root / "secrets" / key).write_text(value)
    return text.replace(SECRET_DIR, str(root / "secrets")).replace(
        STATE_DIR, str(root / "state")
    )


def test_rendered_config_passes_check_config(
    scenario: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The config.toml in the ConfigMap, with the pod's Secret files in
    place, passes ``asana-audit-forwarder check-config``."""
    documents = manifests(render(scenario.values))
    text = localized(
        config_text(documents), tmp_path, secret_files(documents, scenario)
    )
    path = tmp_path / "config.toml"
    path.write_text(text)

    assert cli.main(["check-config", "--config", str(path)]) == 0
    assert "is valid" in capsys.readouterr().out


def test_the_schema_offers_the_sink_types_and_formats_the_daemon_has() -> None:
    """values.schema.json accepts exactly the sink types and formats the
    forwarder's configuration accepts."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    sink = schema["definitions"]["sink"]["properties"]
    formats = get_args(SinkBaseConfig.model_fields["format"].annotation)

    assert sorted(sink["type"]["enum"]) == sorted(SINK_TYPES)
    assert sorted(sink["format"]["enum"]) == sorted(formats)


def test_check_config_refuses_a_config_whose_token_file_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The check above can fail: without the Secret's file the rendered
    configuration is refused, naming source.token."""
    text = localized(config_text(manifests(render(with_required()))), tmp_path, {})
    path = tmp_path / "config.toml"
    path.write_text(text)

    assert cli.main(["check-config", "--config", str(path)]) == 2
    assert "source.token" in capsys.readouterr().err


def test_rendered_config_carries_the_values_unchanged(scenario: Scenario) -> None:
    """Sinks and config sections come out of the TOML exactly as they went
    into the values; the chart adds only the keys it owns."""
    values = scenario.values
    config = tomllib.loads(config_text(manifests(render(values))))
    token_key = values["asana"].get("tokenKey", "token")

    assert config["sinks"] == values.get("sinks", [default_sink()])
    overrides = values.get("config", {})
    assert config["source"] == {
        "workspace_gid": WORKSPACE,
        "token": f"file:{SECRET_DIR}/{token_key}",
        **overrides.get("source", {}),
    }
    assert config["state"] == {"directory": STATE_DIR}
    assert config["server"] == {
        "listen": f"0.0.0.0:{METRICS_PORT}",
        **overrides.get("server", {}),
    }
    assert config["log"] == overrides.get("log", {"level": "info", "format": "json"})
    assert config.get("daemon", {}) == overrides.get("daemon", {})


def default_sink() -> dict[str, Any]:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    (sink,) = values["sinks"]
    return dict(sink)


def values_text() -> st.SearchStrategy[str]:
    # C1 controls and noncharacters are not printable YAML: no YAML document
    # (so no ConfigMap) can carry them raw. JSON escapes everything else
    # that TOML or YAML would refuse, and the chart escapes DEL.
    return st.text(
        st.characters(
            exclude_categories=["Cs"],
            exclude_characters=[chr(c) for c in range(0x80, 0xA0)]
            + ["\ufffe", "\uffff"],
        ),
        max_size=12,
    )


SCALARS = st.one_of(
    values_text(),
    st.integers(-(2**53) + 1, 2**53 - 1),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
)
TOML_VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=4))
SINK_EXTRAS = st.dictionaries(
    values_text().map(lambda key: f"x{key}"),
    st.one_of(
        TOML_VALUES,
        st.dictionaries(values_text(), TOML_VALUES, min_size=1, max_size=3),
    ),
    max_size=5,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(extras=SINK_EXTRAS)
def test_any_sink_value_renders_into_toml_that_reads_back_the_same(
    extras: dict[str, Any],
) -> None:
    """Whatever strings (quotes, backslashes, newlines, unicode), numbers,
    booleans, lists and tables a sink's values hold, the ConfigMap's TOML
    reads back to the same values."""
    sink = {"name": "s", "type": "stdout", **extras}
    config = tomllib.loads(config_text(manifests(render(with_required(sinks=[sink])))))
    assert as_helm_sees(config["sinks"]) == as_helm_sees([sink])


def as_helm_sees(value: Any) -> Any:
    """Helm holds every number as a float64 (and writes a whole one without
    a fraction, as TOML integers should be): compare numbers as floats."""
    if isinstance(value, dict):
        return {key: as_helm_sees(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_helm_sees(item) for item in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


# -- install-time errors -----------------------------------------------------


BAD_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "workspace gid as a number": (
        {"asana": {"workspaceGid": 1204000000000001, "token": "t"}},
        "/asana/workspaceGid",
    ),
    "workspace gid missing": ({"asana": {"token": "t"}}, "/asana/workspaceGid"),
    "unknown sink type": (
        with_required(sinks=[{"name": "k", "type": "kafka"}]),
        "/sinks/0/type",
    ),
    "misspelt config key": (
        with_required(config={"source": {"poll_intervall": "5s"}}),
        "poll_intervall",
    ),
    "duration without a unit": (
        with_required(config={"daemon": {"shutdown_grace": "10 seconds"}}),
        "/config/daemon/shutdown_grace",
    ),
    "chart-owned key in config": (
        with_required(config={"server": {"listen": "127.0.0.1:9464"}}),
        "listen",
    ),
    "sink value of a list of tables": (
        with_required(sinks=[{"name": "s", "type": "stdout", "x": [{"a": 1}]}]),
        "/sinks/0/x",
    ),
    "no token at all": (
        {"asana": {"workspaceGid": WORKSPACE}},
        "asana.token or asana.existingSecret",
    ),
    "file sink on the read-only root": (
        with_required(sinks=[{"name": "f", "type": "file", "path": "/data/a.jsonl"}]),
        "sinks[0].path",
    ),
    "two sinks of one name": (
        with_required(
            sinks=[{"name": "a", "type": "stdout"}, {"name": "a", "type": "stdout"}]
        ),
        "sinks[1].name",
    ),
    "replicas cannot be set": (with_required(replicas=2), "replicas"),
    "extra secrets beside an existing secret": (
        with_required(asana={"existingSecret": "creds"}, extraSecrets={"k": "v"}),
        "extraSecrets",
    ),
    "extra secret named like the token": (
        with_required(extraSecrets={"token": "v"}),
        "extraSecrets.token",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES), ids=str)
def test_a_wrong_value_fails_install_with_a_message_naming_it(case: str) -> None:
    """A wrong value stops the install with an error that names it."""
    values, named = BAD_VALUES[case]
    with pytest.raises(helm().HelmError) as failure:
        render(values)
    assert named in str(failure.value)


# -- what the manifests promise ---------------------------------------------


def test_one_pod_with_its_state_on_a_claim_under_restricted_security() -> None:
    """One replica, state on a volumeClaimTemplate, probes on /healthz and
    /readyz, and the restricted Pod Security settings."""
    documents = manifests(render(with_required()))
    statefulset = one(documents, "StatefulSet")
    spec = statefulset["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]

    assert spec["replicas"] == 1
    assert spec["volumeClaimTemplates"][0]["metadata"]["name"] == "state"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["state"]["mountPath"] == STATE_DIR
    assert mounts["secrets"]["mountPath"] == SECRET_DIR
    assert f"{mounts['config']['mountPath']}/config.toml" == CONFIG_PATH
    assert container["args"] == ["run", "--config", CONFIG_PATH]
    assert {"name": "TMPDIR", "value": "/tmp"} in container["env"]
    assert mounts["tmp"]["mountPath"] == "/tmp"

    assert container["ports"] == [
        {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}
    ]
    assert container["livenessProbe"]["httpGet"] == {
        "path": "/healthz",
        "port": "metrics",
    }
    assert container["readinessProbe"]["httpGet"] == {
        "path": "/readyz",
        "port": "metrics",
    }
    assert container["resources"]["limits"]["memory"]

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False


def test_the_token_file_the_config_names_is_the_mounted_secret_key() -> None:
    """source.token names the file the Secret volume puts there, for the
    created and for an existing Secret."""
    for values, secret_name in (
        (with_required(), FULLNAME),
        (
            with_required(asana={"existingSecret": "creds", "tokenKey": "pat"}),
            "creds",
        ),
    ):
        documents = manifests(render(values))
        config = tomllib.loads(config_text(documents))
        pod = one(documents, "StatefulSet")["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        key = values["asana"].get("tokenKey", "token")
        assert config["source"]["token"] == f"file:{SECRET_DIR}/{key}"
        assert volumes["secrets"]["secret"]["secretName"] == secret_name
        created = [d for d in documents if d["kind"] == "Secret"]
        if secret_name == FULLNAME:
            assert set(created[0]["data"]) == {"token"}
        else:
            assert created == []


def test_a_config_change_restarts_the_pod() -> None:
    """The pod template carries the configuration's checksum, so a changed
    value rolls the pod."""

    def checksum(values: dict[str, Any]) -> str:
        statefulset = one(manifests(render(values)), "StatefulSet")
        annotation: str = statefulset["spec"]["template"]["metadata"]["annotations"][
            "checksum/config"
        ]
        return annotation

    before = checksum(with_required())
    assert checksum(with_required()) == before
    assert checksum(with_required(config={"log": {"level": "debug"}})) != before


def test_network_policy_allows_only_dns_asana_and_the_sinks_ports() -> None:
    """Egress is limited to DNS, TCP 443 and the ports read from the sinks'
    addresses plus sinkPorts; ingress to the metrics port."""
    values = SCENARIOS["network_policy_with_sinks"].values
    policy = one(manifests(render(values)), "NetworkPolicy")["spec"]
    ports = {
        (port["port"], port["protocol"])
        for rule in policy["egress"]
        for port in rule["ports"]
    }
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert ports == {
        (53, "UDP"),
        (53, "TCP"),
        (443, "TCP"),
        (8088, "TCP"),  # splunk_hec url
        (6514, "TCP"),  # syslog tcp:// address
        (9997, "TCP"),  # sinkPorts
    }
    (ingress,) = policy["ingress"]
    assert ingress["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert ingress["from"] == values["networkPolicy"]["metricsFrom"]


def test_service_monitor_scrapes_the_service_as_the_alerts_job() -> None:
    """The ServiceMonitor selects the Service's metrics port and labels the
    series job="asana-audit-forwarder" (what the alert rules select) and
    with the workspace."""
    documents = manifests(render(SCENARIOS["prometheus_operator"].values))
    monitor = one(documents, "ServiceMonitor")
    service = one(documents, "Service")
    (endpoint,) = monitor["spec"]["endpoints"]
    labels = service["metadata"]["labels"]

    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert service["spec"]["publishNotReadyAddresses"] is True
    relabeled = {r["targetLabel"]: r["replacement"] for r in endpoint["relabelings"]}
    assert relabeled == {"job": "asana-audit-forwarder", "workspace": WORKSPACE}
    assert 'job="asana-audit-forwarder"' in ALERTS.read_text()


def test_prometheus_rule_carries_the_alert_rules_of_ops() -> None:
    """The PrometheusRule holds exactly ops/prometheus/alerts.yaml, and the
    chart's copy of that file is identical to it."""
    documents = manifests(render(SCENARIOS["prometheus_operator"].values))
    rule = one(documents, "PrometheusRule")

    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())
    assert (CHART / "files" / "alerts.yaml").read_bytes() == ALERTS.read_bytes()


def test_notes_tell_how_to_watch_and_reset() -> None:
    """NOTES.txt names the pod, the claim and the state commands."""
    notes = render(with_required())["asana-audit-forwarder/templates/NOTES.txt"]
    assert f"{FULLNAME}-0" in notes
    assert f"state-{FULLNAME}-0" in notes
    assert "state show" in notes
    assert "docs/operations.md" in notes


def iter_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from iter_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from iter_strings(item)


def test_no_manifest_but_the_secret_holds_the_token() -> None:
    """The created Secret is the only place the token appears."""
    token = "asana-token-that-must-not-leak"
    documents = manifests(render(with_required(asana={"token": token})))
    for document in documents:
        text = "\n".join(iter_strings(document))
        if document["kind"] == "Secret":
            continue
        assert token not in text, document["kind"]
    assert not re.search(token, yaml.safe_dump(one(documents, "ConfigMap")))


def test_the_documented_reset_pod_mounts_what_the_forwarder_mounts() -> None:
    """The one-off pod of docs/operations.md ("Reset a checkpoint in
    Kubernetes") is a valid Pod that mounts the release's claim, ConfigMap
    and Secret where the forwarder's pod has them, and runs state reset."""
    docs = (PROJECT / "docs" / "operations.md").read_text()
    (manifest,) = re.findall(r"apply -f - <<EOF\n(.*?)\nEOF\n", docs, re.S)
    documents = manifests(render(with_required()))
    pod_spec = one(documents, "StatefulSet")["spec"]["template"]["spec"]
    # The kubectl look-ups, answered as they would be for this release.
    manifest = re.sub(
        r"\$\(kubectl [^\n]*?'\)",
        lambda m: FULLNAME if "secretName" in m.group() else "forwarder:0.1.0",
        manifest,
    )
    pod = yaml.safe_load(manifest.replace("$NAME", FULLNAME))

    kubernetes_validate().validate(pod, KUBERNETES_VERSION, strict=True)
    (container,) = pod["spec"]["containers"]
    (forwarder,) = pod_spec["containers"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    expected = {m["name"]: m["mountPath"] for m in forwarder["volumeMounts"]}
    assert container["args"][:4] == ["state", "reset", "--config", CONFIG_PATH]
    for mount in container["volumeMounts"]:
        assert expected[mount["name"]] == mount["mountPath"]
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == (
        f"state-{FULLNAME}-0"
    )
    assert (
        volumes["config"]["configMap"]["name"]
        == one(documents, "ConfigMap")["metadata"]["name"]
    )
    assert volumes["secrets"]["secret"]["secretName"] == FULLNAME
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001
