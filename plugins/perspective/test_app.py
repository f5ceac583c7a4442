"""Tests of the perspective plugin on CPython, with fake host capabilities.

Run: python3 -m unittest plugins/perspective/test_app.py
"""

import json
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(os.path.dirname(os.path.dirname(HERE)), "sdk", "python")]

import test_sessiond_sdk as sdk_tests  # noqa: E402  (generates the bindings)

app = None


def setUpModule():
    global app
    sdk_tests.setUpModule()
    import app as perspective

    app = perspective


def tearDownModule():
    sdk_tests.tearDownModule()


def session(**kw):
    for key in ("data", "state"):
        if isinstance(kw.get(key), dict):
            kw[key] = json.dumps(kw[key])
    return sdk_tests.session(**kw)


def patch(verdict):
    c = json.loads(verdict.value)
    return c.get("data_patch"), c.get("state")


class PerspectiveTests(unittest.TestCase):
    def setUp(self):
        self.host = sdk_tests.FakeHost(now=5_000)
        self.hooks = app.Hooks()
        self.wit = sdk_tests.wit

    def test_describe(self):
        W = self.wit.Hook
        self.assertEqual(
            self.hooks.describe().hooks, [W.SESSION_START, W.SESSION_END, W.EVENT, W.MESSAGE]
        )

    def test_start(self):
        self.host.kv["prefs:alice"] = '{"theme":"dark"}'
        client = self.wit.ClientInfo("10.0.0.1", None, "mobile")
        s = session(client=client, created_at=5_000, idle_expires_at=905_000)
        data, state = patch(self.hooks.on_session_start(s, client))
        self.assertEqual(
            data,
            {"viewMode": "compact", "loginTime": 5000, "pageViews": 0, "idleWarningAt": 845_000,
             "preferences": {"theme": "dark"}},
        )
        self.assertEqual(state, {"login_time": 5000, "page_views": 0})
        client = self.wit.ClientInfo(None, None, None)
        s = session(user=None, created_at=5_000, idle_expires_at=60_000)
        data, _ = patch(self.hooks.on_session_start(s, client))
        self.assertEqual(data, {"viewMode": "full", "loginTime": 5000, "pageViews": 0, "idleWarningAt": 0})

    def test_page_view(self):
        st = {"login_time": 1, "page_views": 2}
        ev = lambda roles, page: self.hooks.on_event(
            session(roles=roles, state=st), "page-view", json.dumps({"page": page})
        )
        # A refused view is refused, and still counted in the plugin's state.
        counted = self.wit.Denial("unauthorized", '{"login_time":1,"page_views":3}')
        self.assertEqual(ev(["Operator"], "/admin/users"), self.wit.Verdict_Deny(counted))
        self.assertEqual(ev([], "/reports"), self.wit.Verdict_Deny(counted))
        data, state = patch(ev(["Engineer"], "/settings/plc"))
        self.assertEqual(data, {"pageViews": 3, "editMode": True})
        self.assertEqual(state, {"login_time": 1, "page_views": 3})
        data, _ = patch(ev([], "/home"))
        self.assertEqual(data, {"pageViews": 3, "editMode": False})
        with self.assertRaises(sdk_tests.sdk.Err):
            self.hooks.on_event(session(), "page-view", "null")

    def test_login_logout(self):
        for name, roles, perms in [
            ("login", ["Administrator"], (True, True, True)),
            ("authenticated", ["Engineer"], (True, False, True)),
            ("login", ["Operator"], (False, False, False)),
        ]:
            data, _ = patch(self.hooks.on_event(session(roles=roles), name, "null"))
            p = data["permissions"]
            self.assertEqual((p["canEdit"], p["canDelete"], p["canApprove"]), perms)
        self.assertEqual(self.host.audits[0], {"action": "LOGIN", "target": "alice", "value": "SUCCESS"})
        s = session(data={"temp": {"draftData": {"d": 1}}})
        verdict = self.hooks.on_event(s, "logout", "null")
        data, _ = patch(verdict)
        self.assertEqual(data, {"temp": None, "permissions": None})
        self.assertEqual(json.loads(verdict.value)["end"], "logout")  # logout ends the session
        self.assertEqual(self.host.kv["drafts:alice"], '{"d":1}')
        self.assertEqual(self.host.audits[-1], {"action": "LOGOUT", "target": "alice", "value": "SUCCESS"})
        self.assertEqual(self.hooks.on_event(session(), "other", "null"), sdk_tests.sdk.allow())

    def test_idle(self):
        # Idle timeout 900 s: the warning comes 60 s before the slid deadline.
        s = session(last_seen_at=1_000, idle_expires_at=901_000)
        data, _ = patch(self.hooks.on_event(s, "idle-reset", "null"))
        self.assertEqual(data, {"metrics": {"lastActivity": 5000}, "idleWarningAt": 845_000})
        end = self.wit.EndInfo(self.wit.EndReason.IDLE_TIMEOUT, "e9", 9_000)
        self.hooks.on_session_end(session(), end)
        self.assertIn(("INFO", "Session timeout: s1"), self.host.logs)

    def test_messages(self):
        msg = lambda handler, payload, **kw: self.hooks.on_message(
            session(**kw), handler, json.dumps(payload)
        )
        self.host.kv["prefs:alice"] = '{"theme":"dark"}'
        r = msg("updatePreference", {"name": "language", "value": "de"})
        self.assertEqual(json.loads(r.reply), {"status": "updated", "preference": "language"})
        self.assertEqual(json.loads(r.changes)["data_patch"], {"preferences": {"language": "de"}})
        self.assertEqual(json.loads(self.host.kv["prefs:alice"]), {"theme": "dark", "language": "de"})
        msg("updatePreference", {"name": "theme", "value": "x"}, user=None)
        self.assertEqual(len(self.host.kv), 1)
        r = msg("updatePreference", {"name": "theme"})
        self.assertEqual(json.loads(r.reply), {"status": "error", "message": "Invalid preference"})
        r = msg("refreshData", {"type": "tags", "paths": ["a", "b"]})
        self.assertEqual(json.loads(r.reply), [{"path": "a", "value": None}, {"path": "b", "value": None}])
        r = msg("refreshData", {"type": "alarms"})
        self.assertEqual(json.loads(r.reply), {"status": "refreshed", "type": "alarms"})
        with self.assertRaises(sdk_tests.sdk.Err) as caught:
            msg("nope", None)
        self.assertEqual(caught.exception.value, "no handler named nope")

    def test_end_once_per_end_id(self):
        end = self.wit.EndInfo(self.wit.EndReason.IDLE_TIMEOUT, "e1", 66_000)
        s = session(state={"login_time": 1_000, "page_views": 4})
        self.hooks.on_session_end(s, end)
        self.hooks.on_session_end(s, end)
        self.assertEqual(
            self.host.audits,
            [{"metric": "session", "duration_ms": 65000, "page_views": 4, "username": "alice", "reason": "idle-timeout"}],
        )
        end = self.wit.EndInfo(self.wit.EndReason.LOGOUT, "e2", 11)
        self.hooks.on_session_end(session(user=None, created_at=1, data={"pageViews": 2}), end)
        self.assertEqual(self.host.audits[-1]["duration_ms"], 10)
        self.assertEqual(self.host.audits[-1]["page_views"], 2)


if __name__ == "__main__":
    unittest.main()
