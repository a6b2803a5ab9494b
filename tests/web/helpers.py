"""Shared by the web view's tests and bench/web.py: a real node process with the web view on,
topology rows written as controllers report them, headless Chromium, and HTTPS requests."""

from __future__ import annotations

import http.client
import json
import shutil
import ssl
import time
from pathlib import Path

from synod.v1 import local_pb2
from synod.v1 import northbound_pb2 as nb

from controller.node.codec import value_pb
from controller.node.datadir import init_data_dirs
from tests.cluster.harness import NodeProcess, free_port

BATCH_ROWS = 500  # rows per report or put (below an op's mutations_max)


def row(table: str, key: list, **values) -> nb.Row:
    out = nb.Row(table=table, key=[value_pb(k) for k in key])
    for name, v in values.items():
        out.values[name].CopyFrom(value_pb(v))
    return out


class WebNode:
    """`synod node run --web` in its own process (TLS API and web, as in production)."""

    def __init__(self, root: Path, name: str = "web") -> None:
        self.data = root / name
        init_data_dirs([self.data], name)
        self.web_port = free_port()
        self.proc = NodeProcess(1, self.data, free_port(), free_port(), [], root / f"{name}.log")
        self.proc.extra_args = ["--web", f"127.0.0.1:{self.web_port}"]
        self.url = f"https://127.0.0.1:{self.web_port}"

    def __enter__(self) -> WebNode:
        self.proc.start()
        assert self.proc.info["web_port"] == self.web_port
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.stop()

    def client(self, token: str | None = None):
        from controller.node.client import Client

        return Client(f"127.0.0.1:{self.proc.api_port}",
                      token or (self.data / "admin.token").read_text().strip(),
                      ca_file=str(self.data / "ca.crt"))

    def token(self, role: str = "viewer") -> str:
        with self.client() as c:
            return c.call(c.admin.CreateToken, nb.CreateTokenRequest(role=role)).token

    def get(self, path: str, token: str | None = None, method: str = "GET",
            headers: dict | None = None, body: bytes | None = None,
            timeout_s: float = 10) -> tuple[int, dict, bytes]:
        """One HTTPS request, the node's certificate checked against the cluster CA."""
        ctx = ssl.create_default_context(cafile=str(self.data / "ca.crt"))
        conn = http.client.HTTPSConnection("127.0.0.1", self.web_port, context=ctx,
                                           timeout=timeout_s)
        try:
            h = dict(headers or {})
            if token is not None:
                h["Authorization"] = f"Bearer {token}"
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()


def fill(client, sites: int, switches_per_site: int, flows: int, hosts_per_switch: int = 0,
         ) -> dict[str, int]:
    """Switches (chained inside a site, site gateways linked to the cloud's), their ports,
    links, hosts and flows, written as controllers and operators write them."""
    names = ["cloud"] + [f"edge{i}" for i in range(1, sites)]
    rows, dpids = [], []
    for si, site in enumerate(names):
        for k in range(1, switches_per_site + 1):
            dpid = f"{0x100 * si + k:016x}"
            dpids.append(dpid)
            rows.append(row("switches", [dpid], name=f"{site[0]}{si}s{k}", site=site,
                            master=site, generation_id=0x100 + si, connected=True))
            for port in (1, 2, 3, 4):
                rows.append(row("ports", [dpid, port], name=f"p{port}",
                                mac=f"aa:00:00:{si:02x}:{k:02x}:{port:02x}", up=True))
            if k > 1:  # a chain inside the site: port 2 of k-1 to port 1 of k
                prev = f"{0x100 * si + k - 1:016x}"
                rows.append(row("links", [prev, 2, dpid, 1], up=True, latency_ms=0.1))
                rows.append(row("links", [dpid, 1, prev, 2], up=True, latency_ms=0.1))
            for h in range(hosts_per_switch):
                mac = f"02:00:{si:02x}:{k:02x}:00:{h:02x}"
                rows.append(row("hosts", [mac], ip=f"10.{si}.{k}.{h + 1}", dpid=dpid,
                                port_no=3 + h % 2, vlan=0, last_seen_ms=0))
        if si:  # the site's first switch to the cloud's first: the WAN link
            a, b = "0000000000000001", f"{0x100 * si + 1:016x}"
            rows.append(row("links", [a, 4, b, 4], up=True, latency_ms=20.0))
            rows.append(row("links", [b, 4, a, 4], up=True, latency_ms=20.0))
    with client:
        for i in range(0, len(rows), BATCH_ROWS):
            client.call(client.local.ReportTopology,
                        local_pb2.TopologyReport(rows=rows[i:i + BATCH_ROWS]))
        flow_rows = [row("flows", [dpids[i % len(dpids)], f"f{i}"], table_id=0,
                         priority=100 + i % 50, match=f"in_port=1,eth_type=0x0800,"
                         f"ipv4_dst=10.200.{i // 250}.{i % 250 + 1}",
                         actions="output:2", cookie=0, idle_timeout=0, hard_timeout=0)
                     for i in range(flows)]
        for i in range(0, len(flow_rows), BATCH_ROWS):
            client.call(client.rows.Put, nb.PutRequest(rows=flow_rows[i:i + BATCH_ROWS]))
    return {"switches": len(dpids), "flows": flows, "sites": len(names)}


def chromium(width: int = 1400, height: int = 900):
    """Debian's headless Chromium through chromedriver (selenium). The node's certificate
    is signed by the cluster's own CA, which this browser profile does not hold: accept it
    (the tests check the certificate against the CA over Python's ssl instead)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--disable-extensions",
                "--no-first-run", "--password-store=basic"):
        opts.add_argument(arg)
    opts.set_capability("acceptInsecureCerts", True)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(shutil.which("chromedriver") or "/usr/bin/chromedriver")
    driver = webdriver.Chrome(service=service, options=opts)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    return driver


def open_view(driver, url: str, token: str, timeout_s: float = 20) -> float:
    """Load the page with the token in its fragment; seconds until the first snapshot was
    drawn (window.synod.updates >= 1)."""
    driver.get("about:blank")  # a new document even if only the fragment differs
    started = time.monotonic()
    driver.get(f"{url}/#token={token}")
    wait_until(driver, "return window.synod && window.synod.updates >= 1", timeout_s)
    return time.monotonic() - started


def wait_until(driver, script: str, timeout_s: float, interval_s: float = 0.05):
    """Poll a JS expression in the page until it is truthy (AssertionError naming it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = driver.execute_script(script)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {script}")
        time.sleep(interval_s)


SHOWN = """
const s = window.synod, cy = s.cy;
return {
  switches: cy.nodes('.switch').map(n => n.id().slice(3)).sort(),
  sites: cy.nodes('.site').map(n => n.id().slice(5)).sort(),
  separated_sites: cy.nodes('.site.separated').map(n => n.id().slice(5)).sort(),
  links: cy.edges('.link').map(e => e.id()).sort(),
  cut_links: cy.edges('.link.cut').map(e => e.id()).sort(),
  banner: document.getElementById('banner').textContent,
  banner_cut: document.getElementById('banner').dataset.cut,
  banner_equal: document.getElementById('banner').dataset.equal,
  members: [...document.querySelectorAll('#members tbody tr')].map(tr => (
      {node: tr.dataset.node, up: tr.dataset.up, digest: tr.dataset.digest})),
  conn: document.getElementById('conn').dataset.state,
  updates: s.updates,
};
"""


def shown(driver) -> dict:
    """What the page draws now: cytoscape's elements and the panel's rows."""
    return driver.execute_script(SHOWN)


def browser_errors(driver) -> list[str]:
    """Console errors (a CSP violation shows here)."""
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def dump(value) -> str:
    return json.dumps(value, indent=1, sort_keys=True)[:4000]
