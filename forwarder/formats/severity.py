"""How serious an audit event is, in the scales syslog, CEF, LEEF and OCSF use.

One table for the four so that a SIEM sees the same event rated alike
whatever the wire format. Three levels are enough for an audit log, which
records what people did, not failures of machines:

- warning: a failed login, or a change that weakens how the organization
  authenticates (two-factor authentication or SSO turned off or changed,
  password rules changed) or who administers it (admin roles).
- notice: deletions, exports, changes to admin settings and to access
  (share links, privacy, members), apps and tokens authorized, accounts
  deprovisioned.
- informational: everything else, including event types not known yet.

The table is documented in docs/syslog.md (docs/ocsf.md points there);
keep them in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any


class Severity(IntEnum):
    """RFC 5424 severities (the low three bits of PRI)."""

    EMERGENCY = 0
    ALERT = 1
    CRITICAL = 2
    ERROR = 3
    WARNING = 4
    NOTICE = 5
    INFORMATIONAL = 6
    DEBUG = 7


@dataclass(frozen=True, slots=True)
class Rating:
    """One event's severity in each scale.

    ``cef`` is CEF's 0-10 (ArcSight reads 0-3 low, 4-6 medium, 7-8 high);
    ``leef`` is QRadar's 1-10 ``sev``, on the same numbers; ``ocsf`` is
    OCSF's ``severity_id`` (3 Medium, 2 Low, 1 Informational).
    """

    syslog: Severity
    cef: int
    leef: int
    ocsf: int


WARNING = Rating(Severity.WARNING, 7, 7, 3)
NOTICE = Rating(Severity.NOTICE, 5, 5, 2)
INFORMATIONAL = Rating(Severity.INFORMATIONAL, 3, 3, 1)

WARNING_TYPES = frozenset(
    {
        "user_login_failed",
        "user_two_factor_auth_disabled",
        "user_workspace_admin_role_changed",
        "user_division_admin_role_changed",
        "workspace_require_two_factor_auth_disabled",
        "workspace_saml_settings_changed",
        "workspace_saml_url_changed",
        "workspace_google_sso_settings_changed",
        "workspace_password_requirements_changed",
        "workspace_security_contact_email_changed",
        "workspace_form_link_authentication_required_disabled",
        "workspace_logged_out_view_authentication_required_disabled",
    }
)

NOTICE_TYPES = frozenset(
    {
        "user_deprovisioned",
        "workspace_force_password_reset",
        "user_app_authorized",
        "user_personal_access_token_authorized",
        "service_account_created",
        "attachment_downloaded",
        "project_share_link_enabled",
        "project_view_link_enabled",
        "team_privacy_settings_changed",
        "project_privacy_settings_changed",
    }
)

# A workspace_* event ending so is a change to an admin setting.
ADMIN_SETTING_SUFFIXES = ("_changed", "_enabled", "_disabled", "_added", "_removed")


def rate(event_type: str) -> Rating:
    """The rating of an event type; unknown types are informational."""
    if event_type in WARNING_TYPES:
        return WARNING
    if event_type in NOTICE_TYPES:
        return NOTICE
    # "task_undeleted" does not end with "_deleted": restores stay ordinary.
    if event_type.endswith("_deleted") or event_type.endswith("_export_started"):
        return NOTICE
    if event_type.startswith("workspace_") and event_type.endswith(
        ADMIN_SETTING_SUFFIXES
    ):
        return NOTICE
    return INFORMATIONAL


def rate_event(event: dict[str, Any]) -> Rating:
    """The rating of an API event, whatever shape its event_type has."""
    event_type = event.get("event_type")
    return rate(event_type) if isinstance(event_type, str) else INFORMATIONAL
