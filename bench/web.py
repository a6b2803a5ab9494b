"""Load time of the web view with many switches and flows, in Debian's headless Chromium.

Run: .venv/bin/python bench/web.py [--sites 10] [--switches 200] [--flows 1000] [--loads 5]
     [--screenshot FILE]
Starts one node (a real process, TLS, web view on) in a temporary directory and fills its
tables through the API as controllers and operators would: --switches switches spread over
--sites sites (chained inside a site, each site's first switch linked to the cloud's),
4 ports and 1 host per switch, and --flows flows. Then, --loads times each:
- the page: navigation to the first snapshot drawn (wall, from selenium), and the page's
  own clock (performance.now at the first draw: parse, the library, the stream, drawing);
- the snapshot: GET /api/snapshot over TLS (build + transfer) and its size;
- an update: one switch row written through the API until the open page draws it;
- opening every collapsed site (all switches drawn at once) in the page.
Prints the figures and the machine; writes JSON to bench/results/. Hold the shared lock
when others use Chromium: `flock /tmp/synod-net.lock .venv/bin/python bench/web.py`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.machine import describe  # noqa: E402
from tests.web.helpers import (  # noqa: E402
    WebNode,
    browser_errors,
    chromium,
    fill,
    open_view,
    row,
    shown,
    wait_until,
)

RESULTS = Path(__file__).resolve().parent / "results"


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sites", type=int, default=10)
    p.add_argument("--switches", type=int, default=200)
    p.add_argument("--flows", type=int, default=1000)
    p.add_argument("--loads", type=int, default=5)
    p.add_argument("--screenshot", default="")
    args = p.parse_args()
    if args.sites < 1 or args.switches < args.sites or args.loads < 1:
        p.error("need --sites >= 1, --switches >= --sites, --loads >= 1")
    per_site = args.switches // args.sites
    from synod.v1 import local_pb2

    with tempfile.TemporaryDirectory(prefix="synod-bench-web-") as tmp, \
            WebNode(Path(tmp)) as node:
        started = time.monotonic()
        filled = fill(node.client(), args.sites, per_site, args.flows, hosts_per_switch=1)
        fill_s = time.monotonic() - started
        token = node.token("viewer")
        snapshot_ms, size = [], 0
        for _ in range(args.loads):
            t = time.monotonic()
            status, _, body = node.get("/api/snapshot", token=token)
            snapshot_ms.append((time.monotonic() - t) * 1000)
            assert status == 200, status
            size = len(body)
        view = json.loads(body)
        driver = chromium()
        try:
            wall_ms, page_ms, drawn = [], [], {}
            for _ in range(args.loads):
                wall_ms.append(open_view(driver, node.url, token) * 1000)
                page_ms.append(driver.execute_script("return window.synod.firstRenderMs"))
                drawn = shown(driver)
            errors = browser_errors(driver)
            update_ms = []
            for i in range(args.loads):  # a change written through the API, drawn live
                name = f"late{i}"
                t = time.monotonic()
                with node.client() as c:
                    c.call(c.local.ReportTopology, local_pb2.TopologyReport(rows=[
                        row("switches", ["0000000000000001"], name=name, site="cloud",
                            master="cloud", generation_id=0x100, connected=True)]))
                wait_until(driver, "return window.synod.view.topology.switches.some("
                                   f"s => s.name == '{name}')", 10, 0.01)
                update_ms.append((time.monotonic() - t) * 1000)
            # Every site opened at once: all switches, hosts and links drawn (one frame).
            expanded_ms = driver.execute_async_script("""
                const done = arguments[arguments.length - 1], s = window.synod;
                const t = performance.now();
                for (const site of s.view.topology.sites) s.expanded.add(site.name);
                s.redraw();
                requestAnimationFrame(() => done(performance.now() - t));""")
            expanded = driver.execute_script("return window.synod.cy.nodes('.switch').length")
            assert expanded == filled["switches"], expanded
            if args.screenshot:
                driver.execute_script("window.synod.expanded.clear(); window.synod.redraw()")
                driver.save_screenshot(args.screenshot)
        finally:
            driver.quit()
    report = {
        "bench": "web", "when": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": describe(
            "grpcio", "selenium"),
        "switches": filled["switches"], "sites": filled["sites"], "flows": filled["flows"],
        "hosts": filled["switches"], "fill_s": round(fill_s, 2),
        "snapshot_bytes": size, "snapshot_ms_median": _median(snapshot_ms),
        "page_load_wall_ms_median": _median(wall_ms),
        "page_load_wall_ms_max": round(max(wall_ms), 1),
        "page_first_draw_ms_median": _median(page_ms),
        "update_drawn_ms_median": _median(update_ms),
        "open_all_sites_ms": round(expanded_ms, 1),
        "drawn_collapsed": {"sites": len(drawn["sites"]), "switches": len(drawn["switches"]),
                            "links": len(drawn["links"])},
        "switches_in_view": len(view["topology"]["switches"]),
        "browser_errors": errors,
    }
    print(json.dumps(report, indent=2))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"web-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"written: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
