"""Helpers for writing sessiond plugins in Python.

A plugin is a module named ``app`` that defines ``class Hooks(Plugin)``:

    import sessiond_sdk as sdk

    class Hooks(sdk.Plugin):
        NAME = "hello"
        VERSION = "0.1.0"

        def on_event(self, session, name, payload):
            if name == "ping":
                return sdk.allow(data_patch={"pong": sdk.now()})
            return sdk.allow()

`Plugin` gives every hook a harmless default and builds ``describe`` from
``NAME``, ``VERSION`` and the hooks the subclass overrides. Hooks receive a
`Session` (read lazily from the bytes the host sends: the contract
``sessiond:plugin@0.2.0`` passes the session as one byte list, because
componentize-py pays for every value it lifts) and return what the
functions below build from plain Python values (verdicts, changes, replies).
The SDK also wraps the host capabilities.

Things worth knowing about the componentize-py runtime:

* It creates one ``Hooks`` instance per exported function, once, while the
  component is built. Attributes set on ``self`` in one hook are therefore
  not seen by the others; `Plugin.config` is kept at module level for that
  reason. Keep per-session data in the session (``state``/``data``) or in
  the key-value store, never in globals: an instance may serve many sessions.
* Every Python operation is costly inside a component (CPython runs as
  WebAssembly, with fuel metering): the SDK parses and writes JSON with the
  C scanner and encoder built once at import, returns shared constants for
  ``allow()`` and ``accept()``, and reads a session's fields only when the
  hook asks for them. Keep hooks short in the same spirit.
* A hook may only raise `componentize_py_types.Err` (the WIT ``err``); any
  other exception traps the instance. `Plugin` wraps the hooks a subclass
  defines so that other exceptions, and return values of the wrong type,
  become a plugin error with a readable message instead.
* Only modules imported while the component is built exist at run time:
  import everything at module level, never inside a function.
* componentize-py makes the component import every interface of the world it
  is built against, used or not, and the host refuses a plugin that imports
  a capability it was not granted. Build against a world that lists only the
  capabilities the plugin uses (see README.md). The SDK works with any such
  world: a wrapper whose capability is missing fails with a clear message.
"""

import functools
import json
import json.decoder
import json.encoder
import json.scanner
import traceback
from typing import Any, Callable, Dict, List, Mapping, NoReturn, Optional, Sequence, Union

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types

# The capability bindings must be imported here, at module level: the
# component only holds the modules imported while it was built, so an import
# inside a function fails at run time. A world without a capability has no
# module for it; its wrappers then fail with a message naming the capability.
try:
    from wit_world.imports import log as _wit_log
except ImportError:  # pragma: no cover - depends on the world
    _wit_log = None
try:
    from wit_world.imports import clock as _wit_clock
except ImportError:  # pragma: no cover
    _wit_clock = None
try:
    from wit_world.imports import kv as _wit_kv
except ImportError:  # pragma: no cover
    _wit_kv = None
try:
    from wit_world.imports import sessions as _wit_sessions
except ImportError:  # pragma: no cover
    _wit_sessions = None
try:
    from wit_world.imports import audit as _wit_audit
except ImportError:  # pragma: no cover
    _wit_audit = None

__all__ = [
    "ClientInfo",
    "Err",
    "Plugin",
    "Proposed",
    "Session",
    "accept",
    "allow",
    "audit",
    "changes",
    "data",
    "deny",
    "dumps",
    "end_reason",
    "error",
    "kv_delete",
    "kv_get",
    "kv_get_json",
    "kv_set",
    "kv_set_json",
    "list_active",
    "loads",
    "log",
    "log_debug",
    "log_error",
    "log_info",
    "log_trace",
    "log_warn",
    "now",
    "reject",
    "reply",
    "rewrite",
    "state",
    "types",
]

JsonObject = Dict[str, Any]
Patch = Union[Mapping[str, Any], str, None]

_U32_MAX = 2**32 - 1

# ---------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------


def _default(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# Built once, at import (which happens while the component is built): the C
# scanner and encoder called directly skip the per-call Python work of
# `json.loads`/`json.dumps` (encoding detection, a new encoder per call...),
# which inside a component costs more than parsing or encoding a small value.
_scan = json.scanner.make_scanner(json.decoder.JSONDecoder())
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
if _c_make_encoder is not None:
    _encode_chunks = _c_make_encoder(
        None, _default, json.encoder.encode_basestring, None, ":", ",", False, False, True
    )

    def dumps(value: Any) -> str:
        """Serialises ``value`` to compact JSON text (no spaces, UTF-8 kept)."""
        return "".join(_encode_chunks(value, 0))

else:  # pragma: no cover - CPython without its _json accelerator
    _ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)

    def dumps(value: Any) -> str:
        """Serialises ``value`` to compact JSON text (no spaces, UTF-8 kept)."""
        return _ENCODER.encode(value)


def loads(text: Union[str, bytes, None], default: Any = None) -> Any:
    """Parses JSON text; returns ``default`` for ``None``, empty or blank text.

    JSON ``null`` also yields ``default``. Invalid JSON raises ``ValueError``.
    """
    if text is None:
        return default
    if type(text) is not str:
        text = bytes(text).decode()
    if text[:1] in _BLANK or text[-1:] in _BLANK:
        text = text.strip()
        if not text:
            return default
    try:
        value, end = _scan(text, 0)
    except StopIteration as stop:
        raise json.JSONDecodeError("Expecting value", text, stop.value) from None
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return default if value is None else value


_BLANK = ("", " ", "\t", "\n", "\r")


def _object(text: Optional[str], what: str) -> JsonObject:
    value = loads(text, {})
    if type(value) is not dict:
        raise ValueError(f"{what} is not a JSON object")
    return value


# ---------------------------------------------------------------------------
# The session
# ---------------------------------------------------------------------------

ClientInfo = types.ClientInfo
"""Where a session came from: ``remote_addr``, ``user_agent``, ``device`` (each a str or None)."""


class Session:
    """A session as this plugin sees it; every attribute is read on first use.

    ``id``, ``tenant``, ``user`` (None: anonymous), ``roles`` (a list),
    ``created_at``, ``last_seen_at``, ``idle_expires_at`` (the idle
    deadline, which every use slides), ``absolute_expires_at`` (the end of
    its lifetime), ``expires_at`` (the earlier of both), ``version``,
    ``client`` (a `ClientInfo`), ``data`` and ``state`` (JSON text of the
    shared data and of this plugin's private state; `data` and `state` give
    them as dicts). Times are milliseconds since the Unix epoch.
    """

    # The host's bytes, and their fields once split (on the first read: a
    # hook that reads nothing pays nothing).
    __slots__ = ("_raw", "_fields")

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._fields: Optional[List[bytes]] = None

    def _field(self, i: int) -> bytes:
        fields = self._fields
        if fields is None:
            fields = self._fields = self._raw.split(b"\0")
        return fields[i]

    id = property(lambda self: self._field(0).decode(), doc="The public id of the session.")
    tenant = property(lambda self: self._field(1).decode(), doc="The tenant that owns it.")
    user = property(lambda self: self._field(2).decode() or None, doc="The user; None: anonymous.")
    roles = property(
        lambda self: self._field(3).decode().split("\x1f") if self._field(3) else [],
        doc="The user's roles (a new list each time).",
    )
    created_at = property(lambda self: int(self._field(4)), doc="When it was created.")
    last_seen_at = property(lambda self: int(self._field(5)), doc="When it was last used.")
    idle_expires_at = property(lambda self: int(self._field(6)), doc="The idle deadline.")
    absolute_expires_at = property(lambda self: int(self._field(7)), doc="The lifetime's end.")
    expires_at = property(
        lambda self: min(int(self._field(6)), int(self._field(7))),
        doc="When it ends at the latest: the earlier of both deadlines.",
    )
    version = property(lambda self: int(self._field(8)), doc="Incremented by every change.")
    data = property(lambda self: self._field(12).decode(), doc="The shared data, as JSON text.")
    state = property(lambda self: self._field(13).decode(), doc="This plugin's state, as JSON text.")

    @property
    def client(self) -> types.ClientInfo:
        """Where the session came from (address, user agent, device)."""
        f = self._field
        return types.ClientInfo(f(9).decode() or None, f(10).decode() or None, f(11).decode() or None)

    @classmethod
    def of(
        cls,
        id: str = "s",
        tenant: str = "t",
        user: Optional[str] = None,
        roles: Sequence[str] = (),
        created_at: int = 0,
        last_seen_at: int = 0,
        idle_expires_at: int = 0,
        absolute_expires_at: int = 0,
        version: int = 1,
        client: Optional[types.ClientInfo] = None,
        data: Patch = None,
        state: Patch = None,
    ) -> "Session":
        """A session with these fields, for testing hooks natively."""
        c = client or types.ClientInfo(None, None, None)
        text = lambda v: v if isinstance(v, str) else dumps(v or {})  # noqa: E731
        fields = [id, tenant, user or "", "\x1f".join(roles), str(created_at), str(last_seen_at),
                  str(idle_expires_at), str(absolute_expires_at), str(version),
                  c.remote_addr or "", c.user_agent or "", c.device or "", text(data), text(state)]
        return cls("\0".join(fields).encode())

    def __repr__(self) -> str:
        return f"Session(id={self.id!r}, user={self.user!r})"


class Proposed:
    """The change a REST consumer proposes (``on_session_update``).

    ``data_patch`` (JSON text of a merge patch, or None) and ``roles`` (a
    list, or None), as before; ``state``, ``ttl_seconds`` and ``end`` are
    None for a proposal.
    """

    __slots__ = ("data_patch", "roles", "state", "ttl_seconds", "end")

    def __init__(self, doc: Union[bytes, str, None]) -> None:
        value = loads(doc, {})
        patch = value.get("data_patch")
        self.data_patch = None if patch is None else dumps(patch)
        self.roles = value.get("roles")
        self.state = self.ttl_seconds = self.end = None


def data(session: Session) -> JsonObject:
    """The session's shared data as a dict (``{}`` when empty; a new dict each call)."""
    return _object(session.data, "session data")


def state(session: Session) -> JsonObject:
    """This plugin's private state for the session as a dict (``{}`` until set)."""
    return _object(session.state, "plugin state")


def _json_value(value: Patch, what: str) -> Optional[JsonObject]:
    if value is None or type(value) is dict:  # the common case, without the ABC check
        return value
    if isinstance(value, str):
        value = loads(value, {})
        if type(value) is dict:
            return value
    elif isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{what} must be a dict (a JSON object), not {type(value).__name__}")


# ---------------------------------------------------------------------------
# Results of hooks
# ---------------------------------------------------------------------------


# The reasons a hook may end the session for (`changes(end=...)`).
END_REASONS = ("logout", "revoked")


def changes(
    data_patch: Patch = None,
    roles: Optional[Sequence[str]] = None,
    state: Patch = None,
    ttl_seconds: Optional[int] = None,
    end: Optional[str] = None,
) -> Optional[bytes]:
    """The changes document the host reads (JSON bytes), or None for no change.

    ``data_patch`` is a JSON merge patch (RFC 7386) on the shared data: keys
    set to ``None`` are removed and nested objects are merged, not replaced.
    ``state`` replaces this plugin's whole private state. ``roles`` replaces
    the session's roles. ``ttl_seconds`` sets the remaining absolute lifetime.
    ``end`` ("logout" or "revoked") ends the session with that reason once the
    whole chain has allowed (not in ``on_session_start``); the other changes
    are stored first, so its end hooks see them. Pass dicts (a str is read as
    JSON text).
    """
    doc = {}
    if data_patch is not None:
        doc["data_patch"] = _json_value(data_patch, "data_patch")
    if roles is not None:
        if isinstance(roles, str) or not all(isinstance(r, str) for r in roles):
            raise TypeError("roles must be a list of strings")
        doc["roles"] = list(roles)
    if state is not None:
        doc["state"] = _json_value(state, "state")
    if ttl_seconds is not None:
        if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int):
            raise TypeError("ttl_seconds must be an int")
        if not 0 <= ttl_seconds <= _U32_MAX:
            raise ValueError(f"ttl_seconds {ttl_seconds} is out of range")
        doc["ttl_seconds"] = ttl_seconds
    if end is not None:
        if end not in END_REASONS:
            raise ValueError(f"end must be one of {END_REASONS}, not {end!r}")
        doc["end"] = end
    return dumps(doc).encode() if doc else None


# Shared answers: the no-op verdicts cost nothing to build or to lower.
_ALLOW_UNCHANGED = types.Verdict_AllowUnchanged()
_ACCEPT = types.UpdateVerdict_Accept()


def allow(
    data_patch: Patch = None,
    roles: Optional[Sequence[str]] = None,
    state: Patch = None,
    ttl_seconds: Optional[int] = None,
    end: Optional[str] = None,
) -> types.Verdict:
    """Verdict for ``on_session_start``/``on_event``: go on, applying these changes.

    With no argument it allows without changing anything. See `changes`
    (``end`` asks to end the session, e.g. ``allow(end="logout")``).
    """
    if roles is None and ttl_seconds is None and end is None:
        # The common answers, in the fewest steps: nothing, or dicts for the
        # data patch and the state (a null member changes nothing).
        if data_patch is None and state is None:
            return _ALLOW_UNCHANGED
        if (data_patch is None or type(data_patch) is dict) and (state is None or type(state) is dict):
            return types.Verdict_Allow(dumps({"data_patch": data_patch, "state": state}).encode())
    doc = changes(data_patch, roles, state, ttl_seconds, end)
    return _ALLOW_UNCHANGED if doc is None else types.Verdict_Allow(doc)


def _denial(message: str, state: Patch) -> types.Denial:
    kept = None if state is None else dumps(_json_value(state, "state"))
    return types.Denial(str(message), kept)


def deny(message: str, state: Patch = None) -> types.Verdict:
    """Verdict for ``on_session_start``/``on_event``: refuse with ``message``.

    Nothing the hook computed is applied, except ``state``: when given, it
    replaces this plugin's private state even though the request is refused
    (to count refused attempts, say). In ``on_session_start`` it is ignored:
    there is no session yet to hold it.
    """
    return types.Verdict_Deny(_denial(message, state))


def accept() -> types.UpdateVerdict:
    """Verdict for ``on_session_update``: let the proposed change through as it is."""
    return _ACCEPT


def rewrite(
    data_patch: Patch = None,
    roles: Optional[Sequence[str]] = None,
    state: Patch = None,
    ttl_seconds: Optional[int] = None,
    end: Optional[str] = None,
) -> types.UpdateVerdict:
    """Verdict for ``on_session_update``: apply these changes instead of the proposed ones."""
    return types.UpdateVerdict_Rewrite(changes(data_patch, roles, state, ttl_seconds, end) or b"{}")


def reject(message: str, state: Patch = None) -> types.UpdateVerdict:
    """Verdict for ``on_session_update``: refuse the change with ``message`` (see `deny`)."""
    return types.UpdateVerdict_Reject(_denial(message, state))


def reply(value: Any, **change_args: Any) -> types.MessageReply:
    """Result of ``on_message``: ``value`` (any JSON value) goes back to the caller.

    Keyword arguments are those of `changes` and are applied to the session:
    ``reply({"ok": True}, data_patch={"seen": 1})``.
    """
    return types.MessageReply(reply=dumps(value), changes=changes(**change_args))


def error(message: str) -> NoReturn:
    """Fails the current hook with a plugin error carrying ``message``.

    The host then applies the plugin's ``on_error`` policy (hooks that can
    veto deny by default). Raised from ``init`` it stops the plugin loading.
    """
    raise Err(str(message))


def end_reason(end: types.EndInfo) -> str:
    """The end reason as its WIT name: "logout", "expired", "idle-timeout", ..."""
    return end.reason.name.lower().replace("_", "-")


# ---------------------------------------------------------------------------
# Capabilities. A capability the host did not grant cannot be called at all:
# the host refuses to load a component that imports it.
# ---------------------------------------------------------------------------


def _missing(name: str) -> NoReturn:
    raise RuntimeError(
        f"the {name} capability is not in the world this plugin was built against:"
        f" add `import sessiond:plugin/{name}@0.2.0;` to it"
    )


def _capability(module: Any, name: str) -> Any:
    if module is None:
        _missing(name)
    return module


def log(level: Any, message: str) -> None:
    """Writes one line to the host log (capability ``log``).

    ``level`` is "trace", "debug", "info", "warn" or "error" (or a
    ``wit_world.imports.log.Level``). The host tags the line with the tenant,
    the plugin and the session.
    """
    wit_log = _capability(_wit_log, "log")
    if not isinstance(level, wit_log.Level):
        found = _LOG_LEVELS.get(str(level).lower())
        if found is None:
            raise ValueError(f"unknown log level {level!r}")
        level = found
    wit_log.log(level, message if type(message) is str else str(message))


def _emit(level: Any, message: str) -> None:
    """`log` at a level known to exist, with the fewest steps (hot path)."""
    wit_log = _wit_log
    if wit_log is None:
        _missing("log")
    wit_log.log(level, message if type(message) is str else str(message))


# Level names (any case) to levels, so that a log call needs no enum lookup.
_LOG_LEVELS = (
    {}
    if _wit_log is None
    else {name: _wit_log.Level[name.upper()] for name in ("trace", "debug", "info", "warn", "error")}
)
_LEVEL_TRACE, _LEVEL_DEBUG, _LEVEL_INFO, _LEVEL_WARN, _LEVEL_ERROR = (
    _LOG_LEVELS.get(name) for name in ("trace", "debug", "info", "warn", "error")
)


def log_trace(message: str) -> None:
    """`log` at level trace."""
    _emit(_LEVEL_TRACE, message)


def log_debug(message: str) -> None:
    """`log` at level debug."""
    _emit(_LEVEL_DEBUG, message)


def log_info(message: str) -> None:
    """`log` at level info."""
    _emit(_LEVEL_INFO, message)


def log_warn(message: str) -> None:
    """`log` at level warn."""
    _emit(_LEVEL_WARN, message)


def log_error(message: str) -> None:
    """`log` at level error."""
    _emit(_LEVEL_ERROR, message)


def now() -> int:
    """The host's wall clock in milliseconds since the Unix epoch (capability ``clock``)."""
    clock = _wit_clock
    if clock is None:
        _missing("clock")
    return clock.now()


def kv_get(key: str) -> Optional[str]:
    """Reads a key of this plugin's store; ``None`` if unset or expired (capability ``kv``).

    A store failure raises ``Err`` with the host's message, which fails the hook.
    """
    kv = _wit_kv
    if kv is None:
        _missing("kv")
    return kv.get(key)


def kv_set(key: str, value: str, ttl_seconds: Optional[int] = None) -> None:
    """Writes a key, expiring after ``ttl_seconds`` if given (capability ``kv``)."""
    kv = _capability(_wit_kv, "kv")
    if not isinstance(value, str):
        raise TypeError("kv_set stores text: use kv_set_json for other values")
    if ttl_seconds is not None and not 0 <= ttl_seconds <= _U32_MAX:
        raise ValueError(f"ttl_seconds {ttl_seconds} is out of range")
    kv.set(key, value, ttl_seconds)


def kv_delete(key: str) -> bool:
    """Removes a key; returns whether it was set (capability ``kv``)."""
    return _capability(_wit_kv, "kv").delete(key)


def kv_get_json(key: str, default: Any = None) -> Any:
    """Reads a key holding JSON and parses it; ``default`` if unset (capability ``kv``).

    A value that is not valid JSON raises ``ValueError``.
    """
    text = kv_get(key)
    if text is None:
        return default
    try:
        return loads(text, default)
    except ValueError:
        raise ValueError(f"kv key {key!r} does not hold valid JSON") from None


def kv_set_json(key: str, value: Any, ttl_seconds: Optional[int] = None) -> None:
    """Writes ``value`` as compact JSON under ``key`` (capability ``kv``)."""
    kv_set(key, dumps(value), ttl_seconds)


def list_active(user: str) -> List[types.SessionSummary]:
    """The active sessions of ``user`` in this tenant, oldest first (capability ``sessions``).

    During ``on_session_start`` the session being created is not listed yet.
    """
    return _capability(_wit_sessions, "sessions").list_active(user)


def audit(record: Mapping[str, Any]) -> None:
    """Appends ``record`` (a dict) to the tenant's audit stream (capability ``audit``).

    The host adds the time, the tenant, the plugin and the session's public id.
    """
    wit_audit = _capability(_wit_audit, "audit")
    if not isinstance(record, Mapping):
        raise TypeError("an audit record must be a dict (a JSON object)")
    wit_audit.append(dumps(dict(record)))


# ---------------------------------------------------------------------------
# The base class
# ---------------------------------------------------------------------------

# Python method name -> WIT hook, in WIT order.
_HOOKS = (
    ("on_session_start", types.Hook.SESSION_START),
    ("on_session_update", types.Hook.SESSION_UPDATE),
    ("on_session_end", types.Hook.SESSION_END),
    ("on_event", types.Hook.EVENT),
    ("on_message", types.Hook.MESSAGE),
    ("on_list_active", types.Hook.LIST_ACTIVE),
)

_VERDICT = (types.Verdict_AllowUnchanged, types.Verdict_Allow, types.Verdict_Deny)
_UPDATE_VERDICT = (types.UpdateVerdict_Accept, types.UpdateVerdict_Rewrite, types.UpdateVerdict_Reject)

# What each guarded method must return, and a hint for the error message.
_RETURNS = {
    "init": (type(None), "nothing"),  # for these two a returned value is ignored
    "on_session_start": (_VERDICT, "allow(...) or deny(...)"),
    "on_session_update": (_UPDATE_VERDICT, "accept(), rewrite(...) or reject(...)"),
    "on_session_end": (type(None), "nothing"),
    "on_event": (_VERDICT, "allow(...) or deny(...)"),
    "on_message": (types.MessageReply, "reply(...)"),
    "on_list_active": (list, "a list of session summaries"),
}

# The configuration given to `init`, shared by every instance of the class
# (componentize-py makes one instance per exported function).
_CONFIG: Dict[str, str] = {}


_VERDICT_HOOKS = ("on_session_start", "on_event")


def _check_doc(doc: Any) -> Optional[str]:
    if doc is not None and type(doc) is not bytes:
        return "changes must be a changes document (use the SDK helpers to build it)"
    return None


def _check_result(name: str, result: Any) -> Optional[str]:
    kind = type(result)
    if kind is types.Verdict_Allow and name in _VERDICT_HOOKS and type(result.value) is bytes:
        return None if result.value else "changes must not be empty"  # the common answer
    expected, hint = _RETURNS[name]
    if not isinstance(result, expected):
        return f"{name} returned {type(result).__name__}; it must return {hint}"
    if kind is types.Verdict_Allow or kind is types.UpdateVerdict_Rewrite:
        return _check_doc(result.value) or (None if result.value else "changes must not be empty")
    if kind is types.Verdict_Deny or kind is types.UpdateVerdict_Reject:
        d = result.value
        if not isinstance(d, types.Denial) or not isinstance(d.message, str):
            return "a denial must be built with deny(...) or reject(...)"
        return None if d.state is None or isinstance(d.state, str) else "a denial's state must be JSON text"
    if kind is types.MessageReply:
        if not isinstance(result.reply, str):
            return "message-reply.reply must be JSON text (use reply(...))"
        return _check_doc(result.changes)
    if kind is list and not all(isinstance(s, types.SessionSummary) for s in result):
        return "on_list_active must return a list of types.SessionSummary"
    return None


def _fail(name: str, exc: Exception) -> NoReturn:
    """Reports a bug in a hook as a plugin error, with its traceback in the log."""
    try:
        log_error(f"{name} failed:\n{traceback.format_exc()}")
    except Exception:
        pass  # no log capability: the error message still says what failed
    raise Err(f"{name} failed: {type(exc).__name__}: {exc}") from None


def _session(session: Any) -> Session:
    return session if type(session) is Session else Session(session)


def _finish(name: str, result: Any) -> Any:
    """Checks what a hook returned; the no-op answer never gets here."""
    if _RETURNS[name][0] is type(None):
        return None  # result<_, string>: whatever the method returned is dropped
    problem = _check_result(name, result)
    if problem is not None:
        raise Err(problem)
    return result


def _failed(name: str, exc: Exception) -> NoReturn:
    """Re-raises a hook's exception as the plugin error it stands for."""
    if isinstance(exc, Err):
        if isinstance(exc.value, str):
            raise exc
        raise Err(str(exc.value)) from None
    _fail(name, exc)  # a bug in the plugin: report it, don't trap


def _guard(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """Hands the hook SDK values and turns exceptions and ill-typed results
    into a plugin error. The wrappers are written out per signature: inside
    a component every Python step counts, and the no-op answer takes none
    beyond the call."""
    if name in ("on_event", "on_message"):

        def guarded(self: Any, session: Any, name_: str, payload: str) -> Any:
            try:
                result = method(self, _session(session), name_, payload)
            except Exception as exc:
                _failed(name, exc)
            return result if result is _ALLOW_UNCHANGED else _finish(name, result)

    elif name == "on_session_start":

        def guarded(self: Any, session: Any, client: Any = None) -> Any:
            try:
                s = _session(session)
                result = method(self, s, s.client if client is None else client)
            except Exception as exc:
                _failed(name, exc)
            return result if result is _ALLOW_UNCHANGED else _finish(name, result)

    elif name == "on_session_update":

        def guarded(self: Any, session: Any, proposed: Any) -> Any:
            try:
                p = proposed if type(proposed) is Proposed else Proposed(proposed)
                result = method(self, _session(session), p)
            except Exception as exc:
                _failed(name, exc)
            return _finish(name, result)

    elif name == "on_session_end":

        def guarded(self: Any, session: Any, end: Any) -> Any:
            try:
                method(self, _session(session), end)
            except Exception as exc:
                _failed(name, exc)

    else:

        def guarded(self: Any, *args: Any) -> Any:
            try:
                result = method(self, *args)
            except Exception as exc:
                _failed(name, exc)
            return _finish(name, result)

    functools.update_wrapper(guarded, method)
    guarded._sessiond_guarded = True  # type: ignore[attr-defined]
    return guarded


class Plugin(exports.Hooks):
    """Base class for a plugin's ``Hooks`` class, with a default for every hook.

    Set ``NAME`` and ``VERSION`` and override the hooks you need, with the
    signatures below: ``on_session_start(session, client)``,
    ``on_session_update(session, proposed)``, ``on_session_end(session, end)``,
    ``on_event(session, name, payload)``, ``on_message(session, handler,
    payload)``, ``on_list_active(user, sessions)``. ``session`` is a
    `Session`, ``client`` its `ClientInfo`, ``proposed`` a `Proposed`,
    ``end`` a ``types.EndInfo``, payloads JSON text. ``describe`` lists
    exactly the hooks your class overrides, so the host calls no other.
    Defaults (used only if you call them through ``super()``): start/event
    allow without changes, update accepts, end does nothing, message fails
    with "no handler named ...", list-active returns the sessions unchanged.
    """

    #: Short plugin name reported by ``describe``, such as "single-session".
    NAME: str = ""
    #: The plugin's own version reported by ``describe``, such as "1.2.0".
    VERSION: str = "0.1.0"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in _RETURNS:
            method = cls.__dict__.get(name)
            if callable(method) and not getattr(method, "_sessiond_guarded", False):
                setattr(cls, name, _guard(name, method))

    def __init__(self) -> None:
        # Runs while the component is built: a bad NAME fails the build.
        cls = type(self)
        if not isinstance(cls.NAME, str) or not cls.NAME:
            raise TypeError(f"{cls.__qualname__}.NAME must be a non-empty str")
        if not isinstance(cls.VERSION, str) or not cls.VERSION:
            raise TypeError(f"{cls.__qualname__}.VERSION must be a non-empty str")

    @classmethod
    def implemented_hooks(cls) -> List[types.Hook]:
        """The WIT hooks this class overrides, in WIT order."""
        return [hook for name, hook in _HOOKS if getattr(cls, name) is not getattr(Plugin, name)]

    @property
    def config(self) -> Dict[str, str]:
        """The configuration attributes passed to ``init`` (later duplicates win)."""
        return _CONFIG

    def setup(self, config: Dict[str, str]) -> None:
        """Override to validate or digest the configuration; called by ``init``.

        Call `error` to refuse the configuration: the plugin then does not load.
        """

    def describe(self) -> types.PluginInfo:
        """Reports ``NAME``, ``VERSION`` and the overridden hooks."""
        cls = type(self)
        return types.PluginInfo(name=cls.NAME, version=cls.VERSION, hooks=cls.implemented_hooks())

    def init(self, config: List[Any]) -> None:
        """Stores the configuration (see `config`) and calls `setup`."""
        _CONFIG.clear()
        _CONFIG.update((str(k), str(v)) for k, v in config)
        self.setup(_CONFIG)

    def on_session_start(self, session: Session, client: types.ClientInfo) -> types.Verdict:
        """Default: allow the session without changes."""
        return allow()

    def on_session_update(self, session: Session, proposed: Proposed) -> types.UpdateVerdict:
        """Default: accept the proposed change."""
        return accept()

    def on_session_end(self, session: Session, end: types.EndInfo) -> None:
        """Default: do nothing."""
        return None

    def on_event(self, session: Session, name: str, payload: str) -> types.Verdict:
        """Default: allow without changes."""
        return allow()

    def on_message(self, session: Session, handler: str, payload: str) -> types.MessageReply:
        """Default: fail with "no handler named <handler>"."""
        error(f"no handler named {handler}")

    def on_list_active(
        self, user: str, sessions: List[types.SessionSummary]
    ) -> List[types.SessionSummary]:
        """Default: return the sessions unchanged."""
        return sessions


# The base class's own methods are guarded too, so that a subclass calling
# ``super().init(...)`` etc. gets the same checks.
for _name in _RETURNS:
    setattr(Plugin, _name, _guard(_name, Plugin.__dict__[_name]))
del _name
