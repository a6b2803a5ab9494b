"""The main emulation: a node and a controller per site, a flow, a WAN cut, a merge.

1. Cluster up: `synod node` + `synod-controller` per site; every switch connects to
   its site's controller and to a backup across the WAN; mastership is shown as the
   switches report it (OVS roles) beside the replicated table, which must agree.
2. A flow added through the cloud node is installed on an edge switch.
3. The edge site's WAN is cut (data plane, node links, remote controller links):
   the edge keeps forwarding inside, its controller stays master (OVS says so, and the
   edge's replicated table agrees), and a flow added through the edge node is
   installed while cut off.
4. Heal: the nodes' digests become equal, the cloud sees the edge's flow, and
   cross-site pings return.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from topologies.cloud_edge import cut_wan, heal_wan, sites
from topologies.netctl import (
    CONVERGE_TIMEOUT_S,
    EmulationError,
    Progress,
    checkpoint,
    ping_pairs,
    running_network,
    wait_converged,
)
from topologies.ovsroles import (
    OvsRolesError,
    SwitchMastership,
    agreement,
    compare,
    read_roles,
)
from topologies.reach import describe_pairs
from topologies.scenario import Phase, Report, ScenarioOptions
from topologies.sdn import SdnCluster

__all__ = ["run_sdn"]

FLOW_WAIT_S = 20
# OVSDB refreshes its role column lazily and the switches table is replicated: both lag a
# change of master by up to a few seconds, so they are compared until they agree, bounded.
MASTERSHIP_WAIT_S = 10


def _dump(bridge: str) -> str:
    try:
        return subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", bridge],
                              capture_output=True, text=True, timeout=30, check=False).stdout
    except subprocess.TimeoutExpired:
        raise EmulationError(f"ovs-ofctl dump-flows {bridge}: no answer within 30 s") from None


def _took(what: str, seconds: float | None, bound_s: float) -> tuple[str, bool]:
    if seconds is None:
        return f"{what}: not within {bound_s:g} s", False
    return f"{what} in {seconds:.2f} s", True


def run_sdn(topo, opts: ScenarioOptions, progress: Progress, log_dir: str,
            on_report=None, on_healed=None) -> Report:
    """The scenario; on_healed(cluster, report), if given, runs after the last check while
    everything still runs (bench/sites.py measures the idle cost there). A step that fails
    or times out (a node that does not answer, say) ends the scenario with a failed check
    naming the step and the cause; everything is torn down either way."""
    site_names = ["cloud"] + [f"edge{i}" for i in range(1, opts.sites + 1)]
    with SdnCluster(site_names, Path(log_dir), progress) as cluster, \
            running_network(topo, 0, progress, targets_for=cluster.controller_targets) as net:
        checkpoint()
        site_map = sites(net)
        report = Report(
            f"Synod emulation: 1 cloud + {opts.sites} edge sites, a node and a controller per "
            f"site, {opts.hosts_per_site} hosts per site, WAN {opts.wan_delay_ms:g} ms one-way",
            list(site_map))
        step = ["start"]
        try:
            _scenario(cluster, net, opts, progress, report, step)
        except EmulationError as e:
            report.checks.append((f"{step[0]}: {e}", False))
            report.notes.append(f"logs: {log_dir} (each site's logs/node.log, "
                                "logs/controller.log)")
            return report
        if on_healed is not None:
            on_healed(cluster, report)
        if opts.web:
            report.notes.append("web view: " + ", ".join(
                f"{s} {cluster.web_url(s, with_token=False)}" for s in site_names))
            if on_report is not None:
                on_report(report)
            _hold(progress, cluster.web_url("cloud"))
        return report


def _scenario(cluster: SdnCluster, net, opts: ScenarioOptions, progress: Progress,
              report: Report, step: list[str]) -> None:
    """The checks, in order; step[0] names the one under way (for a failure's check)."""
    site_names = cluster.sites
    cut = opts.cut_site
    cut_index = int(cut[4:])
    edge_dpid = f"{0x100 * cut_index + 1:016x}"
    edge_bridge = f"e{cut_index}s1"
    site_map = sites(net)
    site_of_host = {h: s.name for s in site_map.values() for h in s.hosts}
    pairs = [(a, b) for a in site_of_host for b in site_of_host if a != b]
    checks = report.checks
    step[0] = "start: the web view's token"
    progress(f"web view of the cloud node: {cluster.web_url('cloud')} (TLS certificate "
             f"signed by the cluster CA {cluster.ca})")
    step[0] = "start"
    progress("waiting for mastership and cross-site paths (LLDP + replicated topology)")
    started, bound = wait_converged(net, pairs)
    _timing(report, "start", started.took)
    checks.append(started.check("start: every host reached every other host", bound,
                                site_of_host))
    step[0] = "mastership"
    bridges = {name: net[name].dpid for s in site_map.values() for name in s.switches}
    progress("comparing mastership: OVS roles with the replicated switches table")
    rows = _mastership(cluster, "cloud", bridges)
    report.notes.append("mastership (OVS controller roles per bridge; replicated switches "
                        "table at the cloud node):")
    report.notes += [f"  {row.describe()}" for row in rows]
    checks.append(agreement(rows, len(bridges), "the cloud node's"))
    not_home = [row for row in rows if row.ovs_master != _home_of(row.dpid)]
    checks.append(("every switch is mastered by its own site's controller (OVS roles)"
                   + (f": not {', '.join(r.disagreement() for r in not_home)}"
                      if not_home else ""),
                   not not_home and len(rows) == len(bridges)))
    step[0] = "before"
    before = Phase("before (all WAN links up)", ping_pairs(net, pairs), site_of_host)
    report.phases.append(before)
    checks.append(before.all_answered("before: every host reaches every other host"))
    checkpoint()

    step[0] = f"a flow added at the cloud for {edge_bridge}"
    progress(f"adding flow 'from-cloud' for {edge_bridge} through the cloud node")
    cluster.synod("cloud", "flows", "add", edge_dpid, "from-cloud", "--priority", "300",
                  "--match", "eth_type=0x0800,ipv4_dst=10.250.0.1", "--actions", "drop")
    took = cluster.wait(lambda: "nw_dst=10.250.0.1" in _dump(edge_bridge), FLOW_WAIT_S)
    checks.append(_took(f"a flow added at the cloud reached {edge_bridge} (from its ack)", took,
                        FLOW_WAIT_S))
    checkpoint()

    step[0] = f"cut: {cut}'s WAN"
    _pause(opts, progress, f"cutting the WAN of {cut}")
    progress(f"cutting the WAN of {cut} (data plane, node links, backup controller links)")
    cut_wan(net, cut)
    cluster.cut(cut)
    during = None
    try:
        cut_side = {h: site == cut for h, site in site_of_host.items()}
        inside = [(a, b) for a, b in pairs if cut_side[a] and cut_side[b]]
        still = [(a, b) for a, b in pairs if cut_side[a] == cut_side[b]]
        crossing = [(a, b) for a, b in pairs if cut_side[a] != cut_side[b]]
        cut_s, bound = wait_converged(net, still)
        checks.append(cut_s.check("cut: the paths that should survive did", bound,
                                  site_of_host))
        step[0] = f"cut off, a flow added at {cut}"
        progress(f"adding flow 'local' for {edge_bridge} through the {cut} node, cut off")
        cluster.synod(cut, "flows", "add", edge_dpid, "local", "--priority", "300",
                      "--match", "eth_type=0x0800,ipv4_dst=10.250.0.2", "--actions", "drop")
        took = cluster.wait(lambda: "nw_dst=10.250.0.2" in _dump(edge_bridge), FLOW_WAIT_S)
        checks.append(_took(f"cut off, {cut} still programs its switch (from the ack)", took,
                            FLOW_WAIT_S))
        step[0] = f"during {cut}'s cut"
        during = Phase(f"during ({cut} WAN cut)", ping_pairs(net, pairs), site_of_host)
        lost = [p for p in inside if not during.results[p]]
        checks.append((f"during: {cut} hosts still reach each other" + (
            f": not {describe_pairs(lost, site_of_host, inside)}" if lost else ""), not lost))
        leaked = [p for p in crossing if during.results[p]]
        checks.append((f"during: no other site reaches {cut}" + (
            f": answered {describe_pairs(leaked, site_of_host, crossing)}" if leaked else ""),
            not leaked))
        edge_rows = _mastership(cluster, cut, {edge_bridge: edge_dpid})
        edge_ok = [r.ovs_master for r in edge_rows if r.agrees] == [cut]
        checks.append((f"during: {cut}'s controller is still master of {edge_bridge} "
                       f"(OVS, and {cut}'s table agrees)" +
                       ("" if edge_ok else
                        f": {', '.join(r.disagreement() for r in edge_rows)}"),
                       edge_ok))
        _pause(opts, progress, f"healing the WAN of {cut}")
    finally:
        progress(f"healing the WAN of {cut}")
        cluster.heal(cut)
        heal_wan(net, cut)
    report.phases.append(during)
    checkpoint()

    step[0] = "heal"
    progress("waiting for the nodes to merge (equal digests) and paths to return")
    unanswered: list[str] = []
    merged = cluster.wait(lambda: _equal_digests(cluster, site_names, unanswered),
                          CONVERGE_TIMEOUT_S)
    _timing(report, "heal_digests", merged)
    text, ok = _took("heal: every node holds the same state (equal digests)", merged,
                     CONVERGE_TIMEOUT_S)
    if not ok and unanswered:
        text += f" (last: {unanswered[-1]})"
    checks.append((text, ok))
    step[0] = f"heal: {cut}'s flow at the cloud"
    flows_at_cloud = cluster.synod("cloud", "flows", "list", "--dpid", edge_dpid)
    checks.append((f"heal: the cloud node has {cut}'s local flow",
                   bool(re.search(r"\blocal\b", flows_at_cloud))))
    step[0] = "heal: reachability"
    healed, bound = wait_converged(net, pairs)
    _timing(report, "heal_reachability", healed.took)
    checks.append(healed.check("heal: full reachability returned", bound, site_of_host))
    after = Phase("after (healed)", ping_pairs(net, pairs), site_of_host)
    report.phases.append(after)
    checks.append(after.all_answered("after: every host reaches every other host again"))
    report.notes.append(f"logs: {cluster.workdir} (each site's logs/node.log, "
                        "logs/controller.log)")


def _timing(report: Report, name: str, seconds: float | None) -> None:
    if seconds is not None:
        report.timings_s[name] = seconds


def _equal_digests(cluster: SdnCluster, site_names: list[str], unanswered: list[str]) -> bool:
    """Do all nodes answer with one digest? A node that does not answer is noted (the
    failed check names it) and the wait goes on."""
    try:
        digests = cluster.digests()
    except EmulationError as e:
        unanswered.append(str(e))
        return False
    return len({digests[s] for s in site_names}) == 1


def _pause(opts: ScenarioOptions, progress: Progress, what: str) -> None:
    """With --web: time to look at the page before the next step (Ctrl-C still stops)."""
    if opts.web_pause_s <= 0:
        return
    progress(f"{what} in {opts.web_pause_s:g} s (watch the web view)")
    deadline = time.monotonic() + opts.web_pause_s
    while time.monotonic() < deadline:
        checkpoint()
        time.sleep(0.2)


def _hold(progress: Progress, url: str) -> None:
    """Keep everything running, the page live, until Ctrl-C (or SIGTERM); then tear down."""
    progress(f"the emulation keeps running; web view: {url} (Ctrl-C stops and tears down)")
    try:
        while True:
            checkpoint()
            time.sleep(0.2)
    except KeyboardInterrupt:
        progress("stopping")


def _mastership(cluster: SdnCluster, table_site: str,
                bridges: dict[str, str]) -> list[SwitchMastership]:
    """OVS's roles on `bridges` (name -> dpid) beside `table_site`'s switches table, once
    they agree or MASTERSHIP_WAIT_S has passed (then as they last were)."""
    rows: list[SwitchMastership] = []
    errors: list[str] = []

    def agree() -> bool:
        table = cluster.masters(table_site)
        try:
            roles = read_roles(bridges)
        except OvsRolesError as e:
            errors.append(str(e))
            return False
        rows[:] = compare(roles, cluster.target_sites(),
                          {d: table[d] for d in bridges.values() if d in table})
        return len(rows) == len(bridges) and all(r.agrees for r in rows)

    if cluster.wait(agree, MASTERSHIP_WAIT_S) is None and not rows and errors:
        raise EmulationError(f"cannot read controller roles from OVS: {errors[-1]}")
    return rows


def _home_of(dpid_hex: str) -> str:
    """The site a cloud-edge DPID belongs to (0x100 * site index + switch number)."""
    number = int(dpid_hex, 16)
    return "cloud" if number < 0x100 else f"edge{number >> 8}"
