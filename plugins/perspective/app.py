"""Ignition Perspective session scripts, ported to a sessiond plugin.

Perspective                  sessiond
---------------------------  ------------------------------------------------
onStartup                    on_session_start
onPageStartup                on_event "page-view"  {"page": "/admin/users"}
onLogin                      on_event "login", and the built-in "authenticated"
onLogout                     on_event "logout"
message handlers             on_message "updatePreference", "refreshData"
onShutdown                   on_session_end

``session.custom.*`` becomes the shared session data; values only this plugin
needs (login time, page count) also live in its private state. The named
database queries become the key-value store (user preferences, drafts) and
the audit stream (login/logout records, session metrics).

Capabilities used: log, clock, kv, audit.
"""

import sessiond_sdk as sdk
from sessiond_sdk import types

# Pages that need a role, checked in this order; the first path contained in
# the page url decides (as getPageRequiredRoles does). Other pages are open.
PAGE_ROLES = (
    ("/admin", ("Administrator",)),
    ("/settings", ("Administrator", "Engineer")),
    ("/reports", ("Administrator", "Engineer", "Supervisor")),
    ("/control", ("Operator", "Engineer", "Administrator")),
)

# The permission flags of a session, before the roles grant any.
DEFAULT_PERMISSIONS = {
    "canEdit": False,
    "canDelete": False,
    "canApprove": False,
    "canExport": True,
    "maxExportRows": 10000,
}

# Side effects of on_session_end are done once per end id (see EndInfo).
END_MARKER_TTL_SECONDS = 24 * 3600


def prefs_key(user: str) -> str:
    """The kv key that holds a user's preferences (a JSON object)."""
    return f"prefs:{user}"


def drafts_key(user: str) -> str:
    """The kv key where logout saves a user's unsaved draft data."""
    return f"drafts:{user}"


def required_roles(page: str) -> tuple:
    """The roles of which a session needs one to open ``page`` (empty: open)."""
    for path, roles in PAGE_ROLES:
        if path in page:
            return roles
    return ()


def permissions_for(roles) -> dict:
    """The permissions object for a session with ``roles``."""
    perms = dict(DEFAULT_PERMISSIONS)
    if "Administrator" in roles:
        perms.update(canEdit=True, canDelete=True, canApprove=True)
    elif "Engineer" in roles:
        perms.update(canEdit=True, canApprove=True)
    return perms


def as_count(value) -> int:
    """A non-negative page count from a stored value (0 if unusable)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def payload_object(payload: str) -> dict:
    """The payload as a dict, or ``{}`` if it is not a JSON object."""
    try:
        value = sdk.loads(payload, {})
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class Hooks(sdk.Plugin):
    """The Perspective session scripts."""

    NAME = "perspective"
    VERSION = "0.1.0"

    # -- onStartup ---------------------------------------------------------

    def on_session_start(self, session: types.Session, client: types.ClientInfo) -> types.Verdict:
        login_time = sdk.now()
        patch = {
            "viewMode": "compact" if client.device == "mobile" else "full",
            "loginTime": login_time,
            "pageViews": 0,
        }
        if session.user:
            prefs = sdk.kv_get_json(prefs_key(session.user))
            if isinstance(prefs, dict):
                patch["preferences"] = prefs

        sdk.log_info(
            f"Session started: {session.id} - User: {session.user or 'Anonymous'}"
            f" - IP: {client.remote_addr or 'unknown'}"
        )
        return sdk.allow(
            data_patch=patch,
            state={"login_time": login_time, "page_views": 0},
        )

    # -- onPageStartup, onLogin, onLogout ------------------------------------

    def on_event(self, session: types.Session, name: str, payload: str) -> types.Verdict:
        if name == "page-view":
            return self.page_view(session, payload)
        if name in ("login", "authenticated"):
            return self.login(session)
        if name == "logout":
            return self.logout(session)
        return sdk.allow()

    def page_view(self, session: types.Session, payload: str) -> types.Verdict:
        """Counts the view, sets edit mode and enforces the page's roles."""
        page = payload_object(payload).get("page")
        if not isinstance(page, str) or not page:
            sdk.error('page-view needs a payload {"page": "<url>"}')

        needed = required_roles(page)
        if needed and not any(role in session.roles for role in needed):
            # A denial applies no change, so the refused view is not counted.
            return sdk.deny("unauthorized")

        current = sdk.state(session)
        views = as_count(current.get("page_views", sdk.data(session).get("pageViews"))) + 1
        sdk.log_debug(f"Page view: {page} ({views}) by {session.user or 'Anonymous'}")
        return sdk.allow(
            data_patch={"pageViews": views, "editMode": "settings" in page},
            state={**current, "page_views": views},
        )

    def login(self, session: types.Session) -> types.Verdict:
        """Sets the permissions from the roles and audits the login."""
        sdk.audit({"action": "LOGIN", "target": session.user or "Anonymous", "value": "SUCCESS"})
        # The whole object is written: a merge patch would keep flags that a
        # previous login set and these roles do not grant.
        return sdk.allow(data_patch={"permissions": permissions_for(session.roles)})

    def logout(self, session: types.Session) -> types.Verdict:
        """Saves unsaved drafts, clears sensitive data and audits the logout."""
        user = session.user
        temp = sdk.data(session).get("temp")
        draft = temp.get("draftData") if isinstance(temp, dict) else None
        if user and draft:
            sdk.kv_set_json(drafts_key(user), draft)

        sdk.audit({"action": "LOGOUT", "target": user or "Unknown", "value": "SUCCESS"})
        return sdk.allow(data_patch={"temp": None, "permissions": None})

    # -- Message handlers ----------------------------------------------------

    def on_message(self, session: types.Session, handler: str, payload: str) -> types.MessageReply:
        if handler == "updatePreference":
            return self.update_preference(session, payload_object(payload))
        if handler == "refreshData":
            return self.refresh_data(payload_object(payload))
        return super().on_message(session, handler, payload)

    def update_preference(self, session: types.Session, payload: dict) -> types.MessageReply:
        """Stores one preference in the session and, for a user, in the kv store."""
        name = payload.get("name")
        value = payload.get("value")
        if not isinstance(name, str) or not name or value is None:
            return sdk.reply({"status": "error", "message": "Invalid preference"})

        if session.user:
            key = prefs_key(session.user)
            prefs = sdk.kv_get_json(key, {})
            if not isinstance(prefs, dict):
                prefs = {}
            prefs[name] = value
            sdk.kv_set_json(key, prefs)

        return sdk.reply(
            {"status": "updated", "preference": name},
            data_patch={"preferences": {name: value}},
        )

    def refresh_data(self, payload: dict) -> types.MessageReply:
        """Answers a refresh; sessiond has no tag provider, so tag values are null."""
        data_type = payload.get("type", "all")
        if data_type == "tags":
            paths = payload.get("paths")
            if isinstance(paths, list) and paths:
                return sdk.reply([{"path": p, "value": None} for p in paths])
        return sdk.reply({"status": "refreshed", "type": data_type})

    # -- onShutdown ----------------------------------------------------------

    def on_session_end(self, session: types.Session, end: types.EndInfo) -> None:
        # The host may run this again with the same end id after a crash.
        marker = f"ended:{end.end_id}"
        if sdk.kv_get(marker) is not None:
            return

        current = sdk.state(session)
        login_time = current.get("login_time")
        if not isinstance(login_time, int) or isinstance(login_time, bool):
            login_time = session.created_at
        page_views = current.get("page_views", sdk.data(session).get("pageViews"))
        duration_ms = max(0, end.ended_at - login_time)
        user = session.user or "Anonymous"

        sdk.audit(
            {
                "metric": "session",
                "duration_ms": duration_ms,
                "page_views": as_count(page_views),
                "username": user,
                "reason": sdk.end_reason(end),
            }
        )
        sdk.kv_set(marker, "1", END_MARKER_TTL_SECONDS)
        sdk.log_info(f"Session ended: {session.id} - Duration: {duration_ms // 1000}s")
