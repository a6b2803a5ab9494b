"""Cloud-edge Mininet topology: one cloud site, N edge sites, emulated WAN links.

Load it the way Mininet users already do:

    mn --custom topologies/cloud_edge.py --topo cloudedge,3 \\
       --controller remote,port=6653 --switch ovs,datapath=user,protocols=OpenFlow13

Each site has `switches_per_site` switches in a chain (the first is the site's
gateway) and `hosts_per_site` hosts spread over them. Every edge gateway has a
WAN link to the cloud gateway through a WanRelay node, which adds delay, loss and
a rate limit in user space (this kernel has no sch_netem, so TCLink cannot).

Naming: the cloud site is `cloud` (switches cs1.., hosts ch1..); edge site i is
`edge<i>` (switches e<i>s1.., hosts e<i>h1..); the WAN relay of edge i is w<i>.
DPIDs encode the site: 0x100*i + k for switch k of site i (cloud is i = 0).
Hosts of site i get 10.i.0.j/8 and MAC 02:00:00:00:<i>:<j> (locally administered).

Only Mininet and the standard library are imported, so Debian's /usr/bin/mn can
load this file directly.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
from dataclasses import dataclass

from mininet.node import OVSSwitch, RemoteController, Switch
from mininet.topo import Topo

__all__ = [
    "CLOUD",
    "OWNER_ENV",
    "OWNER_KEY",
    "CloudEdgeTopo",
    "SiteInfo",
    "SiteSwitch",
    "SynodRemote",
    "WanRelay",
    "cut_wan",
    "heal_wan",
    "site_of",
    "sites",
    "switches",
    "topos",
    "controllers",
]

CLOUD = "cloud"
# What Synod starts carries its owner's pid, so a cleanup touches only what a dead run
# left (never a live run's, never other software's): processes in their environment,
# OVS bridges in external-ids.
OWNER_ENV = "SYNOD_EMULATION_OWNER"
OWNER_KEY = "synod-owner"
SITES_MAX = 250  # site index lands in one byte of the DPID and the IP address
HOSTS_PER_SITE_MAX = 250
SWITCHES_PER_SITE_MAX = 250


def _this_file() -> str:
    # Works both when imported and when exec'd by `mn --custom` (no __file__ then).
    return _this_file.__code__.co_filename


def _relay_script() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(_this_file())), "wanrelay.py")


class SynodRemote(RemoteController):
    """RemoteController without Mininet's telnet liveness check.

    Mininet decodes `telnet`'s output as UTF-8; os-ken greets every connection with an
    OpenFlow HELLO whose random xid is often invalid UTF-8, so `--controller remote`
    fails now and then with UnicodeDecodeError. `--controller synod,port=6653` avoids it.
    """

    def checkListening(self):
        return None


class SiteSwitch(OVSSwitch):
    """An OVS switch that announces its home site to controllers in its description.

    OpenFlow's description reply carries OVS's `other-config:dp-desc`; Synod's controller
    reads "synod-site=<site>" from it to know which controller is the switch's home.
    The bridge also carries its creator's pid (external-ids:synod-owner), for --cleanup.
    """

    def bridgeOpts(self):
        opts = OVSSwitch.bridgeOpts(self) + f" external-ids:{OWNER_KEY}={os.getpid()}"
        site = self.params.get("site")
        if site and re.fullmatch(r"[A-Za-z0-9_.-]+", site):
            opts = opts.replace(f"other-config:dp-desc={self.name}",
                                f"other-config:dp-desc={self.name},synod-site={site}")
        return opts


class WanRelay(Switch):
    """A WAN link as a Mininet node: two ports, frames relayed with delay/loss/rate.

    It is a Switch so that Mininet's pingall leaves it out, but it has no
    controller: `connected()` is always true.
    """

    def __init__(self, name, delay_ms=20.0, rate_mbit=100.0, loss_pct=0.0, seed=1, **params):
        params.setdefault("inNamespace", True)
        Switch.__init__(self, name, **params)
        self.delay_ms = float(delay_ms)
        self.rate_mbit = float(rate_mbit)
        self.loss_pct = float(loss_pct)
        self.seed = int(seed)
        self.relay = None

    def connected(self):
        return True

    def start(self, controllers):
        intfs = [i for i in self.intfList() if i.name != "lo"]
        if len(intfs) != 2:
            raise ValueError(f"WAN relay {self.name} needs exactly 2 links, has {len(intfs)}")
        for intf in intfs:
            self.cmd(f"ip link set {intf.name} up")
            # Frames must stay MTU-sized: no merging on receive, no segmentation offload.
            self.cmd(f"ethtool -K {intf.name} gro off gso off tso off tx off rx off "
                     ">/dev/null 2>&1")
        self.relay = self.popen(
            [sys.executable, _relay_script(), "--a", intfs[0].name, "--b", intfs[1].name,
             "--delay-ms", str(self.delay_ms), "--rate-mbit", str(self.rate_mbit),
             "--loss-pct", str(self.loss_pct), "--seed", str(self.seed)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=dict(os.environ, **{OWNER_ENV: str(os.getpid())}),  # for --cleanup
        )

    def stop(self, deleteIntfs=True):
        if self.relay is not None and self.relay.poll() is None:
            self.relay.send_signal(signal.SIGTERM)
            try:
                self.relay.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.relay.kill()
                self.relay.wait(timeout=3)
        self.relay = None
        Switch.stop(self, deleteIntfs)


def _check_count(name: str, value: int, low: int, high: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number, got {value!r}") from None
    if not low <= number <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {number}")
    return number


def _check_nonneg(name: str, value: float) -> float:
    number = float(value)
    if number < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return number


def site_name(index: int) -> str:
    return CLOUD if index == 0 else f"edge{index}"


def _prefix(index: int) -> str:
    return "c" if index == 0 else f"e{index}"


class CloudEdgeTopo(Topo):
    """One cloud site and `sites` edge sites joined to it by emulated WAN links."""

    def build(self, sites=3, hosts_per_site=2, switches_per_site=1,
              wan_delay_ms=20.0, wan_rate_mbit=100.0, wan_loss_pct=0.0, seed=1,
              edge_ring=False):
        sites = _check_count("sites", sites, 1, SITES_MAX)
        hosts_per_site = _check_count("hosts_per_site", hosts_per_site, 1, HOSTS_PER_SITE_MAX)
        switches_per_site = _check_count("switches_per_site", switches_per_site, 1,
                                         SWITCHES_PER_SITE_MAX)
        wan_delay_ms = _check_nonneg("wan_delay_ms", wan_delay_ms)
        wan_rate_mbit = _check_nonneg("wan_rate_mbit", wan_rate_mbit)
        wan_loss_pct = _check_nonneg("wan_loss_pct", wan_loss_pct)
        if wan_loss_pct > 100:
            raise ValueError(f"wan_loss_pct must be at most 100, got {wan_loss_pct}")
        rng = random.Random(seed)
        for index in range(sites + 1):
            prefix = _prefix(index)
            switches = []
            for k in range(1, switches_per_site + 1):
                name = f"{prefix}s{k}"
                self.addSwitch(name, dpid=f"{0x100 * index + k:016x}", site=site_name(index))
                if switches:
                    self.addLink(switches[-1], name)
                switches.append(name)
            for j in range(1, hosts_per_site + 1):
                host = self.addHost(f"{prefix}h{j}", ip=f"10.{index}.0.{j}/8",
                                    mac=f"02:00:00:00:{index:02x}:{j:02x}",
                                    site=site_name(index))
                self.addLink(host, switches[(j - 1) % len(switches)])
        for index in range(1, sites + 1):
            relay = self.addSwitch(f"w{index}", cls=WanRelay, delay_ms=wan_delay_ms,
                                   rate_mbit=wan_rate_mbit, loss_pct=wan_loss_pct,
                                   seed=rng.randrange(2**31), site=f"wan{index}")
            self.addLink(f"{_prefix(index)}s1", relay)
            self.addLink(relay, "cs1")
        if edge_ring and sites >= 2:
            # Redundant WAN: edge gateways also linked in a ring (x<i> joins edge i to the
            # next), so every edge has two ways out and the WAN has loops.
            pairs = [(i, i % sites + 1) for i in range(1, sites + 1)] if sites > 2 else [(1, 2)]
            for a, b in pairs:
                relay = self.addSwitch(f"x{a}", cls=WanRelay, delay_ms=wan_delay_ms,
                                       rate_mbit=wan_rate_mbit, loss_pct=wan_loss_pct,
                                       seed=rng.randrange(2**31), site=f"wan-x{a}")
                self.addLink(f"{_prefix(a)}s1", relay)
                self.addLink(relay, f"{_prefix(b)}s1")


@dataclass(frozen=True)
class SiteInfo:
    """The hosts and switches of one site, by name."""

    name: str
    hosts: tuple[str, ...]
    switches: tuple[str, ...]


_NODE_NAME = re.compile(r"^(?:c|e(\d+))[hs]\d+$")


def site_of(node_name: str) -> str | None:
    """The site a host or switch belongs to, from its name (None for WAN relays)."""
    m = _NODE_NAME.match(node_name)
    if m is None:
        return None
    return CLOUD if m.group(1) is None else f"edge{int(m.group(1))}"


def sites(net) -> dict[str, SiteInfo]:
    """Group a running network's hosts and (OpenFlow) switches by site."""
    grouped: dict[str, tuple[list[str], list[str]]] = {}
    for host in net.hosts:
        site = site_of(host.name)
        if site:
            grouped.setdefault(site, ([], []))[0].append(host.name)
    for switch in net.switches:
        site = site_of(switch.name)
        if site and not isinstance(switch, WanRelay):
            grouped.setdefault(site, ([], []))[1].append(switch.name)

    def _order(name: str) -> tuple[int, str]:
        return (0, name) if name == CLOUD else (int(name[4:]), name)

    return {name: SiteInfo(name, tuple(h), tuple(s))
            for name, (h, s) in sorted(grouped.items(), key=lambda kv: _order(kv[0]))}


def _wan_link_ends(net, site: str) -> tuple[str, str]:
    if not site.startswith("edge") or not site[4:].isdigit():
        raise ValueError(f"only edge sites have a WAN link to cut: {site!r}")
    index = int(site[4:])
    relay, gateway = f"w{index}", f"e{index}s1"
    if relay not in net or gateway not in net:
        raise ValueError(f"no such site in this network: {site!r}")
    return gateway, relay


def cut_wan(net, site: str) -> None:
    """Cut the WAN link of an edge site (both ends of its access link go down)."""
    gateway, relay = _wan_link_ends(net, site)
    net.configLinkStatus(gateway, relay, "down")


def heal_wan(net, site: str) -> None:
    """Restore the WAN link of an edge site."""
    gateway, relay = _wan_link_ends(net, site)
    net.configLinkStatus(gateway, relay, "up")


# Mininet's lookup tables for `mn --custom this-file --topo cloudedge,3 --controller synod`.
topos = {"cloudedge": CloudEdgeTopo}
controllers = {"synod": SynodRemote}
switches = {"site": SiteSwitch}
