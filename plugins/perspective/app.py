"""Ignition Perspective session scripts, ported to a sessiond plugin.

Perspective                  sessiond
---------------------------  ------------------------------------------------
onStartup                    on_session_start
onPageStartup                on_event "page-view"  {"page": "/admin/users"}
onLogin                      on_event "login", and the built-in "authenticated"
onLogout                     on_event "logout", which then ends the session
                             (reason logout, as system.perspective.logout())
message handlers             on_message "updatePreference", "refreshData"
onShutdown                   on_session_end
idle warning (60 s before)   data "idleWarningAt", from the idle deadline
onIdleReset                  on_event "idle-reset"
onIdleTimeout                on_session_end with reason idle-timeout

``session.custom.*`` becomes the shared session data; values only this plugin
needs (login time, page count) also live in its private state. The named
database queries become the key-value store (user preferences, drafts) and
the audit stream (login/logout records, session metrics).

Capabilities used: log, clock, kv, audit.
"""

import sessiond_sdk as sdk
from sessiond_sdk import Session, types

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

# How long before the idle timeout the front end warns (the seed's 60 s).
IDLE_WARNING_MS = 60_000


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


def idle_warning_at(session: Session, now: int) -> int:
    """When to warn that the session is about to idle out, once this hook's
    write has slid the idle deadline to ``now`` plus the idle timeout."""
    return now + (session.idle_expires_at - session.last_seen_at) - IDLE_WARNING_MS


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

    def on_session_start(self, session: Session, client: types.ClientInfo) -> types.Verdict:
        # The session is being created now: its creation time is the login
        # time, without a call to the host's clock.
        login_time = session.created_at
        user = session.user
        patch = {
            "viewMode": "compact" if client.device == "mobile" else "full",
            "loginTime": login_time,
            "pageViews": 0,
            "idleWarningAt": session.idle_expires_at - IDLE_WARNING_MS,
        }
        if user:
            prefs = sdk.kv_get_json(prefs_key(user))
            if isinstance(prefs, dict):
                patch["preferences"] = prefs

        sdk.log_info(
            f"Session started: {session.id} - User: {user or 'Anonymous'}"
            f" - IP: {client.remote_addr or 'unknown'}"
        )
        return sdk.allow(
            data_patch=patch,
            state={"login_time": login_time, "page_views": 0},
        )

    # -- onPageStartup, onLogin, onLogout ------------------------------------

    def on_event(self, session: Session, name: str, payload: str) -> types.Verdict:
        handler = EVENTS.get(name)
        if handler is None:  # an event this plugin ignores: the cheapest path
            return sdk.allow()
        return handler(self, session, payload)

    def page_view(self, session: Session, payload: str) -> types.Verdict:
        """Counts the view, sets edit mode and enforces the page's roles."""
        page = payload_object(payload).get("page")
        if not isinstance(page, str) or not page:
            sdk.error('page-view needs a payload {"page": "<url>"}')

        current = sdk.state(session)
        views = as_count(current.get("page_views", sdk.data(session).get("pageViews"))) + 1
        needed = required_roles(page)
        if needed and not any(role in session.roles for role in needed):
            # As in the seed, a refused view still counts: the denial keeps
            # this plugin's state, though the shared data stays as it was.
            return sdk.deny("unauthorized", state={**current, "page_views": views})

        sdk.log_debug(f"Page view: {page} ({views}) by {session.user or 'Anonymous'}")
        return sdk.allow(
            data_patch={"pageViews": views, "editMode": "settings" in page},
            state={**current, "page_views": views},
        )

    def login(self, session: Session) -> types.Verdict:
        """Sets the permissions from the roles and audits the login."""
        sdk.audit({"action": "LOGIN", "target": session.user or "Anonymous", "value": "SUCCESS"})
        # The whole object is written: a merge patch would keep flags that a
        # previous login set and these roles do not grant.
        return sdk.allow(data_patch={"permissions": permissions_for(session.roles)})

    def logout(self, session: Session) -> types.Verdict:
        """Saves unsaved drafts, clears sensitive data, audits the logout and
        ends the session (its end hooks then see reason ``logout``)."""
        user = session.user
        temp = sdk.data(session).get("temp")
        draft = temp.get("draftData") if isinstance(temp, dict) else None
        if user and draft:
            sdk.kv_set_json(drafts_key(user), draft)

        sdk.audit({"action": "LOGOUT", "target": user or "Unknown", "value": "SUCCESS"})
        return sdk.allow(data_patch={"temp": None, "permissions": None}, end="logout")

    def idle_reset(self, session: Session) -> types.Verdict:
        """The user is active again: records it and moves the idle warning."""
        now = sdk.now()
        return sdk.allow(
            data_patch={"metrics": {"lastActivity": now}, "idleWarningAt": idle_warning_at(session, now)}
        )

    # -- Message handlers ----------------------------------------------------

    def on_message(self, session: Session, handler: str, payload: str) -> types.MessageReply:
        if handler == "updatePreference":
            return self.update_preference(session, payload_object(payload))
        if handler == "refreshData":
            return self.refresh_data(payload_object(payload))
        return super().on_message(session, handler, payload)

    def update_preference(self, session: Session, payload: dict) -> types.MessageReply:
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

    def on_session_end(self, session: Session, end: types.EndInfo) -> None:
        # The host may run this again with the same end id after a crash.
        marker = f"ended:{end.end_id}"
        if sdk.kv_get(marker) is not None:
            return
        reason = sdk.end_reason(end)
        if reason == "idle-timeout":
            sdk.log_info(f"Session timeout: {session.id}")

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
                "reason": reason,
            }
        )
        sdk.kv_set(marker, "1", END_MARKER_TTL_SECONDS)
        sdk.log_info(f"Session ended: {session.id} - Duration: {duration_ms // 1000}s")


# Event name -> handler (one dict lookup, even for the events it ignores).
EVENTS = {
    "page-view": Hooks.page_view,
    "login": lambda self, session, payload: self.login(session),
    "authenticated": lambda self, session, payload: self.login(session),
    "logout": lambda self, session, payload: self.logout(session),
    "idle-reset": lambda self, session, payload: self.idle_reset(session),
}
