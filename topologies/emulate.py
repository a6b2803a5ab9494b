"""`synod emulate`'s scenarios: bring a network up, ping, cut and heal, report.

`synod emulate` is a thin CLI over `run_scenario`; the plumbing (OVS, controller
processes, Mininet, cleanup) is in topologies/netctl.py, the per-site cluster mode
in topologies/sdn.py and topologies/sdn_scenario.py.
"""

from __future__ import annotations

import os
import shutil

from mininet.log import setLogLevel
from mininet.net import Mininet

from topologies.classic import make_topo
from topologies.cloud_edge import cut_wan, heal_wan, sites
from topologies.netctl import (
    CONVERGE_TIMEOUT_S,
    OWNER_ENV,
    EmulationError,
    Progress,
    all_pairs,
    checkpoint,
    cleanup_leftovers,
    controller_process,
    converge,
    deferred_signals,
    ensure_ovs,
    ensure_root,
    free_port,
    ping_pairs,
    running_network,
    start_controller,
    stop_process,
    wait_converged,
)
from topologies.scenario import Phase, Report, ScenarioOptions

__all__ = [
    "CONVERGE_TIMEOUT_S",
    "OWNER_ENV",
    "EmulationError",
    "Phase",
    "Progress",
    "Report",
    "ScenarioOptions",
    "checkpoint",
    "cleanup_leftovers",
    "controller_process",
    "converge",
    "deferred_signals",
    "ensure_ovs",
    "ensure_root",
    "free_port",
    "ping_pairs",
    "run_scenario",
    "running_network",
    "start_controller",
    "stop_process",
]

def run_scenario(opts: ScenarioOptions, progress: Progress, log_dir: str,
                 on_report=None, on_healed=None) -> Report:
    """Bring the network up, ping, cut and heal one edge WAN link, tear down, report.
    With opts.web, on_report(report) is called before the hold until Ctrl-C; with the
    sdn controllers, on_healed(cluster, report) after the last check (benchmarks)."""
    topo = _validated_topo(opts)
    if opts.controllers not in ("sdn", "single"):
        raise EmulationError(f"--controllers must be sdn or single, got {opts.controllers!r}")
    if opts.web and not (opts.topo == "cloudedge" and opts.controllers == "sdn"):
        raise EmulationError("--web needs the cloudedge topology with --controllers sdn "
                             "(the page is served by each site's node)")
    ensure_root()
    if shutil.which("ping") is None:
        raise EmulationError("ping is not installed (Mininet would report 100% loss): "
                             "apt-get install -y iputils-ping")
    setLogLevel("info" if opts.verbose else "error")
    ensure_ovs(progress)
    progress("Open vSwitch is running")
    if opts.topo == "cloudedge" and opts.controllers == "sdn":
        from topologies.sdn_scenario import run_sdn

        with deferred_signals():
            return run_sdn(topo, opts, progress, log_dir, on_report, on_healed)
    port = opts.of_port or free_port("127.0.0.1")
    log_path = os.path.join(log_dir, "synod-controller.log")
    progress(f"starting synod-controller on 127.0.0.1:{port} (log: {log_path})")
    with deferred_signals(), controller_process(port, log_path), \
            running_network(topo, port, progress) as net:
        checkpoint()
        if opts.topo == "cloudedge":
            return _partition_heal(net, opts, progress)
        return _pingall_only(net, opts, progress)


def _validated_topo(opts: ScenarioOptions):
    """Build the topology object (no network yet), so bad input fails before any I/O."""
    if opts.topo != "cloudedge":
        return make_topo(opts.topo, opts.sites)
    topo = make_topo(opts.topo, opts.sites, hosts_per_site=opts.hosts_per_site,
                     switches_per_site=opts.switches_per_site, wan_delay_ms=opts.wan_delay_ms,
                     wan_rate_mbit=opts.wan_rate_mbit, wan_loss_pct=opts.wan_loss_pct)
    edges = [f"edge{i}" for i in range(1, opts.sites + 1)]
    if opts.cut_site not in edges:
        raise EmulationError(f"cannot cut {opts.cut_site!r}: choose an edge site, edge1 to "
                             f"edge{opts.sites}")
    return topo


def _pingall_only(net: Mininet, opts: ScenarioOptions, progress: Progress) -> Report:
    site_of_host = {h.name: h.name for h in net.hosts}  # no sites: pairs named one by one
    pairs = all_pairs(net)
    progress("waiting for the network to converge (link discovery, host learning)")
    took, bound = wait_converged(net, pairs)
    progress("pingall")
    phase = Phase("pingall", ping_pairs(net, pairs), {h: "all" for h in site_of_host})
    report = Report(f"Synod emulation: {opts.topo} topology, size {opts.sites}", ["all"],
                    [phase])
    report.checks.append(took.check("the network converged", bound, site_of_host))
    named = Phase(phase.name, phase.results, site_of_host)
    report.checks.append(named.all_answered("every host reaches every other host"))
    return report


def _partition_heal(net: Mininet, opts: ScenarioOptions, progress: Progress) -> Report:
    site_map = sites(net)
    site_of_host = {h: s.name for s in site_map.values() for h in s.hosts}
    pairs = all_pairs(net)
    cut = opts.cut_site
    title = (f"Synod emulation: 1 cloud + {opts.sites} edge sites, {opts.hosts_per_site} "
             f"hosts per site, WAN {opts.wan_delay_ms:g} ms one-way, "
             f"{opts.wan_rate_mbit:g} Mbit/s, {opts.wan_loss_pct:g}% loss")
    report = Report(title, list(site_map))
    progress("waiting for the network to converge (link discovery, host learning)")
    start, bound = wait_converged(net, pairs)
    progress(f"phase 1/3: pingall across {len(site_map)} sites ({len(pairs)} pings)")
    before = Phase("before (all WAN links up)", ping_pairs(net, pairs), site_of_host)
    report.phases.append(before)
    checkpoint()

    progress(f"phase 2/3: cutting the WAN link of {cut}")
    cut_wan(net, cut)
    try:
        still = [(a, b) for a, b in pairs
                 if (site_of_host[a] == cut) == (site_of_host[b] == cut)]
        cut_s, cut_bound = wait_converged(net, still)
        during = Phase(f"during ({cut} WAN cut)", ping_pairs(net, pairs), site_of_host)
    finally:
        progress(f"phase 3/3: healing the WAN link of {cut}")
        heal_wan(net, cut)
    report.phases.append(during)
    checkpoint()
    heal_s, _ = wait_converged(net, pairs)
    after = Phase("after (healed)", ping_pairs(net, pairs), site_of_host)
    report.phases.append(after)

    inside_ok, inside_total = during.between(cut, cut)
    out_ok = sum(during.between(s, cut)[0] + during.between(cut, s)[0]
                 for s in site_map if s != cut)
    others = [s for s in site_map if s != cut]
    others_ok = all(during.between(a, b)[0] == during.between(a, b)[1]
                    for a in others for b in others)
    report.checks += [
        start.check("start: every host reached every other host", bound, site_of_host),
        before.all_answered("before: every host reaches every other host"),
        cut_s.check("cut: the paths that should survive did", cut_bound, site_of_host),
        (f"during: {cut} hosts still reach each other ({inside_ok}/{inside_total})",
         inside_ok == inside_total),
        (f"during: no other site reaches {cut} ({out_ok} answered)", out_ok == 0),
        ("during: the other sites still reach each other", others_ok),
        heal_s.check("heal: full reachability returned", bound, site_of_host),
        after.all_answered("after: every host reaches every other host again"),
    ]
    return report
