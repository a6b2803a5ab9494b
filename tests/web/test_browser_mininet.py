"""The web view of a real emulation in headless Chromium: every switch and link, a WAN cut
shown within 2 s, equal digests after the heal; screenshots kept as test artefacts.

Cloud + 2 edge sites, 2 switches each (Mininet, userspace OVS), a `synod node` (web view
on) and a `synod-controller` per site; the page is the cloud node's.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

from tests.web.helpers import browser_errors, chromium, dump, open_view, shown, wait_until
from topologies.cloud_edge import CloudEdgeTopo, WanRelay, cut_wan, heal_wan
from topologies.emulate import converge, ensure_ovs, running_network
from topologies.sdn import SdnCluster

pytestmark = [pytest.mark.mininet,
              pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium")]
SITES = ["cloud", "edge1", "edge2"]
CONVERGE_S = 60  # LLDP, mastership and host learning across three controllers
SHOWN_S = 2.0  # the bound: a cut shows on the page within this
HEAL_S = 30


def _expected(topo: CloudEdgeTopo) -> tuple[set[str], set[tuple[str, str]]]:
    """Switch dpids, and switch pairs joined by a cable or a WAN relay, from the topology."""
    dpid = {n: topo.nodeInfo(n)["dpid"] for n in topo.switches()
            if topo.nodeInfo(n).get("cls") is not WanRelay and "dpid" in topo.nodeInfo(n)}
    relays = {n for n in topo.switches() if n not in dpid}
    pairs = set()
    for a, b in topo.links():
        if a in dpid and b in dpid:
            pairs.add(tuple(sorted((dpid[a], dpid[b]))))
    for r in relays:
        ends = [x if y == r else y for x, y in topo.links() if r in (x, y)]
        ends = [e for e in ends if e in dpid]
        if len(ends) == 2:
            pairs.add(tuple(sorted((dpid[ends[0]], dpid[ends[1]]))))
    return set(dpid.values()), pairs


def _pairs(link_ids: list[str]) -> set[tuple[str, str]]:
    """Cytoscape edge ids 'ln:A/p-B/q' as undirected dpid pairs."""
    out = set()
    for i in link_ids:
        a, b = i[3:].split("-")
        out.add(tuple(sorted((a.split("/")[0], b.split("/")[0]))))
    return out


def _statuses(cluster: SdnCluster) -> dict[str, tuple[dict, str]]:
    """site -> (version vector, state digest), read from every node back to back."""
    from synod.v1 import northbound_pb2 as nb

    from controller.node.client import Client

    out = {}
    for site in SITES:
        with Client(f"127.0.0.1:{cluster.api[site]}", cluster.token_file.read_text().strip(),
                    ca_file=str(cluster.ca)) as c:
            st = c.call(c.cluster.GetStatus, nb.GetStatusRequest())
            out[site] = ({a: s for a, s in st.version_vector.items() if s},
                         st.state_digest.hex())
    return out


def _artefacts(tmp_path) -> str:
    where = os.environ.get("SYNOD_ARTEFACTS") or str(tmp_path)
    os.makedirs(where, exist_ok=True)
    return where


def test_page_shows_the_emulation_a_wan_cut_and_the_heal(tmp_path):
    ensure_ovs(lambda _m: None)
    topo = CloudEdgeTopo(sites=2, hosts_per_site=1, switches_per_site=2, wan_delay_ms=2)
    switches, links = _expected(topo)
    assert len(switches) == 6 and len(links) == 5  # the test reads the topology right
    artefacts = _artefacts(tmp_path)
    driver = None
    with SdnCluster(SITES, tmp_path / "cluster", lambda _m: None) as cluster, \
            running_network(topo, 0, lambda _m: None,
                            targets_for=cluster.controller_targets) as net:
        try:
            hosts = [h.name for h in net.hosts]
            everyone = [(a, b) for a in hosts for b in hosts if a != b]
            assert converge(net, everyone, CONVERGE_S) is not None, "never fully reachable"
            cluster.web_url("cloud")  # makes the viewer token
            driver = chromium()
            open_view(driver, f"https://127.0.0.1:{cluster.web['cloud']}", cluster.viewer_token)

            # Every switch and link of the emulation (LLDP fills the links table).
            def complete() -> bool:
                s = shown(driver)
                return (set(s["switches"]) == switches and _pairs(s["links"]) == links
                        and not s["cut_links"] and s["banner_equal"] == "yes")

            try:
                wait_until(driver, "return true", 1)
                deadline = time.monotonic() + CONVERGE_S
                while not complete():
                    assert time.monotonic() < deadline, dump(shown(driver))
                    time.sleep(0.2)
            finally:
                driver.save_screenshot(os.path.join(artefacts, "web-before-cut.png"))
            s = shown(driver)
            masters = driver.execute_script(
                "return window.synod.view.topology.switches.map(s => [s.dpid, s.master, "
                "s.generation_id])")
            assert {m[1] for m in masters} == set(SITES) and all(m[2] > 0 for m in masters)
            assert browser_errors(driver) == []

            # The cut: edge1's WAN (data plane, node links, remote controller links).
            wan = tuple(sorted(("0000000000000001", "0000000000000101")))
            cut_wan(net, "edge1")
            cluster.cut("edge1")
            cut_at = time.monotonic()
            try:
                while True:
                    s = shown(driver)
                    if wan in _pairs(s["cut_links"]) and s["separated_sites"] == ["edge1"]:
                        break
                    assert time.monotonic() - cut_at < SHOWN_S, (
                        f"the cut did not show within {SHOWN_S} s: {dump(s)}")
                    time.sleep(0.05)
                shown_s = time.monotonic() - cut_at
                edge1_row = [m for m in s["members"] if m["up"] == "no"]
                assert len(edge1_row) == 1, dump(s)  # the page names the node it lost
                assert int(s["banner_cut"]) >= 1 and "edge1" in s["banner"]
                time.sleep(0.5)  # let the page settle for the picture
                driver.save_screenshot(os.path.join(artefacts, "web-during-cut.png"))
            finally:
                cluster.heal("edge1")
                heal_wan(net, "edge1")

            # The heal: digests equal on every member, the WAN link up again.
            healed_at = time.monotonic()
            while True:
                s = shown(driver)
                if (s["banner_equal"] == "yes" and not s["cut_links"]
                        and not s["separated_sites"]
                        and all(m["digest"] == "equal" and m["up"] == "yes"
                                for m in s["members"])):
                    break
                assert time.monotonic() - healed_at < HEAL_S, dump(s)
                time.sleep(0.2)
            heal_shown_s = time.monotonic() - healed_at
            # The nodes agree too, and the page's inference holds: equal version vectors,
            # equal state digests. Controllers keep writing after a heal (LLDP, stats), so
            # the three are read back to back over gRPC until they agree, bounded.
            samples = []
            deadline = time.monotonic() + HEAL_S
            while True:
                now = _statuses(cluster)
                samples.append(now)
                vectors = {site: v for site, (v, _) in now.items()}
                for a in SITES:
                    for b in SITES:
                        if vectors[a] == vectors[b]:
                            assert now[a][1] == now[b][1], (
                                f"equal vectors, different digests: {a} {b} {now}")
                if len({d for _, d in now.values()}) == 1:
                    break
                assert time.monotonic() < deadline, f"never agreed: {samples[-3:]}"
                time.sleep(0.1)
            driver.save_screenshot(os.path.join(artefacts, "web-after-heal.png"))
            print(f"cut shown in {shown_s:.2f} s; heal (equal digests, link up) shown in "
                  f"{heal_shown_s:.2f} s; screenshots in {artefacts}")
        finally:
            if driver is not None:
                driver.quit()
