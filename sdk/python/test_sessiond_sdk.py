"""Tests of sessiond_sdk on CPython, with fake host capabilities.

Run: python3 -m unittest sdk/python/test_sessiond_sdk.py
The bindings come from `componentize-py bindings` (skipped without it).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import types as pytypes
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

sdk = None
wit = None
_bindings_dir = None


def setUpModule():
    """Generates the bindings and imports the SDK (shared with other plugin tests)."""
    global sdk, wit, _bindings_dir
    if sdk is not None:
        return
    if shutil.which("componentize-py") is None:
        raise unittest.SkipTest("componentize-py is not installed")
    out = _bindings_dir = tempfile.mkdtemp(prefix="sessiond-pybind-")
    subprocess.run(
        ["componentize-py", "-d", os.path.join(ROOT, "wit"), "-w", "plugin", "bindings", out],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    sys.path[:0] = [out, HERE]
    import sessiond_sdk
    from wit_world.imports import types

    sdk, wit = sessiond_sdk, types


def tearDownModule():
    if _bindings_dir is not None:
        shutil.rmtree(_bindings_dir, ignore_errors=True)


class FakeHost:
    """Stands in for the host capabilities, recording every call."""

    def __init__(self, now=1_000):
        from wit_world.imports import log as wit_log

        self.kv, self.audits, self.logs, self.now = {}, [], [], now
        sdk._wit_log = pytypes.SimpleNamespace(
            Level=wit_log.Level, log=lambda level, msg: self.logs.append((level.name, msg))
        )
        sdk._wit_clock = pytypes.SimpleNamespace(now=lambda: self.now)
        sdk._wit_kv = pytypes.SimpleNamespace(
            get=self.kv.get,
            set=lambda k, v, ttl: self.kv.__setitem__(k, v),
            delete=lambda k: self.kv.pop(k, None) is not None,
        )
        sdk._wit_audit = pytypes.SimpleNamespace(append=lambda e: self.audits.append(json.loads(e)))
        sdk._wit_sessions = None


def session(**kw):
    base = dict(
        id="s1", tenant="t", user="alice", roles=[], created_at=1, last_seen_at=1,
        idle_expires_at=2, absolute_expires_at=3, version=1,
        client=wit.ClientInfo(None, None, None), data="{}", state="{}",
    )
    base.update(kw)
    return sdk.Session.of(**base)


def doc(value):
    """The changes document a verdict carries, as JSON."""
    return json.loads(value) if value is not None else None


class HelperTests(unittest.TestCase):
    def test_results(self):
        v = sdk.allow(data_patch={"a": 1, "b": None}, roles=["x"], state={"n": 1}, ttl_seconds=60)
        self.assertIsInstance(v, wit.Verdict_Allow)
        self.assertEqual(
            doc(v.value),
            {"data_patch": {"a": 1, "b": None}, "roles": ["x"], "state": {"n": 1}, "ttl_seconds": 60},
        )
        self.assertEqual(sdk.allow(), wit.Verdict_AllowUnchanged())
        self.assertEqual(doc(sdk.allow(end="logout").value), {"end": "logout"})
        self.assertEqual(doc(sdk.allow(data_patch='{"t":1}').value), {"data_patch": {"t": 1}})
        self.assertEqual(sdk.deny("no"), wit.Verdict_Deny(wit.Denial("no", None)))
        self.assertEqual(sdk.deny("no", state={"n": 2}), wit.Verdict_Deny(wit.Denial("no", '{"n":2}')))
        self.assertEqual(sdk.accept(), wit.UpdateVerdict_Accept())
        self.assertEqual(sdk.reject("no"), wit.UpdateVerdict_Reject(wit.Denial("no", None)))
        self.assertEqual(doc(sdk.rewrite(roles=[]).value), {"roles": []})
        self.assertEqual(sdk.rewrite().value, b"{}")
        r = sdk.reply([1, "é"], data_patch={"k": True})
        self.assertEqual((r.reply, doc(r.changes)), ('[1,"é"]', {"data_patch": {"k": True}}))
        self.assertIsNone(sdk.reply(None).changes)
        with self.assertRaises(ValueError):
            sdk.changes(end="expired")
        with self.assertRaises(ValueError):
            sdk.changes(ttl_seconds=2**32)
        with self.assertRaises(TypeError):
            sdk.changes(roles="admin")
        with self.assertRaises(TypeError):
            sdk.changes(data_patch=[1])
        with self.assertRaises(sdk.Err) as caught:
            sdk.error("bad")
        self.assertEqual(caught.exception.value, "bad")

    def test_json(self):
        self.assertEqual(sdk.data(session(data="")), {})
        self.assertEqual(sdk.state(session(state='{"a":1}')), {"a": 1})
        with self.assertRaises(ValueError):
            sdk.data(session(data="[1]"))
        self.assertIsNone(sdk.loads("null"))
        self.assertEqual(sdk.loads("  ", 5), 5)
        self.assertEqual(sdk.loads(' {"a": 1} '), {"a": 1})
        self.assertEqual(sdk.loads(b"[1]"), [1])
        for bad in ("{", "[1] x", "nope"):
            with self.assertRaises(ValueError):
                sdk.loads(bad)
        self.assertEqual(sdk.dumps({"a": [1, 2], "é": None}), '{"a":[1,2],"é":null}')
        with self.assertRaises(TypeError):
            sdk.dumps({"a": object()})
        end = wit.EndInfo(wit.EndReason.IDLE_TIMEOUT, "e", 3)
        self.assertEqual(sdk.end_reason(end), "idle-timeout")

    def test_session(self):
        client = wit.ClientInfo("10.0.0.1", None, "mobile")
        s = session(roles=["a", "b"], client=client, created_at=5, data={"k": 1})
        self.assertEqual((s.id, s.tenant, s.user, s.roles), ("s1", "t", "alice", ["a", "b"]))
        self.assertEqual((s.created_at, s.last_seen_at, s.version), (5, 1, 1))
        self.assertEqual((s.idle_expires_at, s.absolute_expires_at, s.expires_at), (2, 3, 2))
        self.assertEqual(s.client, client)
        self.assertEqual((s.data, s.state), ('{"k":1}', "{}"))
        anonymous = session(user=None)
        self.assertIsNone(anonymous.user)
        self.assertEqual(anonymous.roles, [])
        self.assertEqual(anonymous.client, wit.ClientInfo(None, None, None))
        p = sdk.Proposed(b'{"data_patch":{"a":null},"roles":["r"]}')
        self.assertEqual((p.data_patch, p.roles, p.state), ('{"a":null}', ["r"], None))

    def test_capabilities(self):
        host = FakeHost(now=42)
        self.assertEqual(sdk.now(), 42)
        self.assertEqual(sdk.kv_get_json("k", {}), {})
        sdk.kv_set_json("k", {"a": 1})
        self.assertEqual(host.kv["k"], '{"a":1}')
        self.assertEqual(sdk.kv_get_json("k"), {"a": 1})
        self.assertTrue(sdk.kv_delete("k"))
        host.kv["bad"] = "{"
        with self.assertRaises(ValueError):
            sdk.kv_get_json("bad")
        sdk.audit({"action": "X"})
        sdk.log("warn", "w")
        sdk.log_info("i")
        sdk.log("Error", "e")
        with self.assertRaisesRegex(ValueError, "unknown log level 'loud'"):
            sdk.log("loud", "x")
        self.assertEqual(host.audits, [{"action": "X"}])
        self.assertEqual(host.logs, [("WARN", "w"), ("INFO", "i"), ("ERROR", "e")])
        with self.assertRaisesRegex(RuntimeError, "sessions capability"):
            sdk.list_active("alice")


class PluginTests(unittest.TestCase):
    def setUp(self):
        self.host = FakeHost()

    def test_describe_lists_overridden_hooks(self):
        class Base(sdk.Plugin):
            NAME, VERSION = "p", "1.2.3"

            def on_message(self, session, handler, payload):
                return sdk.reply(None)

        class Hooks(Base):
            def on_event(self, session, name, payload):
                return sdk.allow()

        info = Hooks().describe()
        self.assertEqual((info.name, info.version), ("p", "1.2.3"))
        self.assertEqual(info.hooks, [wit.Hook.EVENT, wit.Hook.MESSAGE])

    def test_name_required(self):
        class Hooks(sdk.Plugin):
            pass

        with self.assertRaises(TypeError):
            Hooks()

    def test_defaults_and_config(self):
        class Hooks(sdk.Plugin):
            NAME = "p"

            def setup(self, config):
                if "bad" in config:
                    sdk.error("bad config")

        a, b = Hooks(), Hooks()
        a.init([("k", "1"), ("k", "2")])
        self.assertEqual(b.config, {"k": "2"})  # shared by every instance
        with self.assertRaises(sdk.Err):
            a.init([("bad", "")])
        s = session()
        self.assertEqual(a.on_event(s, "e", "null"), sdk.allow())
        self.assertEqual(a.on_event(s._raw, "e", "null"), sdk.allow())  # as the host calls it
        self.assertEqual(a.on_session_update(s, sdk.changes()), sdk.accept())
        self.assertEqual(a.on_list_active("u", []), [])
        with self.assertRaises(sdk.Err) as caught:
            a.on_message(s, "x", "null")
        self.assertEqual(caught.exception.value, "no handler named x")

    def test_hooks_get_sdk_values(self):
        seen = []

        class Hooks(sdk.Plugin):
            NAME = "p"

            def on_session_start(self, session, client):
                seen.append((session.user, client.device))
                return sdk.deny("no", state={"tries": 1})

            def on_session_update(self, session, proposed):
                seen.append(proposed.roles)
                return sdk.rewrite(end="revoked")

        h, s = Hooks(), session(client=wit.ClientInfo(None, None, "kiosk"))
        self.assertEqual(h.on_session_start(s._raw), wit.Verdict_Deny(wit.Denial("no", '{"tries":1}')))
        self.assertEqual(doc(h.on_session_update(s._raw, b'{"roles":["x"]}').value), {"end": "revoked"})
        self.assertEqual(seen, [("alice", "kiosk"), ["x"]])

    def test_guard(self):
        class Hooks(sdk.Plugin):
            NAME = "p"

            def on_event(self, session, name, payload):
                if name == "boom":
                    raise KeyError("k")
                if name == "int-err":
                    raise sdk.Err(7)
                if name == "raw":
                    return wit.Verdict_Allow({"a": 1})
                return None

            def on_session_end(self, session, end):
                return "ignored"

        h, s = Hooks(), session()
        for name, message in [
            ("boom", "on_event failed: KeyError: 'k'"),
            ("int-err", "7"),
            ("raw", "changes must be a changes document (use the SDK helpers to build it)"),
            ("none", "on_event returned NoneType; it must return allow(...) or deny(...)"),
        ]:
            with self.assertRaises(sdk.Err) as caught:
                h.on_event(s, name, "null")
            self.assertEqual(caught.exception.value, message)
        self.assertTrue(any("KeyError" in m for _, m in self.host.logs))
        self.assertIsNone(h.on_session_end(s, wit.EndInfo(wit.EndReason.LOGOUT, "e", 1)))


if __name__ == "__main__":
    unittest.main()
