"""Invalid configurations: every key of every section and every sink type,
wrong in each way that applies, is reported with exactly its key path and a
problem an operator can read.

The cases are generated from the pydantic models (each section's
``model_fields``, each member of the sink union), so a key or a sink type
added later is covered without editing this file. A new *required* key
needs a valid sample in ``REQUIRED_SAMPLES``; the baseline test says so.
"""

from __future__ import annotations

import copy
import math
import re
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, BeforeValidator
from pydantic.fields import FieldInfo

import forwarder.secrets
from forwarder.config import SINK_TYPES, Config, SinkConfig, load_config, parse_config
from forwarder.errors import ConfigError

SINK_MODELS: tuple[type[BaseModel], ...] = get_args(get_args(SinkConfig)[0])

# A valid value for each required key, to build the smallest valid documents.
REQUIRED_SAMPLES: dict[str, Any] = {
    "workspace_gid": "1111",
    "token": "config-test-token",
    "name": "second",
    "path": "/var/log/asana/audit.jsonl",
    "url": "https://receiver.example/ingest",
    "address": "tcp://127.0.0.1:514",
}

# What pydantic says in its own terms; an operator cannot act on it.
PYDANTIC_INTERNALS = re.compile(
    r"union_tag|model_type|model_attributes_type|<class |instance of \w+"
    r"|object to extract fields|function-(?:after|before|wrap|plain)|\[type="
    r"|pydantic|Value error,|tagged-union",
    re.IGNORECASE,
)

MISSING = object()


@pytest.fixture(autouse=True)
def _forget_test_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every secret a configuration resolves is blanked out of all later log
    lines of the process; random values (such as "0000") must not leak into
    the logs of other tests."""
    known = set(forwarder.secrets._known_secrets)
    monkeypatch.setattr(forwarder.secrets, "_known_secrets", known)


# -- the models, walked ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Place:
    """A section of the document: where it sits and the model that reads it.
    Sinks sit at index 1, after a valid stdout sink, so that keys prove the
    index is right."""

    path: tuple[str | int, ...]
    model: type[BaseModel]
    sink: type[BaseModel] | None

    @property
    def key(self) -> str:
        return key_of(self.path)

    @property
    def label(self) -> str:
        if self.sink is None:
            return self.key or "(top)"
        return self.key.replace("sinks[1]", f"sinks[1]({sink_type(self.sink)})", 1)


@dataclass(frozen=True, slots=True)
class Shape:
    """A field's type without Optional and Annotated, and its constraints."""

    base: Any
    metadata: tuple[Any, ...]
    required: bool

    @property
    def validators(self) -> list[Any]:
        return [m.func for m in self.metadata if isinstance(m, BeforeValidator)]

    def constraint(self, name: str) -> Any:
        return next((getattr(m, name) for m in self.metadata if hasattr(m, name)), None)


def key_of(path: tuple[str | int, ...]) -> str:
    key = ""
    for part in path:
        if isinstance(part, int):
            key += f"[{part}]"
        else:
            key += f".{part}" if key else part
    return key


def sink_type(model: type[BaseModel]) -> str:
    (value,) = get_args(model.model_fields["type"].annotation)
    return str(value)


def shape_of(field: FieldInfo) -> Shape:
    annotation: Any = field.annotation
    metadata = list(field.metadata)
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            annotation = members[0]
    while get_origin(annotation) is Annotated:
        annotation, *extra = get_args(annotation)
        for item in extra:
            metadata.extend(item.metadata if isinstance(item, FieldInfo) else [item])
    return Shape(annotation, tuple(metadata), field.is_required())


def section_model(field: FieldInfo) -> type[BaseModel] | None:
    base = shape_of(field).base
    if isinstance(base, type) and issubclass(base, BaseModel):
        return base
    return None


def kind_of(shape: Shape) -> str:
    base = shape.base
    if isinstance(base, type) and issubclass(base, BaseModel):
        return "section"
    origin = get_origin(base)
    if origin is list:
        return "list"
    if origin is dict:
        return "dict"
    if origin is Literal:
        return "literal"
    if base is bool:
        return "bool"
    if base is int and not shape.validators:
        return "int"
    return "scalar"


def places() -> Iterator[Place]:
    yield from _nested(Place((), Config, None))
    for sink in SINK_MODELS:
        yield from _nested(Place(("sinks", 1), sink, sink))


def _nested(place: Place) -> Iterator[Place]:
    yield place
    for name, field in place.model.model_fields.items():
        model = section_model(field)
        if model is not None:
            yield from _nested(Place((*place.path, name), model, place.sink))


# -- documents ------------------------------------------------------------------


def minimal(model: type[BaseModel]) -> dict[str, Any]:
    """The smallest valid section of ``model``: its required keys only."""
    document: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if not field.is_required() or name == "sinks":
            continue
        if name == "type":
            document[name] = sink_type(model)
        elif section_model(field) is not None:
            document[name] = minimal(section_model(field))  # type: ignore[arg-type]
        else:
            assert name in REQUIRED_SAMPLES, f"add a valid sample for {name!r}"
            document[name] = REQUIRED_SAMPLES[name]
    return document


def base_document(sink: type[BaseModel] | None) -> dict[str, Any]:
    document = minimal(Config)
    # The one key whose valid sample is built here: a stdout sink first.
    document["sinks"] = [{"name": "first", "type": "stdout"}]
    if sink is not None:
        document["sinks"].append(minimal(sink))
    return document


def section_in(document: dict[str, Any], path: tuple[str | int, ...]) -> Any:
    node: Any = document
    for part in path:
        node = node[part] if isinstance(part, int) else node.setdefault(part, {})
    return node


def problems_of(document: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_config(document)
    return caught.value.problems


def readable(problem: str) -> bool:
    return bool(problem.strip()) and PYDANTIC_INTERNALS.search(problem) is None


# -- the cases --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Case:
    id: str
    document: dict[str, Any]
    key: str
    fragment: str


@dataclass(frozen=True, slots=True)
class Wrong:
    label: str
    value: Any
    fragment: str = ""


def wrongs(name: str, shape: Shape) -> Iterator[Wrong]:
    """Each kind of wrongness that applies to a key of this shape."""
    kind = kind_of(shape)
    yield Wrong("wrong_type", WRONG_TYPE[kind])
    yield from _out_of_range(shape)
    pattern = shape.constraint("pattern")
    if pattern is not None:
        yield Wrong("pattern", "not valid here", "should match")
    if kind == "scalar" and (shape.required or pattern is not None):
        yield Wrong("empty", "")
    if kind == "literal":
        allowed = get_args(shape.base)
        yield Wrong("unknown_value", "no-such-value", repr(allowed[0]))
    if shape.required:
        yield Wrong("missing", MISSING, "required key is missing")


WRONG_TYPE: dict[str, Any] = {
    "section": "not a table",
    "list": "user_*",
    "dict": "not a table",
    "bool": "maybe",
    "int": "many",
    "literal": 5,
    "scalar": [1, 2],
}


def _out_of_range(shape: Shape) -> Iterator[Wrong]:
    bounds = (
        ("ge", -1, "greater than or equal"),
        ("gt", 0, "greater than"),
        ("le", 1, "less than or equal"),
        ("lt", 0, "less than"),
    )
    for name, step, fragment in bounds:
        limit = shape.constraint(name)
        if limit is not None:
            yield Wrong(f"{name}_{limit}", limit + step, fragment)
    if (shape.constraint("min_length") or 0) >= 1 and kind_of(shape) == "list":
        yield Wrong("too_short", [], "at least")


def cases() -> Iterator[Case]:
    for place in places():
        for name, field in place.model.model_fields.items():
            yield from _cases_for(place, name, shape_of(field))


def _cases_for(place: Place, name: str, shape: Shape) -> Iterator[Case]:
    key = key_of((*place.path, name))
    label = f"{place.label}.{name}" if place.label != "(top)" else name
    if name == "type" and place.sink is not None:
        # The discriminator's problems concern the sink as a whole.
        for value in (MISSING, "carrier-pigeon"):
            document = _with(place, name, value)
            tag = "missing" if value is MISSING else "unknown_value"
            yield Case(f"{label}:{tag}", document, place.key, "type")
        return
    for wrong in wrongs(name, shape):
        document = _with(place, name, wrong.value)
        yield Case(f"{label}:{wrong.label}", document, key, wrong.fragment)
    neighbour = f"{name}x"
    document = _with(place, neighbour, "anything")
    yield Case(
        f"{label}:unknown_key_next_to_it",
        document,
        key_of((*place.path, neighbour)),
        "unknown key",
    )


def _with(place: Place, name: str, value: Any) -> dict[str, Any]:
    document = copy.deepcopy(base_document(place.sink))
    section = section_in(document, place.path)
    if value is MISSING:
        section.pop(name, None)
    else:
        section[name] = value
    return document


def _params() -> list[Any]:
    return [
        pytest.param(
            case,
            id=case.id,
        )
        for case in cases()
    ]


# -- tests ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sink", [None, *SINK_MODELS], ids=lambda m: getattr(m, "__name__", "no sink")
)
def test_the_generated_baseline_documents_are_valid(
    sink: type[BaseModel] | None,
) -> None:
    """Every wrong document below differs from a valid one by one key, so a
    problem it raises is that key's."""
    config = parse_config(base_document(sink))
    assert len(config.sinks) == (1 if sink is None else 2)


def test_every_sink_type_and_section_has_cases() -> None:
    """The generation covers each sink type of the union and each section:
    a sink type added to the configuration is tested without a new case."""
    generated = {case.id.split(":")[0] for case in cases()}
    for kind in SINK_TYPES:
        assert any(f"({kind})" in label for label in generated), kind
    for section in ("source", "source.filters", "state", "server", "log", "daemon"):
        assert any(label.startswith(f"{section}.") for label in generated), section
    assert any(".delivery." in label for label in generated)


@pytest.mark.parametrize("case", _params())
def test_each_wrong_key_is_named_with_a_readable_problem(case: Case) -> None:
    """A key that is wrong in any way is reported once, under exactly its
    path, with a problem in the operator's terms."""
    found = problems_of(case.document)

    assert [key for key, _ in found] == [case.key], found
    problem = found[0][1]
    assert case.fragment.lower() in problem.lower(), problem
    assert readable(problem), problem


def _document(**changes: Any) -> dict[str, Any]:
    """A valid document with a splunk_hec sink at index 1, then ``changes``
    (dotted keys) applied."""
    sink = next(m for m in SINK_MODELS if sink_type(m) == "splunk_hec")
    document = base_document(sink)
    for dotted, value in changes.items():
        *parents, name = dotted.split(".")
        node: Any = document
        for part in parents:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        node[name] = value
    return document


def _syslog(**settings: Any) -> dict[str, Any]:
    document = base_document(None)
    document["sinks"].append(
        {"name": "second", "type": "syslog", "address": "tcp://127.0.0.1:514"}
        | settings
    )
    return document


def _path_sink(**settings: Any) -> dict[str, Any]:
    document = base_document(None)
    document["sinks"].append(
        {"name": "second", "type": "http", "url": "https://r.example/x"} | settings
    )
    return document


@pytest.mark.parametrize(
    ("document", "key", "fragment"),
    [
        pytest.param(
            _document(**{"source.token": "env:FORWARDER_BAD_INPUT_UNSET"}),
            "source.token",
            "FORWARDER_BAD_INPUT_UNSET is not set",
            id="secret_env_unset",
        ),
        pytest.param(
            _document(**{"sinks.1.token": "file:/nonexistent/hec-token"}),
            "sinks[1].token",
            "cannot read secret file",
            id="secret_file_missing",
        ),
        pytest.param(
            _document(**{"sinks.1.url": "ftp://receiver.example/x"}),
            "sinks[1].url",
            "https://",
            id="sink_url_scheme",
        ),
        pytest.param(
            _document(**{"sinks.1.url": "https://"}),
            "sinks[1].url",
            "host",
            id="sink_url_without_host",
        ),
        pytest.param(
            _path_sink(headers={"X-Api-Key": 5}),
            "sinks[1].headers.X-Api-Key",
            "expected a string",
            id="http_header_value_not_text",
        ),
        pytest.param(
            _path_sink(headers={"Bad Header": "v"}),
            "sinks[1].headers",
            "not a valid header name",
            id="http_header_name",
        ),
        pytest.param(
            _path_sink(include_event_types=["user_*", 5]),
            "sinks[1].include_event_types[1]",
            "string",
            id="list_item_wrong_type",
        ),
        pytest.param(
            _syslog(address="tcp://127.0.0.1:99999"),
            "sinks[1].address",
            "out of range",
            id="syslog_port_out_of_range",
        ),
        pytest.param(
            _syslog(address="udp://127.0.0.1:514", framing="lf"),
            "sinks[1]",
            "framing",
            id="syslog_framing_over_udp",
        ),
        pytest.param(
            _syslog(facility=24),
            "sinks[1].facility",
            "out of range",
            id="syslog_facility_out_of_range",
        ),
        pytest.param(
            _document(**{"source.filters": {"actor_type": "user", "actor_gid": "7"}}),
            "source.filters",
            "actor_gid",
            id="filters_that_exclude_each_other",
        ),
        pytest.param(
            _document(**{"source.start_at": "2026-13-01T00:00:00Z"}),
            "source.start_at",
            "month",
            id="start_at_impossible_date",
        ),
        pytest.param(
            _document(**{"source.start_at": "2026-10-01T00:00:00"}),
            "source.start_at",
            "time zone",
            id="start_at_without_zone",
        ),
        pytest.param(
            _document(**{"sinks.1.fields": {"team": 5}}),
            "sinks[1].fields.team",
            "string",
            id="hec_indexed_field_value_wrong_type",
        ),
        pytest.param(
            {**base_document(None), "sinks": ["stdout"]},
            "sinks[0]",
            "table",
            id="sink_not_a_table",
        ),
        pytest.param(
            _document(**{"source.base_url": "ftp://app.asana.com/api/1.0"}),
            "source.base_url",
            "https://",
            id="base_url_scheme",
        ),
        pytest.param(
            _document(**{"source.ca_file": "/nonexistent/ca.pem"}),
            "source.ca_file",
            "/nonexistent/ca.pem",
            id="source_ca_file_missing",
        ),
        pytest.param(
            _document(**{"source.base_url": "https://"}),
            "source.base_url",
            "host",
            id="base_url_without_host",
        ),
        pytest.param(
            _document(**{"source.start_at": "9999999999d"}),
            "source.start_at",
            "",
            id="start_at_too_far_back",
        ),
        pytest.param(
            _document(**{"source.poll_interval": math.nan}),
            "source.poll_interval",
            "",
            id="duration_nan",
        ),
        pytest.param(
            _document(**{"daemon.shutdown_grace": math.inf}),
            "daemon.shutdown_grace",
            "",
            id="duration_inf",
        ),
        pytest.param(
            _document(**{"source.request_timeout": "0s"}),
            "source.request_timeout",
            "greater than",
            id="source_request_timeout_zero",
        ),
        pytest.param(
            _syslog(connect_timeout="0s"),
            "sinks[1].connect_timeout",
            "greater than",
            id="syslog_connect_timeout_zero",
        ),
        pytest.param(
            _syslog(write_timeout="0s"),
            "sinks[1].write_timeout",
            "greater than",
            id="syslog_write_timeout_zero",
        ),
        pytest.param(
            _document(**{"source.filters": {"event_type": ""}}),
            "source.filters.event_type",
            "",
            id="filter_empty",
        ),
        pytest.param(
            _path_sink(ca_file=""),
            "sinks[1].ca_file",
            "",
            id="ca_file_empty",
        ),
    ],
)
def test_wrong_values_beyond_the_generated_ones(
    document: dict[str, Any], key: str, fragment: str
) -> None:
    """Wrong values that need knowledge of the key (secrets, URLs, headers,
    addresses, combinations, timestamps) are named with a readable problem."""
    found = problems_of(document)

    assert [k for k, _ in found] == [key], found
    assert fragment.lower() in found[0][1].lower(), found
    assert readable(found[0][1]), found


def test_all_problems_are_reported_at_once() -> None:
    """One pass names every wrong key of every section and sink."""
    document = _document(
        **{
            "source.page_size": 0,
            "server.listen": "nowhere",
            "log.level": "loud",
            "sinks.1.max_request_events": 0,
            "sinks.1.colour": "blue",
        }
    )
    del document["sinks"][0]["type"]

    keys = {key for key, _ in problems_of(document)}

    assert keys == {
        "source.page_size",
        "server.listen",
        "log.level",
        "sinks[0]",
        "sinks[1].max_request_events",
        "sinks[1].colour",
    }


def test_a_toml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    """A file that is not TOML is reported under its path, with the line."""
    path = tmp_path / "forwarder.toml"
    path.write_text(
        '[source]\nworkspace_gid = "1111"\ntoken = "t0ken"\n\n[[sinks]\nname = "x"\n'
    )

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    ((key, problem),) = caught.value.problems
    assert key == str(path)
    assert "not valid TOML" in problem
    assert "line 5" in problem


def test_a_key_written_twice_names_the_file_and_line(tmp_path: Path) -> None:
    """TOML refuses a repeated key; the problem says where."""
    path = tmp_path / "forwarder.toml"
    path.write_text('[source]\nworkspace_gid = "1"\nworkspace_gid = "2"\n')

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    ((key, problem),) = caught.value.problems
    assert key == str(path)
    assert "line 3" in problem


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    """A path that cannot be read is reported as such, under the path."""
    path = tmp_path / "absent.toml"

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.problems[0][0] == str(path)
    assert "cannot read" in caught.value.problems[0][1]


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    """A configuration saved in another encoding is reported under its path."""
    path = tmp_path / "forwarder.toml"
    path.write_bytes('[source]\nworkspace_gid = "1111" # caf\xe9\n'.encode("latin-1"))

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.problems[0][0] == str(path)


def test_a_start_at_without_zone_is_refused_in_toml_too(tmp_path: Path) -> None:
    """An unquoted TOML date-time without an offset is refused like the
    quoted one, instead of being read in whatever zone the host is in."""
    path = tmp_path / "forwarder.toml"
    path.write_text(
        '[source]\nworkspace_gid = "1111"\ntoken = "t0ken-value"\n'
        "start_at = 2026-10-01T00:00:00\n\n"
        '[[sinks]]\nname = "out"\ntype = "stdout"\n'
    )

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert [key for key, _ in caught.value.problems] == ["source.start_at"]


# -- property: whatever a key holds, the outcome names that key ---------------------

FIELDS = [(place, name) for place in places() for name in place.model.model_fields]
# timedelta cannot hold these: the OverflowError bug pinned above.
_TOO_FAR_BACK = re.compile(r"^\s*\d{9,}")

values = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    st.text(max_size=30),
    st.lists(st.text(max_size=10), max_size=3),
    st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3),
)


def _related(key: str, target: str) -> bool:
    """``key`` is ``target``, inside it, or a section that holds it."""
    inside = key.startswith((f"{target}.", f"{target}["))
    return key == target or inside or target.startswith((f"{key}.", f"{key}["))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(FIELDS), values)
def test_any_value_of_any_key_is_accepted_or_named(
    field: tuple[Place, str], value: Any
) -> None:
    """Whatever value any key holds, the configuration either loads or is
    refused with ConfigError naming that key (or the section that holds it):
    never another exception, never a problem somewhere else."""
    place, name = field
    assume(
        not (
            name == "start_at" and isinstance(value, str) and _TOO_FAR_BACK.match(value)
        )
    )
    document = _with(place, name, value)
    target = key_of((*place.path, name))
    try:
        parse_config(document)
    except ConfigError as error:
        for key, problem in error.problems:
            assert _related(key, target), (key, target)
            assert problem.strip()
