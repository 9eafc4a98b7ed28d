"""``ocsf``: each audit event as an OCSF 1.5.0 event of the fitting class.

The mapping (which event type becomes which class and activity, and where
each source field goes) is documented in docs/ocsf.md; the table there is
checked against ``DOCUMENTED_RULES`` by the tests. Severity is not this
module's: ``severity_id`` is ``forwarder.formats.severity``'s rating, the
same one syslog, CEF and LEEF carry.

An event with missing or wrong-typed fields still renders as a valid OCSF
event: a field that cannot be placed is kept as it came in ``unmapped``, and
a target object OCSF requires but the event lacks gets the name "Unknown".
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from forwarder.formats.jsonbytes import dumps
from forwarder.formats.severity import rate_event
from forwarder.timestamps import parse_timestamp

if TYPE_CHECKING:
    from forwarder.formats import EventContext

OCSF_VERSION = "1.5.0"

ACCOUNT_CHANGE = 3001
AUTHENTICATION = 3002
ENTITY_MANAGEMENT = 3004
USER_ACCESS = 3005
GROUP_MANAGEMENT = 3006

SUCCESS = 1
FAILURE = 2

OTHER = 99

CLASS_NAMES = {
    ACCOUNT_CHANGE: "Account Change",
    AUTHENTICATION: "Authentication",
    ENTITY_MANAGEMENT: "Entity Management",
    USER_ACCESS: "User Access Management",
    GROUP_MANAGEMENT: "Group Management",
}
CATEGORY_NAMES = {3: "Identity & Access Management"}
# The OCSF captions of the activities this format emits, per class.
ACTIVITY_NAMES: dict[int, dict[int, str]] = {
    ACCOUNT_CHANGE: {
        1: "Create",
        2: "Enable",
        3: "Password Change",
        4: "Password Reset",
        5: "Disable",
        6: "Delete",
        10: "MFA Factor Enable",
        11: "MFA Factor Disable",
        OTHER: "Other",
    },
    AUTHENTICATION: {1: "Logon", 2: "Logoff", OTHER: "Other"},
    ENTITY_MANAGEMENT: {
        1: "Create",
        2: "Read",
        3: "Update",
        4: "Delete",
        8: "Enable",
        9: "Disable",
        OTHER: "Other",
    },
    USER_ACCESS: {1: "Assign Privileges", 2: "Revoke Privileges", OTHER: "Other"},
    GROUP_MANAGEMENT: {
        3: "Add User",
        4: "Remove User",
        5: "Delete",
        6: "Create",
        OTHER: "Other",
    },
}
# The OCSF captions of the severities forwarder.formats.severity rates with.
SEVERITY_NAMES = {1: "Informational", 2: "Low", 3: "Medium"}
STATUS_NAMES = {SUCCESS: "Success", FAILURE: "Failure"}


@dataclass(frozen=True, slots=True)
class Rule:
    """Where one event type goes. ``activity_id`` None: from the role values
    in ``details`` (User Access Management only)."""

    class_uid: int
    activity_id: int | None
    status_id: int | None = None


_AC, _AU, _EM = ACCOUNT_CHANGE, AUTHENTICATION, ENTITY_MANAGEMENT
_UA, _GM = USER_ACCESS, GROUP_MANAGEMENT

# Every type in forwarder/data/event_types.tsv, in its order.
DOCUMENTED_RULES: dict[str, Rule] = {
    # logins
    "user_login_succeeded": Rule(_AU, 1, SUCCESS),
    "user_login_failed": Rule(_AU, 1, FAILURE),
    "user_logged_out": Rule(_AU, 2, SUCCESS),
    # user updates
    "user_invited": Rule(_AC, 1),
    "user_deprovisioned": Rule(_AC, 5),
    "user_reprovisioned": Rule(_AC, 2),
    "user_forgot_password_started": Rule(_AC, 4),
    "user_password_reset": Rule(_AC, 4),
    "user_password_changed": Rule(_AC, 3),
    "user_two_factor_auth_enabled": Rule(_AC, 10),
    "user_two_factor_auth_disabled": Rule(_AC, 11),
    # admin settings
    "workspace_security_contact_email_changed": Rule(_EM, 3),
    "workspace_google_sso_settings_changed": Rule(_EM, 3),
    "workspace_saml_settings_changed": Rule(_EM, 3),
    "workspace_saml_url_changed": Rule(_EM, 3),
    "workspace_password_requirements_changed": Rule(_EM, 3),
    "workspace_force_password_reset": Rule(_EM, OTHER),
    "workspace_guest_invite_permissions_changed": Rule(_EM, 3),
    "workspace_file_attachment_options_changed": Rule(_EM, 3),
    "workspace_default_team_privacy_settings_changed": Rule(_EM, 3),
    "workspace_wide_reporting_enabled": Rule(_EM, 8),
    "workspace_wide_reporting_disabled": Rule(_EM, 9),
    "workspace_associated_email_domain_added": Rule(_EM, 1),
    "workspace_associated_email_domain_removed": Rule(_EM, 4),
    "workspace_require_two_factor_auth_enabled": Rule(_EM, 8),
    "workspace_require_two_factor_auth_disabled": Rule(_EM, 9),
    "workspace_app_recipient_emails_changed": Rule(_EM, 3),
    "workspace_view_links_enabled": Rule(_EM, 8),
    "workspace_view_links_disabled": Rule(_EM, 9),
    "workspace_default_session_duration_changed": Rule(_EM, 3),
    "workspace_announcement_created": Rule(_EM, 1),
    "workspace_announcement_removed": Rule(_EM, 4),
    "workspace_form_link_authentication_required_enabled": Rule(_EM, 8),
    "workspace_form_link_authentication_required_disabled": Rule(_EM, 9),
    "workspace_personal_access_token_enabled": Rule(_EM, 8),
    "workspace_personal_access_token_disabled": Rule(_EM, 9),
    "workspace_app_admin_approval_setting_changed": Rule(_EM, 3),
    "workspace_require_app_approvals_of_type_changed": Rule(_EM, 3),
    "workspace_form_is_embeddable_forms_enabled": Rule(_EM, 8),
    "workspace_form_is_embeddable_forms_disabled": Rule(_EM, 9),
    "workspace_logged_out_view_authentication_required_enabled": Rule(_EM, 8),
    "workspace_logged_out_view_authentication_required_disabled": Rule(_EM, 9),
    "workspace_baa_signed": Rule(_EM, OTHER),
    # roles
    "user_workspace_admin_role_changed": Rule(_UA, None),
    "user_division_admin_role_changed": Rule(_UA, None),
    # content export
    "workspace_export_started": Rule(_EM, 2),
    "search_report_export_started": Rule(_EM, 2),
    "workspace_teams_export_started": Rule(_EM, 2),
    "division_teams_export_started": Rule(_EM, 2),
    "workspace_members_export_started": Rule(_EM, 2),
    "project_csv_export_started": Rule(_EM, 2),
    "attachment_downloaded": Rule(_EM, 2),
    "workspace_attachment_export_started": Rule(_EM, 2),
    "object_export_started": Rule(_EM, 2),
    # access control
    "project_share_link_enabled": Rule(_EM, 8),
    "project_share_link_disabled": Rule(_EM, 9),
    "project_view_link_enabled": Rule(_EM, 8),
    "project_view_link_disabled": Rule(_EM, 9),
    "team_privacy_settings_changed": Rule(_EM, 3),
    "team_member_added": Rule(_GM, 3),
    "team_member_removed": Rule(_GM, 4),
    "project_member_added": Rule(_GM, 3),
    "project_member_removed": Rule(_GM, 4),
    "project_privacy_settings_changed": Rule(_EM, 3),
    "portfolio_member_added": Rule(_GM, 3),
    "portfolio_member_removed": Rule(_GM, 4),
    # apps
    "team_harvest_integration_enabled": Rule(_EM, 8),
    "team_harvest_integration_disabled": Rule(_EM, 9),
    "user_app_authorized": Rule(_EM, 1),
    "user_app_revoked": Rule(_EM, 4),
    "user_personal_access_token_authorized": Rule(_EM, 1),
    "user_personal_access_token_revoked": Rule(_EM, 4),
    "service_account_created": Rule(_AC, 1),
    "service_account_deleted": Rule(_AC, 6),
    "service_account_name_changed": Rule(_AC, OTHER),
    # creation
    "team_created": Rule(_GM, 6),
    "attachment_uploaded": Rule(_EM, 1),
    # deletion
    "task_deleted": Rule(_EM, 4),
    "task_permanently_deleted": Rule(_EM, 4),
    "task_undeleted": Rule(_EM, 3),
    "project_deleted": Rule(_EM, 4),
    "project_undeleted": Rule(_EM, 3),
    "portfolio_deleted": Rule(_EM, 4),
    "portfolio_undeleted": Rule(_EM, 3),
    "goal_deleted": Rule(_EM, 4),
    "goal_undeleted": Rule(_EM, 3),
    "custom_field_deleted": Rule(_EM, 4),
    "custom_field_undeleted": Rule(_EM, 3),
    "message_deleted": Rule(_EM, 4),
    "message_permanently_deleted": Rule(_EM, 4),
    "message_undeleted": Rule(_EM, 3),
    "team_deleted": Rule(_GM, 5),
    "team_undeleted": Rule(_GM, OTHER),
    "attachment_deleted": Rule(_EM, 4),
    "attachment_undeleted": Rule(_EM, 3),
    "comment_deleted": Rule(_EM, 4),
    "comment_undeleted": Rule(_EM, 3),
    "status_update_deleted": Rule(_EM, 4),
    "status_update_permanently_deleted": Rule(_EM, 4),
    "status_update_undeleted": Rule(_EM, 3),
    "task_template_deleted": Rule(_EM, 4),
    "task_template_undeleted": Rule(_EM, 3),
    "project_template_deleted": Rule(_EM, 4),
    "project_template_undeleted": Rule(_EM, 3),
}

# Suffix -> Entity Management activity, for types not in the table. First
# match wins: "_undeleted" must be tried before "_deleted".
VERB_ACTIVITIES: tuple[tuple[str, int], ...] = (
    ("_undeleted", 3),
    ("_restored", 3),
    ("_created", 1),
    ("_added", 1),
    ("_uploaded", 1),
    ("_deleted", 4),
    ("_removed", 4),
    ("_changed", 3),
    ("_updated", 3),
    ("_exported", 2),
    ("_export_started", 2),
    ("_viewed", 2),
    ("_downloaded", 2),
    ("_enabled", 8),
    ("_disabled", 9),
)
# The same verbs in Account Change's own activities.
_ACCOUNT_VERBS: tuple[tuple[str, int], ...] = (
    ("_created", 1),
    ("_invited", 1),
    ("_deleted", 6),
    ("_enabled", 2),
    ("_disabled", 5),
)


def _verb(event_type: str, verbs: tuple[tuple[str, int], ...]) -> int:
    return next((a for suffix, a in verbs if event_type.endswith(suffix)), OTHER)


def rule_for(event_type: str, category: str = "") -> Rule:
    """The rule for a type: the table's, or one guessed from the type's name
    and category for a type Asana added after the table was written."""
    documented = DOCUMENTED_RULES.get(event_type)
    if documented is not None:
        return documented
    section = category.casefold().replace("_", " ")
    if section == "logins" or event_type.startswith(("user_login", "user_logged")):
        return Rule(_AU, _logon_activity(event_type), _status(event_type))
    if event_type.endswith("_member_added"):
        return Rule(_GM, 3)
    if event_type.endswith("_member_removed"):
        return Rule(_GM, 4)
    if section == "roles" or event_type.endswith("_role_changed"):
        return Rule(_UA, None)
    if section == "user updates":
        return Rule(_AC, _verb(event_type, _ACCOUNT_VERBS))
    return Rule(_EM, _verb(event_type, VERB_ACTIVITIES))


def _logon_activity(event_type: str) -> int:
    if "logged_out" in event_type or "logout" in event_type:
        return 2
    if "login" in event_type or "logged_in" in event_type:
        return 1
    return OTHER


def _status(event_type: str) -> int | None:
    if event_type.endswith("_failed"):
        return FAILURE
    if event_type.endswith("_succeeded"):
        return SUCCESS
    return None


# Role values that hold no admin privilege (inferred: Asana does not document
# the values of old_value/new_value for role changes).
_NO_PRIVILEGE = frozenset({"", "none", "member", "guest"})


def _role_activity(details: Any) -> tuple[int, list[str]]:
    """Assign or revoke, and the role concerned, from the role change's values."""
    values = details if isinstance(details, dict) else {}
    old, new = values.get("old_value"), values.get("new_value")
    if isinstance(new, str) and new.casefold() not in _NO_PRIVILEGE:
        return 1, [new]
    if isinstance(old, str) and old.casefold() not in _NO_PRIVILEGE:
        return 2, [old]
    return OTHER, [new] if isinstance(new, str) else []


class _Fields:
    """One source object, remembering the keys that found a place in the
    output so that every other key ends up in ``unmapped``."""

    __slots__ = ("_raw", "_taken", "_values")

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._values: dict[str, Any] = raw if isinstance(raw, dict) else {}
        self._taken: set[str] = set()

    def peek(self, key: str) -> Any:
        return self._values.get(key)

    def take(self, key: str) -> None:
        self._taken.add(key)

    def text(self, key: str) -> str | None:
        value = self._values.get(key)
        if not isinstance(value, str):
            return None
        self._taken.add(key)
        return value

    def leftover(self) -> Any:
        """What was not placed: the other keys, or the whole value if it is
        not an object; None when nothing is left."""
        if not isinstance(self._raw, dict):
            return self._raw
        rest = {k: v for k, v in self._values.items() if k not in self._taken}
        return rest or None


# OCSF's email_t pattern, matched whole: an address OCSF would reject stays
# in ``unmapped`` rather than making the event invalid.
_EMAIL = re.compile(r"[a-zA-Z0-9!#$%&'*+-/=?^_`{|}~.]+@[a-zA-Z0-9-]+\.[a-zA-Z0-9-.]+")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)
# Asana actor_type -> OCSF user type_id and caption; others: Other (99).
_ACTOR_TYPES = {
    "user": (1, "User"),
    "external_administrator": (2, "Admin"),
    "asana": (3, "System"),
}
# Asana resource_type -> OCSF managed entity type_id; others: Other (99).
_ENTITY_TYPES = {"user": 2, "team": 3, "workspace": 4}
_UNKNOWN = "Unknown"
_SAML = 5


def _email(fields: _Fields) -> str | None:
    value = fields.peek("email")
    if isinstance(value, str) and _EMAIL.fullmatch(value):
        fields.take("email")
        return value
    return None


def _ip(fields: _Fields) -> str | None:
    value = fields.peek("client_ip_address")
    # A zone index ("%eth0") may hold text OCSF's ip_t pattern refuses.
    if not isinstance(value, str) or "%" in value:
        return None
    try:
        address = str(ipaddress.ip_address(value))
    except ValueError:
        return None
    fields.take("client_ip_address")
    return address


def _epoch_ms(text: Any) -> int | None:
    if not isinstance(text, str):
        return None
    try:
        moment = parse_timestamp(text)
    except (ValueError, OverflowError):
        return None
    return (moment - _EPOCH) // _MILLISECOND


def _detail(details: Any, key: str) -> Any:
    return details.get(key) if isinstance(details, dict) else None


def _identity(fields: _Fields, *, email: bool = True) -> dict[str, Any]:
    """uid, name and email_addr of an Asana actor or resource; empty when it
    has none. Takes from ``fields`` only what it returns."""
    found: dict[str, Any] = {}
    if (uid := fields.text("gid")) is not None:
        found["uid"] = uid
    if (name := fields.text("name")) is not None:
        found["name"] = name
    if email and (address := _email(fields)) is not None:
        found["email_addr"] = address
        # OCSF needs a uid or a name; the address is what the user signs in with.
        found.setdefault("name", address)
    return found


def _target_user(resource: _Fields) -> dict[str, Any]:
    kind = resource.peek("resource_type")
    user = _identity(resource) if kind in (None, "user") else {}
    if not user:
        return {"name": _UNKNOWN, "type_id": 0, "type": _UNKNOWN}
    if kind is not None:
        resource.take("resource_type")
    return user


def _named(
    resource: _Fields, identity: dict[str, Any], workspace_gid: str
) -> dict[str, Any]:
    """uid, name and type of the resource, for an OCSF entity or group."""
    found: dict[str, Any] = {
        key: identity[key] for key in ("uid", "name") if key in identity
    }
    kind = resource.text("resource_type")
    if kind == "workspace":
        # The only workspace an event can name is the one being polled.
        found.setdefault("uid", workspace_gid)
    if not found:
        found["name"] = _UNKNOWN
    if kind is not None:
        found["type"] = kind
    return found


def _entity(resource: _Fields, workspace_gid: str) -> dict[str, Any]:
    identity = _identity(resource)
    entity = _named(resource, identity, workspace_gid)
    kind = entity.get("type")
    if kind is not None:
        entity["type_id"] = _ENTITY_TYPES.get(kind, OTHER)
    if identity and (kind == "user" or "email_addr" in identity):
        entity["user"] = identity
    return entity


def _group(resource: _Fields, workspace_gid: str) -> dict[str, Any]:
    return _named(resource, _identity(resource, email=False), workspace_gid)


def _actor(actor: _Fields, context: _Fields) -> dict[str, Any]:
    found: dict[str, Any] = {}
    user = _identity(actor)
    if user:
        kind = actor.text("actor_type")
        if kind is not None:
            type_id, caption = _ACTOR_TYPES.get(kind, (OTHER, kind))
            user |= {"type_id": type_id, "type": caption}
        found["user"] = user
    if (app := context.text("oauth_app_name")) is not None:
        found["app_name"] = app
    return found


def _division(details: Any) -> dict[str, Any] | None:
    """The division a division admin role applies to, from details.group."""
    group = _detail(details, "group")
    if not isinstance(group, dict):
        return None
    keys = (("uid", "gid"), ("name", "name"), ("type", "resource_type"))
    found = {attr: group[key] for attr, key in keys if isinstance(group.get(key), str)}
    return found if "uid" in found or "name" in found else None


@dataclass(frozen=True, slots=True)
class _Source:
    """The event's parts, each remembering what was placed."""

    top: _Fields
    actor: _Fields
    resource: _Fields
    context: _Fields
    details: Any


@dataclass(frozen=True, slots=True)
class _Activity:
    rule: Rule
    activity_id: int
    name: str
    fields: dict[str, Any]


def _classify(source: _Source, event_type: str) -> _Activity:
    """The rule, the activity and its name, and the class's own fields."""
    category = source.top.peek("event_category")
    rule = rule_for(event_type, category if isinstance(category, str) else "")
    fields: dict[str, Any] = {}
    if rule.class_uid == USER_ACCESS:
        activity_id, privileges = _role_activity(source.details)
        fields["privileges"] = privileges
        if (division := _division(source.details)) is not None:
            fields["resource"] = division
    else:
        activity_id = OTHER if rule.activity_id is None else rule.activity_id
    name = ACTIVITY_NAMES[rule.class_uid][activity_id]
    if activity_id == OTHER and event_type:
        name = event_type
    return _Activity(rule, activity_id, name, fields)


def _target(rule: Rule, source: _Source, workspace_gid: str) -> dict[str, Any]:
    """The class's target object, built from the event's resource."""
    if rule.class_uid == ENTITY_MANAGEMENT:
        return {"entity": _entity(source.resource, workspace_gid)}
    if rule.class_uid == GROUP_MANAGEMENT:
        return {"group": _group(source.resource, workspace_gid)}
    target: dict[str, Any] = {"user": _target_user(source.resource)}
    if rule.class_uid == AUTHENTICATION:
        target["service"] = {"name": "Asana"}
        saml = _detail(source.details, "saml_response")
        if isinstance(saml, str) and saml:
            target |= {"auth_protocol_id": _SAML, "auth_protocol": "SAML"}
    return target


def _metadata(source: _Source, context: EventContext) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "version": OCSF_VERSION,
        "product": {"name": "Asana", "vendor_name": "Asana"},
        "log_provider": "Asana Audit Log API",
        "tenant_uid": context.workspace_gid,
    }
    for attribute, key in (
        ("uid", "gid"),
        ("original_time", "created_at"),
        ("event_code", "event_type"),
    ):
        if (value := source.top.text(key)) is not None:
            metadata[attribute] = value
    if (processed := _epoch_ms(context.received_at)) is not None:
        metadata["processed_time"] = processed
    return metadata


def _endpoint(context: _Fields) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if (ip := _ip(context)) is not None:
        found["src_endpoint"] = {"ip": ip}
    if (agent := context.text("user_agent")) is not None:
        found["http_request"] = {"user_agent": agent}
    return found


def _unmapped(source: _Source) -> dict[str, Any]:
    parts = {"actor": source.actor, "resource": source.resource}
    parts["context"] = source.context
    unmapped: dict[str, Any] = {}
    for key, value in (source.top.leftover() or {}).items():
        if key in parts:
            value = parts[key].leftover()
            if value is None:
                continue
        elif key == "details" and value in (None, {}):
            continue
        # details is kept whole even where a value of it is also mapped: it
        # is the only record of what Asana said about the change.
        unmapped[key] = value
    return unmapped


def to_ocsf(event: dict[str, Any], context: EventContext) -> dict[str, Any]:
    """The OCSF event for one Asana audit event, as a JSON-ready dict."""
    source = _Source(
        top=_Fields(event),
        actor=_Fields(event.get("actor")),
        resource=_Fields(event.get("resource")),
        context=_Fields(event.get("context")),
        details=event.get("details"),
    )
    raw_type = event.get("event_type")
    activity = _classify(source, raw_type if isinstance(raw_type, str) else "")
    rule, activity_id = activity.rule, activity.activity_id
    class_name = CLASS_NAMES[rule.class_uid]
    time = _epoch_ms(event.get("created_at"))
    severity_id = rate_event(event).ocsf
    ocsf: dict[str, Any] = {
        "class_uid": rule.class_uid,
        "class_name": class_name,
        "category_uid": rule.class_uid // 1000,
        "category_name": CATEGORY_NAMES[rule.class_uid // 1000],
        "activity_id": activity_id,
        "activity_name": activity.name,
        "type_uid": rule.class_uid * 100 + activity_id,
        "type_name": f"{class_name}: {ACTIVITY_NAMES[rule.class_uid][activity_id]}",
        # Without a usable created_at, when the forwarder read the event is
        # the closest known time.
        "time": time if time is not None else _epoch_ms(context.received_at) or 0,
        "severity_id": severity_id,
        "severity": SEVERITY_NAMES[severity_id],
        "metadata": _metadata(source, context),
    }
    if rule.status_id is not None:
        ocsf |= {"status_id": rule.status_id, "status": STATUS_NAMES[rule.status_id]}
    if actor := _actor(source.actor, source.context):
        ocsf["actor"] = actor
    ocsf |= _endpoint(source.context)
    ocsf |= _target(rule, source, context.workspace_gid)
    ocsf |= activity.fields
    if unmapped := _unmapped(source):
        ocsf["unmapped"] = unmapped
    return ocsf


def render(event: dict[str, Any], context: EventContext) -> bytes:
    return dumps(to_ocsf(event, context))
