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
``NAME``, ``VERSION`` and the hooks the subclass overrides. The functions
below build the WIT values (verdicts, changes, replies) from plain Python
values, parse and write the JSON text that crosses the boundary, and wrap the
host capabilities.

Things worth knowing about the componentize-py runtime:

* It creates one ``Hooks`` instance per exported function, once, while the
  component is built. Attributes set on ``self`` in one hook are therefore
  not seen by the others; `Plugin.config` is kept at module level for that
  reason. Keep per-session data in the session (``state``/``data``) or in
  the key-value store, never in globals: an instance may serve many sessions.
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
    "Err",
    "Plugin",
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


# One encoder for every call: `json.dumps` with non-default options builds a
# new encoder each time, which costs more than encoding a small object.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(value: Any) -> str:
    """Serialises ``value`` to compact JSON text (no spaces, UTF-8 kept)."""
    return _ENCODER.encode(value)


def loads(text: Optional[str], default: Any = None) -> Any:
    """Parses JSON text; returns ``default`` for ``None``, empty or blank text.

    JSON ``null`` also yields ``default``. Invalid JSON raises ``ValueError``.
    """
    if text is None or not text.strip():
        return default
    value = json.loads(text)
    return default if value is None else value


def _object(text: Optional[str], what: str) -> JsonObject:
    value = loads(text, {})
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not a JSON object")
    return value


def data(session: types.Session) -> JsonObject:
    """The session's shared data as a dict (``{}`` when empty)."""
    return _object(session.data, "session data")


def state(session: types.Session) -> JsonObject:
    """This plugin's private state for the session as a dict (``{}`` until set)."""
    return _object(session.state, "plugin state")


def _json_text(value: Patch, what: str) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    if type(value) is dict:  # the common case, without the slower ABC check
        return dumps(value)
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a dict (a JSON object), not {type(value).__name__}")
    return dumps(dict(value))


# ---------------------------------------------------------------------------
# Results of hooks
# ---------------------------------------------------------------------------


def changes(
    data_patch: Patch = None,
    roles: Optional[Sequence[str]] = None,
    state: Patch = None,
    ttl_seconds: Optional[int] = None,
) -> types.Changes:
    """Builds a `types.Changes`; every argument left as ``None`` changes nothing.

    ``data_patch`` is a JSON merge patch (RFC 7386) on the shared data: keys
    set to ``None`` are removed and nested objects are merged, not replaced.
    ``state`` replaces this plugin's whole private state. ``roles`` replaces
    the session's roles. ``ttl_seconds`` sets the remaining absolute lifetime.
    Dicts are serialised for you; a ``str`` is passed through as JSON text.
    """
    if roles is not None:
        if isinstance(roles, str) or not all(isinstance(r, str) for r in roles):
            raise TypeError("roles must be a list of strings")
        roles = list(roles)
    if ttl_seconds is not None:
        if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int):
            raise TypeError("ttl_seconds must be an int")
        if not 0 <= ttl_seconds <= _U32_MAX:
            raise ValueError(f"ttl_seconds {ttl_seconds} is out of range")
    return types.Changes(
        data_patch=_json_text(data_patch, "data_patch"),
        roles=roles,
        state=_json_text(state, "state"),
        ttl_seconds=ttl_seconds,
    )


def allow(
    data_patch: Patch = None,
    roles: Optional[Sequence[str]] = None,
    state: Patch = None,
    ttl_seconds: Optional[int] = None,
) -> types.Verdict:
    """Verdict for ``on_session_start``/``on_event``: go on, applying these changes.

    With no argument it allows without changing anything. See `changes`.
    """
    return types.Verdict_Allow(changes(data_patch, roles, state, ttl_seconds))


def deny(message: str) -> types.Verdict:
    """Verdict for ``on_session_start``/``on_event``: refuse with ``message``.

    A denial carries no changes: nothing the hook computed is applied.
    """
    return types.Verdict_Deny(str(message))


def accept() -> types.UpdateVerdict:
    """Verdict for ``on_session_update``: let the proposed change through as it is."""
    return types.UpdateVerdict_Accept()


def rewrite(
    data_patch: Patch = None,
    roles: Optional[Sequence[str]] = None,
    state: Patch = None,
    ttl_seconds: Optional[int] = None,
) -> types.UpdateVerdict:
    """Verdict for ``on_session_update``: apply these changes instead of the proposed ones."""
    return types.UpdateVerdict_Rewrite(changes(data_patch, roles, state, ttl_seconds))


def reject(message: str) -> types.UpdateVerdict:
    """Verdict for ``on_session_update``: refuse the change with ``message``."""
    return types.UpdateVerdict_Reject(str(message))


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


def _capability(module: Any, name: str) -> Any:
    if module is None:
        raise RuntimeError(
            f"the {name} capability is not in the world this plugin was built against:"
            f" add `import sessiond:plugin/{name}@0.1.0;` to it"
        )
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
    wit_log.log(level, str(message))


# Level names (any case) to levels, so that a log call needs no enum lookup.
_LOG_LEVELS = (
    {}
    if _wit_log is None
    else {name: _wit_log.Level[name.upper()] for name in ("trace", "debug", "info", "warn", "error")}
)


def log_trace(message: str) -> None:
    """`log` at level trace."""
    log("trace", message)


def log_debug(message: str) -> None:
    """`log` at level debug."""
    log("debug", message)


def log_info(message: str) -> None:
    """`log` at level info."""
    log("info", message)


def log_warn(message: str) -> None:
    """`log` at level warn."""
    log("warn", message)


def log_error(message: str) -> None:
    """`log` at level error."""
    log("error", message)


def now() -> int:
    """The host's wall clock in milliseconds since the Unix epoch (capability ``clock``)."""
    return _capability(_wit_clock, "clock").now()


def kv_get(key: str) -> Optional[str]:
    """Reads a key of this plugin's store; ``None`` if unset or expired (capability ``kv``).

    A store failure raises ``Err`` with the host's message, which fails the hook.
    """
    return _capability(_wit_kv, "kv").get(key)


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

_VERDICT = (types.Verdict_Allow, types.Verdict_Deny)
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


def _check_changes(c: Any) -> Optional[str]:
    if not isinstance(c, types.Changes):
        return f"changes must be a types.Changes, not {type(c).__name__}"
    for field in ("data_patch", "state"):
        v = getattr(c, field)
        if v is not None and not isinstance(v, str):
            return f"changes.{field} must be JSON text (use the SDK helpers to build it)"
    if c.roles is not None and not (
        isinstance(c.roles, list) and all(isinstance(r, str) for r in c.roles)
    ):
        return "changes.roles must be a list of strings"
    t = c.ttl_seconds
    if t is not None and (isinstance(t, bool) or not isinstance(t, int) or not 0 <= t <= _U32_MAX):
        return "changes.ttl_seconds must be an int between 0 and 2**32-1"
    return None


def _check_result(name: str, result: Any) -> Optional[str]:
    expected, hint = _RETURNS[name]
    if not isinstance(result, expected):
        return f"{name} returned {type(result).__name__}; it must return {hint}"
    if isinstance(result, (types.Verdict_Allow, types.UpdateVerdict_Rewrite)):
        return _check_changes(result.value)
    if isinstance(result, types.Verdict_Deny) or isinstance(result, types.UpdateVerdict_Reject):
        return None if isinstance(result.value, str) else "a denial message must be a str"
    if isinstance(result, types.MessageReply):
        if not isinstance(result.reply, str):
            return "message-reply.reply must be JSON text (use reply(...))"
        return _check_changes(result.changes)
    if isinstance(result, list) and not all(isinstance(s, types.SessionSummary) for s in result):
        return "on_list_active must return a list of types.SessionSummary"
    return None


def _guard(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """Turns unexpected exceptions and ill-typed results into a plugin error."""

    @functools.wraps(method)
    def guarded(self: Any, *args: Any) -> Any:
        try:
            result = method(self, *args)
        except Err as err:
            if isinstance(err.value, str):
                raise
            raise Err(str(err.value)) from None
        except Exception as exc:  # a bug in the plugin: report it, don't trap
            try:
                log_error(f"{name} failed:\n{traceback.format_exc()}")
            except Exception:
                pass  # no log capability: the error message still says what failed
            raise Err(f"{name} failed: {type(exc).__name__}: {exc}") from None
        if _RETURNS[name][0] is type(None):
            return None  # result<_, string>: whatever the method returned is dropped
        problem = _check_result(name, result)
        if problem is not None:
            raise Err(problem)
        return result

    guarded._sessiond_guarded = True  # type: ignore[attr-defined]
    return guarded


class Plugin(exports.Hooks):
    """Base class for a plugin's ``Hooks`` class, with a default for every hook.

    Set ``NAME`` and ``VERSION`` and override the hooks you need, with the
    signatures of ``wit_world.exports.Hooks``. ``describe`` lists exactly the
    hooks your class overrides, so the host calls no other. Defaults (used
    only if you call them through ``super()``): start/event allow without
    changes, update accepts, end does nothing, message fails with
    "no handler named ...", list-active returns the sessions unchanged.
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

    def on_session_start(self, session: types.Session, client: types.ClientInfo) -> types.Verdict:
        """Default: allow the session without changes."""
        return allow()

    def on_session_update(self, session: types.Session, proposed: types.Changes) -> types.UpdateVerdict:
        """Default: accept the proposed change."""
        return accept()

    def on_session_end(self, session: types.Session, end: types.EndInfo) -> None:
        """Default: do nothing."""
        return None

    def on_event(self, session: types.Session, name: str, payload: str) -> types.Verdict:
        """Default: allow without changes."""
        return allow()

    def on_message(self, session: types.Session, handler: str, payload: str) -> types.MessageReply:
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
