#!/usr/bin/env python3
"""Drives the sessiond web console in headless Chromium, as a person would.

Run by tests/tests/console.rs against a server it started: signs in (a
wrong key first), finds the user's sessions, opens one's details, revokes
it and sees it gone while the other stays, then looks at the plugins (with
the chart), the live audit tail (where the revoked session's end record
appears) and the end queue and webhooks. A screenshot of every step goes to
--shots. Fails (exit 1, with a screenshot) on the first thing not as
expected, or on any error the browser logged (a Content-Security-Policy
violation included).

Debian's chromium and chromium-driver, and selenium from PyPI:
scripts/ensure-tools.sh installs them.
"""

import argparse
import pathlib
import sys

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


class Failed(Exception):
    pass


def browser() -> webdriver.Chrome:
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the server, http://127.0.0.1:PORT")
    parser.add_argument("--key", required=True, help="a tenant API key")
    parser.add_argument("--user", required=True, help="a user with the two sessions below")
    parser.add_argument("--revoke", required=True, help="public id of the session to revoke")
    parser.add_argument("--keep", required=True, help="public id of the session to keep")
    parser.add_argument("--plugin", required=True, help="a plugin the tenant runs")
    parser.add_argument("--webhook", required=True, help="a webhook URL the tenant has")
    parser.add_argument("--operator-key", required=True, help="an operator key")
    parser.add_argument("--other-tenant", required=True, help="another tenant the operator sees")
    parser.add_argument("--shots", required=True, type=pathlib.Path)
    args = parser.parse_args()
    args.shots.mkdir(parents=True, exist_ok=True)

    driver = browser()
    wait = WebDriverWait(driver, 15)
    step = ["start"]

    def shot(name: str) -> None:
        driver.save_screenshot(str(args.shots / f"{name}.png"))

    def visible(css: str):
        return wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, css)))

    def text_in(css: str, text: str) -> None:
        wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, css), text))

    def expect(condition: bool, what: str) -> None:
        if not condition:
            raise Failed(what)

    try:
        step[0] = "sign-in page"
        driver.get(f"{args.base}/console")
        visible("#sign-in")
        shot("01-sign-in")

        step[0] = "a wrong key is refused"
        driver.find_element(By.ID, "key").send_keys("not-the-key")
        driver.find_element(By.CSS_SELECTOR, "#sign-in button").click()
        text_in("#sign-in-error", "not valid")
        expect(not driver.find_element(By.ID, "app-view").is_displayed(), "app shown with a bad key")

        step[0] = "signing in"
        key_input = driver.find_element(By.ID, "key")
        key_input.clear()
        key_input.send_keys(args.key)
        driver.find_element(By.CSS_SELECTOR, "#sign-in button").click()
        visible("#app-view")
        stored = driver.execute_script("return sessionStorage.getItem('sessiond.console.key')")
        expect(stored == args.key, "the key is not in sessionStorage")
        kept = driver.execute_script("return localStorage.length")
        expect(kept == 0, "something was put in localStorage")
        expect(args.key not in driver.current_url, "the key is in the URL")

        step[0] = "finding the user's sessions"
        driver.find_element(By.ID, "user").send_keys(args.user)
        driver.find_element(By.CSS_SELECTOR, "#search button[type=submit]").click()
        visible(f"tr[data-session='{args.revoke}']")
        visible(f"tr[data-session='{args.keep}']")
        text_in("#status", "2 live session(s)")
        shot("02-sessions")

        step[0] = "a session's details"
        row = driver.find_element(By.CSS_SELECTOR, f"tr[data-session='{args.revoke}']")
        row.find_element(By.CSS_SELECTOR, "button.link").click()
        text_in("#details", args.revoke)

        step[0] = "revoking it (two clicks)"
        revoke = row.find_element(By.CSS_SELECTOR, "button.danger")
        revoke.click()
        text_in(f"tr[data-session='{args.revoke}'] button.danger", "Confirm")
        revoke.click()
        wait.until(EC.invisibility_of_element_located(
            (By.CSS_SELECTOR, f"tr[data-session='{args.revoke}']")))
        text_in("#status", f"Session {args.revoke} revoked")
        visible(f"tr[data-session='{args.keep}']")
        shot("03-revoked")

        step[0] = "plugins and the chart"
        driver.find_element(By.CSS_SELECTOR, "nav button[data-tab=plugins]").click()
        text_in("#plugins tbody", args.plugin)
        # The p99 wall time of the plugin's latest calls (the creates and
        # the revoke ran it), in µs or ms.
        wait.until(lambda d: any(unit in d.find_element(By.CSS_SELECTOR, "#plugins tbody tr td:nth-child(7)").text
                                 for unit in ("µs", "ms")))
        wait.until(lambda d: len(d.find_element(
            By.CSS_SELECTOR, "#chart polyline[data-series=calls]").get_attribute("points").split()) >= 2)
        shot("04-plugins")

        step[0] = "the audit tail shows the revoked session's end"
        driver.find_element(By.CSS_SELECTOR, "nav button[data-tab=activity]").click()
        text_in("#audit tbody", args.revoke)
        text_in("#audit tbody", "revoked")
        shot("05-audit")

        step[0] = "end queue and webhooks"
        driver.find_element(By.CSS_SELECTOR, "nav button[data-tab=queues]").click()
        text_in("#endpoints tbody", args.webhook)
        # Nothing listens there: the revoked session's session.ended failed,
        # and the view says why.
        text_in("#endpoints tbody", "cannot connect")
        text_in("#ends", "waiting")
        shot("06-queues")

        step[0] = "signing out, and in with an operator key"
        driver.find_element(By.ID, "sign-out").click()
        visible("#sign-in")
        key_input = driver.find_element(By.ID, "key")
        key_input.clear()
        key_input.send_keys(args.operator_key)
        driver.find_element(By.CSS_SELECTOR, "#sign-in button").click()
        visible("#tab-tenants")
        text_in("#who", "operator key")
        expect(not driver.find_element(By.CSS_SELECTOR, "nav button[data-tab=sessions]").is_displayed(),
               "an operator sees the tenant-only tabs")

        step[0] = "every tenant, with its sessions"
        tenant_row = f"#tenants tr[data-tenant='{args.other_tenant}']"
        visible(tenant_row)
        # The tenant signed in before still has one of alice's sessions.
        first = driver.find_element(By.CSS_SELECTOR, "#tenants tbody tr:first-child")
        cells = [td.text for td in first.find_elements(By.TAG_NAME, "td")]
        expect(cells[1] == "serving" and cells[2] == "1" and cells[3] == "1",
               f"the first tenant's row: {cells}")
        shot("07-operator-tenants")

        step[0] = "every tenant's plugins"
        driver.find_element(By.CSS_SELECTOR, "nav button[data-tab=plugins]").click()
        text_in("#plugins tbody", args.plugin)
        tenant_cell = driver.find_element(By.CSS_SELECTOR, "#plugins tbody tr td:first-child")
        expect(tenant_cell.is_displayed() and tenant_cell.text != "", "no tenant column for the operator")
        shot("08-operator-plugins")

        step[0] = "the browser logged no error"
        # The errors expected: the 401s that refused the wrong key (as a
        # tenant's, then as an operator's) and the operator key's probe as
        # a tenant's.
        expected = ("/v1/plugins", "/admin/v1/tenants")
        errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"
                  and not (any(p in e.get("message", "") for p in expected)
                           and "401" in e.get("message", ""))]
        expect(not errors, f"browser errors: {errors}")
    except (Failed, TimeoutException) as e:
        shot("failure")
        print(f"console: {step[0]}: {e.__class__.__name__}: {e}", file=sys.stderr)
        for entry in driver.get_log("browser"):
            print(f"browser: {entry}", file=sys.stderr)
        return 1
    finally:
        driver.quit()
    print(f"console: every step passed; screenshots in {args.shots}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
