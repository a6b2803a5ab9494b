"""The page in Debian's headless Chromium against a real node process: it draws what the
tables hold, refuses a wrong token, says when the node goes away and reconnects."""

from __future__ import annotations

import shutil
import time

import pytest
from synod.v1 import local_pb2

from tests.web.helpers import (
    WebNode,
    browser_errors,
    chromium,
    dump,
    fill,
    open_view,
    row,
    shown,
    wait_until,
)

pytestmark = pytest.mark.skipif(
    shutil.which("chromium") is None or shutil.which("chromedriver") is None,
    reason="needs chromium and chromium-driver (synod.sh installs them)")


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with WebNode(tmp_path_factory.mktemp("web-browser")) as n:
        fill(n.client(), sites=3, switches_per_site=2, flows=12, hosts_per_switch=1)
        n.viewer = n.token("viewer")
        yield n


@pytest.fixture(scope="module")
def browser():
    driver = chromium()
    yield driver
    driver.quit()


def test_page_draws_the_tables_and_follows_changes(node, browser, tmp_path):
    open_view(browser, node.url, node.viewer)
    s = shown(browser)
    assert len(s["switches"]) == 6 and s["sites"] == ["cloud", "edge1", "edge2"], dump(s)
    assert len(s["links"]) == 3 + 2 and s["cut_links"] == [], dump(s)  # 3 in sites, 2 WAN
    assert s["conn"] == "up" and s["banner_equal"] == "yes"
    assert browser_errors(browser) == []  # CSP violations and script errors show here
    assert browser.current_url.endswith("/")  # the token left the address bar
    before = s["updates"]
    with node.client() as c:  # a link reported down is drawn cut, without a reload
        c.call(c.local.ReportTopology, local_pb2.TopologyReport(rows=[
            row("links", ["0000000000000001", 4, "0000000000000101", 4], up=False,
                latency_ms=20.0)]))
    wait_until(browser, "return window.synod.cy.edges('.link.cut').length == 1", 5)
    s = shown(browser)
    assert s["banner_cut"] == "1" and s["updates"] > before
    assert s["cut_links"] == ["ln:0000000000000001/4-0000000000000101/4"]
    browser.save_screenshot(str(tmp_path / "web-view-unit.png"))


def test_wrong_token_shows_the_form_and_no_data(node, browser):
    browser.get("about:blank")
    browser.get(f"{node.url}/#token=synod_0123456789abcdef_notthesecret")
    wait_until(browser, "return !document.getElementById('login').hidden", 10)
    assert "refused this token" in browser.find_element("id", "login-error").text
    state = browser.execute_script(
        "return {updates: window.synod.updates, cy: window.synod.cy === null, "
        "stored: sessionStorage.getItem('synod.viewer.token')}")
    assert state == {"updates": 0, "cy": True, "stored": None}
    assert node.proc.info["node_id"][:12] not in browser.page_source
    # The token typed into the form is kept for the tab and the view appears.
    browser.find_element("id", "token").send_keys(node.viewer)
    browser.find_element("css selector", "#login button").click()
    wait_until(browser, "return window.synod.updates >= 1", 10)
    assert browser.execute_script("return sessionStorage.getItem('synod.viewer.token')") == (
        node.viewer)
    browser.refresh()  # entered once: a reload keeps it
    wait_until(browser, "return window.synod && window.synod.updates >= 1", 10)


def test_node_going_away_is_shown_and_the_page_reconnects(node, browser):
    open_view(browser, node.url, node.viewer)
    before = browser.execute_script("return window.synod.updates")
    node.proc.stop()
    try:
        text = wait_until(browser, "const c = document.getElementById('conn'); "
                                   "return c.dataset.state == 'down' && c.textContent", 10)
        assert "reconnecting" in text
    finally:
        node.proc.start()
    started = time.monotonic()
    wait_until(browser, "return document.getElementById('conn').dataset.state == 'up'", 15)
    assert time.monotonic() - started < 15
    # The same page (no reload) drew the new node's state again.
    wait_until(browser, f"return window.synod.updates > {before}", 5)
    assert browser.execute_script("return performance.getEntriesByType('navigation').length") == 1


def test_services_show_their_state_and_where_they_run(node, browser):
    from synod.v1 import northbound_pb2 as nb

    open_view(browser, node.url, node.viewer)
    from edge_agent.deploy import AgentInfo, Capacity, agent_key

    me = node.proc.info["node_id"]
    with node.client() as c:
        # The node checks a placed, running service against its agent's declaration.
        c.call(c.rows.Put, nb.PutRequest(rows=[row("kv", [agent_key(me)], value=AgentInfo(
            me, "cloud", Capacity(2, 1024), ("cs1",)).encode())]))
        c.call(c.rows.Put, nb.PutRequest(rows=[
            row("placements", ["dns"], node=me, generation=1, state="running")]))
        c.call(c.rows.Put, nb.PutRequest(rows=[row("services", ["dns"], image="microvm")]))
    text = wait_until(browser, "const t = document.getElementById('services').textContent; "
                               "return t.includes('dns: running on') && t", 10)
    assert "unplaced" not in text
    drawn = browser.execute_script(
        "return window.synod.cy.nodes('.service').map(n => n.data('label'))")
    assert drawn == ["dns\nrunning"]


def test_many_switches_collapse_into_sites_and_a_site_opens_on_click(tmp_path, browser):
    with WebNode(tmp_path) as big:
        fill(big.client(), sites=4, switches_per_site=2, flows=0)
        open_view(browser, big.url, big.token("viewer"))
        assert len(shown(browser)["switches"]) == 8  # small: every switch drawn
        fill(big.client(), sites=4, switches_per_site=16, flows=0)  # 64 switches: over 60
        with big.client() as c:  # edge2's WAN link reported down
            c.call(c.local.ReportTopology, local_pb2.TopologyReport(rows=[
                row("links", ["0000000000000001", 4, "0000000000000201", 4], up=False,
                    latency_ms=20.0)]))
        wait_until(browser, "return window.synod.view.topology.links.some("
                            "l => l.state == 'cut') && window.synod.collapsed", 10)
        s = shown(browser)
        assert (s["sites"], s["switches"]) == (["cloud", "edge1", "edge2", "edge3"], []), dump(s)
        edges = browser.execute_script(
            "return window.synod.cy.edges().map(e => [e.source().id(), e.target().id(), "
            "e.hasClass('cut')]).sort()")
        assert edges == [["site:cloud", "site:edge1", False], ["site:cloud", "site:edge2", True],
                         ["site:cloud", "site:edge3", False]]
        browser.execute_script("window.synod.cy.getElementById('site:edge2').emit('tap')")
        wait_until(browser, "return window.synod.cy.nodes('.switch').length == 16", 5)
        opened = browser.execute_script(
            "return window.synod.cy.nodes('.switch').map(n => n.parent().id())")
        assert set(opened) == {"site:edge2"}
