"""The replication core in the simulator, in a star of sites: cost and heal against sites.

Run: .venv/bin/python bench/sim_sites.py [--sites 3 6 10 20 50 100] [--seed 1]

Issue 14 asks the simulator for the curve bench/sites.py measures on real processes (decision
0097), at sizes one machine cannot emulate. One hub (the cloud's node) and N edge nodes, each
edge linked to the hub alone, as `synod emulate` wires its WAN; each node told which peers
its links reach (Replica.set_reachable, as the node's peer links tell it). Virtual time,
seeded, no loss: edges write a row every 2 s each for 15 s; edge1's link is cut for 5 s
while both sides write, then healed. Measured in virtual time: the heal (cut healed -> every
node holds every op that either side held at the heal), and over a 10 s window without
writes the messages and bytes each node sends per second (hub and edges apart). CPU is the
process time of the whole run. Prints a table and JSON; figures are measured, never targets.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.sim.harness import Cluster, SimConfig  # noqa: E402

WRITE_EVERY_MS = 2_000
WRITES_UNTIL_MS = 15_000
CUT_MS = (6_000, 11_000)  # edge1's WAN link is down in between
QUIET_MS = (25_000, 35_000)  # no writes: the idle window the per-second figures come from
END_MS = 40_000


class Star(Cluster):
    """Cluster with a star of links: the hub and each edge; nothing else connects."""

    def __init__(self, sites: int, seed: int) -> None:
        cfg = SimConfig(seed=seed, nodes=sites + 1, writes=0, chaos_ms=0, quiet_ms_max=END_MS,
                        drop=0.0, duplicate=0.0, delay_ms_max=20, disk_ms_max=2, partitions=0,
                        crashes=0, noise=0, skew_ms_max=0)
        super().__init__(cfg)
        ids = list(self.nodes)  # genesis order: the first is the hub
        self.hub, self.edges = ids[0], ids[1:]
        self.cut: str | None = None
        self.sent: dict[str, list[int]] = {n: [0, 0] for n in ids}  # messages, bytes (window)
        for n in ids:
            self._tell_reachable(n)

    def _tell_reachable(self, node_id: str) -> None:
        r = self.nodes[node_id].replica
        assert r is not None
        if node_id == self.hub:
            r.set_reachable([e for e in self.edges if e != self.cut])
        else:
            r.set_reachable([] if node_id == self.cut else [self.hub])

    def _connected(self, a: str, b: str) -> bool:
        if self.hub not in (a, b) or a == b:
            return False
        return self.cut not in (a, b)

    def _send(self, src: str, dst: str, data: bytes) -> None:
        if QUIET_MS[0] <= self.time_ms < QUIET_MS[1]:
            self.sent[src][0] += 1
            self.sent[src][1] += len(data)
        super()._send(src, dst, data)

    def run_star(self) -> dict:
        rng = random.Random(f"star-{self.config.seed}")
        for t in range(0, END_MS, 50):
            self._at(t, "tick")
        for t in range(0, WRITES_UNTIL_MS, WRITE_EVERY_MS):
            for i, edge in enumerate(self.edges):
                self._at(t + rng.randint(0, WRITE_EVERY_MS - 1), "star-write", (edge, i))
        self._at(CUT_MS[0], "star-cut")
        self._at(CUT_MS[1], "star-heal")
        healed_at, target = None, None
        n = 0
        while self._events:
            time_ms, _, kind, payload = heapq.heappop(self._events)
            self.time_ms = time_ms
            if kind == "star-write":
                edge, i = payload
                r = self.nodes[edge].replica
                assert r is not None
                n += 1
                r.write([_row(edge, n)], self._now(self.nodes[edge]))
                self._pump(self.nodes[edge])
            elif kind == "star-cut":
                self.cut = self.edges[0]
                for node_id in self.nodes:
                    self._tell_reachable(node_id)
            elif kind == "star-heal":
                self.cut = None
                for node_id in self.nodes:
                    self._tell_reachable(node_id)
                # Healed once every node holds every op either side held at this moment
                # (writes go on meanwhile: equal vectors would be a moving target).
                target = {}
                for node in self.nodes.values():
                    for author, seq in node.replica.version_vector().items():  # type: ignore
                        target[author] = max(seq, target.get(author, 0))
            else:
                if kind == "tick" and target is not None and healed_at is None and all(
                        all(node.replica.version_vector().get(a, 0) >= s  # type: ignore
                            for a, s in target.items()) for node in self.nodes.values()):
                    healed_at = time_ms
                self._handle(kind, payload)
        window_s = (QUIET_MS[1] - QUIET_MS[0]) / 1000
        edges = [self.sent[e] for e in self.edges]
        return {
            "heal_ms": None if healed_at is None else healed_at - CUT_MS[1],
            "hub_msgs_per_s": round(self.sent[self.hub][0] / window_s, 1),
            "hub_bytes_per_s": round(self.sent[self.hub][1] / window_s),
            "edge_msgs_per_s": round(sum(m for m, _ in edges) / len(edges) / window_s, 1),
            "edge_bytes_per_s": round(sum(b for _, b in edges) / len(edges) / window_s),
            "ops": len(self.nodes[self.hub].replica.log()),  # type: ignore[union-attr]
        }


def _row(edge: str, n: int):
    from controller.replication import Upsert

    return Upsert("kv", (f"{edge[:8]}-{n}",), {"value": b"x" * 100})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, nargs="+", default=[3, 6, 10, 20, 50, 100])
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    out = {}
    for sites in args.sites:
        started = time.process_time()
        r = Star(sites, args.seed).run_star()
        r["cpu_s"] = round(time.process_time() - started, 2)
        out[sites] = r
        print(f"{sites} edge sites: {r}", file=sys.stderr)
    print(f"{'sites':>5} {'heal ms':>8} {'hub msg/s':>9} {'hub B/s':>9} {'edge msg/s':>10} "
          f"{'edge B/s':>9} {'ops':>6} {'cpu s':>6}")
    for sites, r in out.items():
        print(f"{sites:>5} {str(r['heal_ms']):>8} {r['hub_msgs_per_s']:>9} "
              f"{r['hub_bytes_per_s']:>9} {r['edge_msgs_per_s']:>10} {r['edge_bytes_per_s']:>9} "
              f"{r['ops']:>6} {r['cpu_s']:>6}")
    print("virtual time, no loss, 20 ms max delay; per-second figures over a 10 s window "
          "without writes; heal: cut healed -> every node holds what either side held")
    print(json.dumps(out))
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    (results / time.strftime("sim_sites-%Y%m%d-%H%M%S.json")).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
