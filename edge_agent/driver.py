"""The agent's driver: each round, the services placed on this node (from the node link)
and the VMs it owns (the runtime) go to the reconciler; its actions are applied and the
states reported back; failover services are checked against their lease and taken over
from silent owners (edge_agent/lease.py). `synod agent run` (edge_agent/daemon.py) runs it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from edge_agent.deploy import AgentInfo, agent_key, placement_slot
from edge_agent.microvm import DEFAULT_CACHE, Image, ImageError, build
from edge_agent.qemu import Runtime, RuntimeError_, probe_accel
from edge_agent.reconcile import (
    Actual,
    Build,
    Desired,
    Limits,
    Report,
    Restart,
    Start,
    Stop,
    failed,
    reconcile,
    state_text,
)
from edge_agent.spec import Capacity, SpecError, from_row, spec_hash

__all__ = ["Agent", "AgentOptions", "Collector", "bridge_map"]

LOG = logging.getLogger("synod.agent")
IMAGE_RETRY_MS = 30_000


@dataclass(frozen=True)
class AgentOptions:
    site: str
    node: str
    token_file: str
    ca_file: str = ""
    insecure: bool = False
    state_dir: Path = Path("/run/synod-agent")
    image_cache: Path = DEFAULT_CACHE
    vcpus: int = 0  # 0: the host's CPUs
    memory_mb: int = 0  # 0: the host's memory less 512 MB
    bridges: tuple[str, ...] = ()  # empty: every OVS bridge
    accel: str = "auto"  # auto | kvm | tcg
    interval_ms: int = 1_000
    metrics: str = ""
    limits: Limits = field(default_factory=Limits)


def _host_capacity(o: AgentOptions) -> Capacity:
    vcpus = o.vcpus or (os.cpu_count() or 1)
    memory_mb = o.memory_mb
    if not memory_mb:
        try:
            total_kb = next(int(line.split()[1]) for line in open("/proc/meminfo")
                            if line.startswith("MemTotal:"))
            memory_mb = max(total_kb // 1024 - 512, 128)
        except (OSError, StopIteration, ValueError):
            memory_mb = 1024
    return Capacity(vcpus, memory_mb)


def bridge_map(o: AgentOptions) -> dict[str, str]:
    """--bridge NAME or NAME=LOCAL: the switch names specs may use -> this host's bridges
    (one name, e.g. `svc`, can mean each site's own bridge, so a service can move)."""
    out = {}
    for b in o.bridges:
        name, _, local = b.partition("=")
        out[name] = local or name
    return out


def _bridges(o: AgentOptions) -> tuple[str, ...]:
    if o.bridges:
        return tuple(sorted(bridge_map(o)))
    import subprocess

    try:
        out = subprocess.run(["ovs-vsctl", "--timeout=5", "list-br"], capture_output=True,
                             text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return tuple(sorted(out.split()))


class Collector:
    """Prometheus families of the agent (prometheus_client imported when served)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        a = self.agent
        g = GaugeMetricFamily("synod_agent_vms", "VMs this agent owns, by state",
                              labels=["state"])
        for state, n in sorted(a.vm_counts.items()):
            g.add_metric([state], n)
        yield g
        yield GaugeMetricFamily("synod_agent_services_desired",
                                "services placed on this node", value=a.desired_count)
        yield GaugeMetricFamily("synod_agent_node_connected", "1 while the node link is up",
                                value=1 if a.link.connected.is_set() else 0)
        c = CounterMetricFamily("synod_agent_actions", "actions applied", labels=["action",
                                                                                  "result"])
        for (kind, result), n in sorted(a.actions.items()):
            c.add_metric([kind, result], n)
        yield c
        yield CounterMetricFamily("synod_agent_rounds", "reconcile rounds", value=a.rounds)
        yield GaugeMetricFamily("synod_agent_round_seconds_last",
                                "time of the last reconcile round", value=a.round_s)


class Agent:
    """The driver: one thread runs rounds; the link thread only fills `link.desired`."""

    def __init__(self, o: AgentOptions, link, owner: str) -> None:
        from edge_agent.link import NodeLink

        self.o = o
        self.link: NodeLink = link
        self.owner = owner
        self.runtime = Runtime(o.state_dir, owner, accel="tcg", bridges=bridge_map(o))
        self.image: Image | None = None
        self.image_error = ""
        self.image_retry_ms = 0
        self.tracks: dict = {}
        self.unsent: dict[str, Report] = {}
        self.stopping = threading.Event()
        self.vm_counts: dict[str, int] = {}
        self.desired_count = 0
        self.actions: dict[tuple[str, str], int] = {}
        self.rounds = 0
        self.round_s = 0.0
        self.info_sent = False
        self.placements: dict[str, str] = {}  # decided placement slots: slot -> node
        self.contacts: list | None = None  # the members as the node saw them ...
        self.contacts_at_ms = 0  # ... at this time
        self.takeover_at_ms = 0  # next look for failover services whose owner is silent
        self.lost: set[tuple[str, int]] = set()  # (service, generation) whose lease ran out

    def _count(self, kind: str, result: str) -> None:
        self.actions[(kind, result)] = self.actions.get((kind, result), 0) + 1

    def build_image(self, now_ms: int) -> None:
        try:
            self.image = build(self.o.image_cache)
            self.image_error = ""
            self._count("build", "ok")
        except ImageError as e:
            self.image_error, self.image_retry_ms = str(e), now_ms + IMAGE_RETRY_MS
            self._count("build", "failed")
            LOG.error("image: %s (retrying in %d s)", e, IMAGE_RETRY_MS // 1000)
            return
        if self.o.accel == "auto":
            accel, why = probe_accel(self.image)
        else:
            accel, why = self.o.accel, "--accel"
        self.runtime.accel = accel
        LOG.info("image %s ready; accelerator %s (%s)", self.image.key[:12], accel, why)

    def _lease_lost(self, failover_after_s: int, now_ms: int) -> str:
        """Why this owner must not run a failover service now ("" while its lease holds)."""
        from edge_agent.lease import lease_until_ms, owner_deadline_ms

        if self.contacts is None:
            return "lease lost: no member list from the node yet"
        until = lease_until_ms(self.contacts, self.contacts_at_ms, failover_after_s)
        if now_ms < until:
            return ""
        return (f"lease lost: no majority heard for {owner_deadline_ms(failover_after_s)} ms "
                f"(failover-after {failover_after_s} s); stopped so another node may take over")

    def desired(self, now_ms: int = 0) -> dict[str, Desired]:
        with self.link.lock:
            rows = dict(self.link.desired.rows)
            generations = dict(self.link.desired.generations)
        image_key = self.image.key if self.image is not None else ""
        out = {}
        for name, values in rows.items():
            g = generations.get(name, 0)
            try:
                spec = from_row(name, values)
            except SpecError as e:
                out[name] = Desired(name, None, "", f"invalid spec: {e}", g)
                continue
            slot = placement_slot(spec, g)
            if slot is not None:
                owner = self._placement(slot)
                if owner != self.owner:
                    why = f"pending: {slot} not decided yet" if owner is None else \
                        f"{slot} was decided for node {owner[:16]}, not this one"
                    out[name] = Desired(name, None, "", why, g)
                    continue
            if spec.restart == "failover-after":
                if (name, g) in self.lost:
                    # Never again under this generation: after a heal its row may still
                    # name this node before the next generation's arrives.
                    out[name] = Desired(name, None, "", f"pending: lease lost for generation "
                                        f"{g}; waiting for placement/{name}/{g + 1}", g)
                    continue
                if self.contacts is None:  # not a lost lease: none was ever checked
                    out[name] = Desired(name, None, "", "pending: no member list from the "
                                        "node yet (the lease cannot be checked)", g)
                    continue
                lost = self._lease_lost(spec.failover_after_s, now_ms)
                if lost:
                    self.lost.add((name, g))
                    out[name] = Desired(name, None, "", lost, g)
                    continue
            if spec.image == "nixos":
                out[name] = Desired(name, None, "", self._nixos(spec), g)
                continue
            h = hashlib.blake2b(f"{spec_hash(spec)}/{image_key}".encode(),
                                digest_size=32).hexdigest()
            out[name] = Desired(name, spec, h, "", g)
        return out

    def _placement(self, slot: str) -> str | None:
        """The node a placement slot decided (a decision never changes: kept), or None."""
        node = self.placements.get(slot)
        if node is None:
            node, why = self.link.decided_node(slot)
            if node is None:
                LOG.debug("%s: %s", slot, why)
                return None
            self.placements[slot] = node
        return node

    def round(self, now_ms: int) -> None:
        started = time.monotonic()
        if self.image is None and now_ms >= self.image_retry_ms:
            self.build_image(now_ms)  # before any service needs it: deploy -> boot sooner
        if not self.link.desired.synced:
            desired_or_none = None  # never seen the node: touch nothing
        else:
            members = self.link.members()
            if members is not None:
                self.contacts, self.contacts_at_ms = members, now_ms
            desired_or_none = self.desired(now_ms)
        found = self.runtime.scan()
        self.vm_counts = {}
        for v in found.values():
            key = "running" if v.alive and v.ready else ("booting" if v.alive else "exited")
            self.vm_counts[key] = self.vm_counts.get(key, 0) + 1
        if desired_or_none is None:
            return
        desired = desired_or_none
        self.desired_count = len(desired)
        actual = {n: Actual(n, v.hash, v.alive, v.ready, v.healthy, v.started_ms, v.exit_reason)
                  for n, v in found.items()}
        image_ready = self.image is not None
        plan = reconcile(desired, actual, self.tracks, now_ms, image_ready, self.o.limits)
        self.tracks = plan.tracks
        for action in plan.actions:
            if self.stopping.is_set():
                break
            self.apply(action, desired, now_ms)
        self._flush_reports()
        if now_ms >= self.takeover_at_ms:
            self.takeover_at_ms = now_ms + 2_000
            self._take_over(now_ms)
        self.rounds += 1
        self.round_s = time.monotonic() - started

    def apply(self, action, desired: dict[str, Desired], now_ms: int) -> None:
        if isinstance(action, Build):
            if self.image is None and now_ms >= self.image_retry_ms:
                self.build_image(now_ms)
            if self.image is None and self.image_error:
                for name, d in desired.items():
                    self._fail(name, f"image_unavailable: {self.image_error}", d.generation,
                               now_ms)
        elif isinstance(action, Stop):
            how = self.runtime.stop(action.name, urgent=action.urgent)
            self._count("stop", "ok")
            LOG.info("stopped %s (%s): %s", action.name, how, action.reason)
        elif isinstance(action, Start | Restart):
            if isinstance(action, Restart):
                how = self.runtime.stop(action.name)
                LOG.info("restarting %s (%s): %s", action.name, how, action.reason)
            assert self.image is not None, "the reconciler starts only with an image"
            try:
                pid = self.runtime.start(action.spec, self.image, action.hash, now_ms)
            except RuntimeError_ as e:
                self._count("start", "failed")
                LOG.error("start %s: %s", action.name, e)
                self._fail(action.name, str(e), desired[action.name].generation, now_ms)
                return
            self._count("start", "ok")
            LOG.info("started %s: pid %d, hash %s", action.name, pid, action.hash[:16])
        elif isinstance(action, Report):
            if "lease lost" in action.state:
                # not this node's to report any more: the row may belong to a new owner
                LOG.warning("%s: %s", action.name, action.state)
                return
            self.unsent[action.name] = action

    def _fail(self, name: str, reason: str, generation: int, now_ms: int) -> None:
        self.tracks = failed(self.tracks, name, reason, now_ms, self.o.limits)
        text = state_text("failed", reason)
        t = self.tracks[name]
        if t.reported != text:
            from dataclasses import replace

            self.tracks[name] = replace(t, reported=text)
            self.unsent[name] = Report(name, text, generation)

    def _take_over(self, now_ms: int) -> None:
        """Propose this node for failover services whose owner this node has not heard
        from for their failover-after (lease.may_take_over), if the spec allows and this
        node fits them; the slot placement/<service>/<generation+1> picks one taker."""
        from edge_agent.deploy import plan_deploy
        from edge_agent.lease import may_take_over, placement_value

        if self.contacts is None or now_ms - self.contacts_at_ms > 5_000:
            return
        services, placements = self.link.table("services"), self.link.table("placements")
        if services is None or placements is None:
            return
        ages = {c.node: c.age_ms for c in self.contacts}
        me = AgentInfo(self.owner, self.o.site, _host_capacity(self.o), _bridges(self.o))
        for name, values in sorted(services.items()):
            try:
                spec = from_row(name, values)
            except SpecError:
                continue
            p = placements.get(name) or {}
            owner, g = str(p.get("node") or ""), int(p.get("generation") or 0)
            if spec.restart != "failover-after" or spec.state != "running" or not owner:
                continue
            if owner == self.owner:
                # Its own lease ran out and it hears a majority again: the next generation
                # decides whether someone took over meanwhile, or it takes it back itself.
                if (name, g) not in self.lost or self._lease_lost(spec.failover_after_s,
                                                                  now_ms):
                    continue
            elif owner not in ages or not may_take_over(ages[owner], spec.failover_after_s):
                continue
            if spec.placement == "node" or (spec.placement == "site" and
                                            spec.placement_target != self.o.site):
                continue
            others = {n: pl for n, pl in placements.items() if n != name}
            try:
                plan_deploy(spec, services, others, {self.owner: me})
            except SpecError as e:
                LOG.info("%s: owner %s silent, but this node cannot take it: %s", name,
                         owner[:16], e)
                continue
            slot = f"placement/{name}/{g + 1}"
            decided = self.link.propose_placement(slot, placement_value(spec, self.owner))
            if decided is None:
                continue
            # The state is the owner's to write: only a winner says it is pending.
            row = {"node": decided, "generation": g + 1}
            if decided == self.owner:
                row["state"] = "pending"
            err = self.link.put_row("placements", name, row)
            if err is None:
                self.lost.discard((name, g))
            LOG.info("%s: owner %s silent %d ms; %s decided for %s%s", name, owner[:16],
                     ages[owner], slot, decided[:16], f" (row not written: {err})" if err
                     else "")
            self._count("takeover", "won" if decided == self.owner else "lost")

    def _flush_reports(self) -> None:
        if not self.link.connected.is_set():
            return
        if not self.info_sent:
            info = AgentInfo(self.owner, self.o.site, _host_capacity(self.o), _bridges(self.o))
            err = self.link.put_kv(agent_key(self.owner), info.encode())
            if err is None:
                self.info_sent = True
                LOG.info("declared capacity: %d vCPUs, %d MB, bridges %s", info.capacity.vcpus,
                         info.capacity.memory_mb, ", ".join(info.bridges) or "none")
            else:
                LOG.warning("could not declare capacity: %s", err)
        for name, r in list(self.unsent.items()):
            err = self.link.report(name, r.state, r.generation)
            if err is None or "not here" in err:
                self.unsent.pop(name, None)
                self._count("report", "ok" if err is None else "refused")
                if err is not None:
                    LOG.info("report for %s refused: %s", name, err)
            else:
                self._count("report", "failed")
                break  # the node is away: the rest waits for the next round


    def _nixos(self, spec) -> str:
        """Render the service's NixOS configuration into the state dir; why no VM is
        built from it on this node (never a pretend success)."""
        from edge_agent.nixos import render, state_object

        path = self.o.state_dir / "nixos" / spec.name / "configuration.nix"
        text = render(spec)
        try:
            if not path.is_file() or path.read_text() != text:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        except OSError as e:
            return f"image_unavailable: cannot write {path}: {e.strerror}"
        digest = state_object(spec).digest.hex()[:16]
        return f"image_unavailable: {_nixpkgs_missing()}; configuration rendered to {path} " \
               f"(state object {digest})"


_NIXPKGS: list[str] = []


def _nixpkgs_missing() -> str:
    """Why this node cannot build NixOS VMs (looked up once)."""
    if not _NIXPKGS:
        import subprocess

        if shutil.which("nix-build") is None:
            _NIXPKGS.append("no nix-build on this node (apt-get install nix-bin, and nixpkgs)")
        else:
            found = subprocess.run(["nix-instantiate", "--find-file", "nixpkgs"],
                                   capture_output=True, text=True, timeout=30, check=False)
            _NIXPKGS.append("no nixpkgs in the Nix search path (NIX_PATH)"
                            if found.returncode != 0 else
                            "building NixOS VMs (nix-build '<nixpkgs/nixos>' -A vm) is not "
                            "implemented in this agent yet")
    return _NIXPKGS[0]
