"""Benchmark of agreement: decision latency and messages per decision, 3/5/7 voters, duels.

Run: .venv/bin/python bench/agreement.py [--quick]
A perfect network where one round is one message delay of DELAY_MS simulated ms. Prints
a table and the machine, and writes JSON to bench/results/. Figures are measured.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.machine import describe  # noqa: E402
from controller.agreement import (  # noqa: E402
    VOTE_KINDS,
    Agreement,
    AgreementConfig,
    AgreementReplica,
)
from controller.replication import Config, Identity, make_genesis  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DELAY_MS = 10  # one message delay (one round)


def machine() -> dict:
    return describe("pynacl", "cbor2")


def trial(voters: int, proposers: int, seed: int) -> dict:
    rng = random.Random(seed)
    ids = [Identity.from_seed(rng.randbytes(32)) for _ in range(voters)]
    access = {"roles": {i.node_id: "admin" for i in ids}}
    genesis = make_genesis(ids[0], "bench", [i.public_key for i in ids], 0, {"access": access})
    rconf = Config(push_fanout=voters, sync_interval_ms=1_000)
    aconf = AgreementConfig(retry_ms=8 * DELAY_MS, backoff_ms_min=DELAY_MS)
    nodes = []
    for k, ident in enumerate(ids):
        replica = AgreementReplica(ident, genesis, random.Random(seed * 100 + k), config=rconf)
        nodes.append((replica, Agreement(replica, random.Random(seed * 1000 + k), aconf)))
    now = 1_000_000
    slot = "alloc/bench/1"
    started = time.perf_counter()
    # Duelers start one message delay apart, so a later, higher ballot interrupts an
    # earlier one (lock-step starts would let the highest ballot win in one go).
    handles = [nodes[0][1].propose(slot, "v0", now, 60_000)]
    in_flight: list = []
    sent = rounds = 0

    def flush() -> None:
        nonlocal sent
        for replica, agreement in nodes:
            agreement.step(now)
            while replica.has_ready():
                ready = replica.ready()
                sent += len(ready.messages)
                in_flight.extend(ready.messages)
                replica.advance(ready)
            agreement.release()

    flush()
    by_id = {r.node_id: (r, a) for r, a in nodes}
    while not all(a.decided(slot) for _, a in nodes):
        rounds += 1
        assert rounds < 10_000, "no decision"
        now += DELAY_MS
        if rounds < proposers:
            handles.append(nodes[rounds][1].propose(slot, f"v{rounds}", now, 60_000))
        batch, in_flight[:] = list(in_flight), []
        for out in batch:
            replica, agreement = by_id[out.to]
            replica.receive(out.message, now)
            agreement.step(now)
        for replica, _ in nodes:
            replica.tick(now)
        flush()
    wall_ms = (time.perf_counter() - started) * 1000
    votes = sum(1 for op in nodes[0][0].log() if getattr(op.body, "kind", "") in VOTE_KINDS)
    assert len({a.decided(slot).value for _, a in nodes}) == 1
    return {
        "rounds": rounds,
        "sim_ms": rounds * DELAY_MS,
        "votes": votes,
        "messages": sent,
        "wall_ms": wall_ms,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer trials")
    args = parser.parse_args(argv)
    trials = 5 if args.quick else 30
    rows = []
    for voters in (3, 5, 7):
        for proposers in (1, 2, 4):
            if proposers > voters:
                continue
            runs = [trial(voters, proposers, seed) for seed in range(trials)]
            row = {"voters": voters, "proposers": proposers, "trials": trials}
            for key in ("rounds", "sim_ms", "votes", "messages", "wall_ms"):
                values = [r[key] for r in runs]
                row[f"{key}_median"] = statistics.median(values)
                row[f"{key}_max"] = max(values)
            rows.append(row)
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}")
    print(
        f"one message delay = {DELAY_MS} simulated ms; {trials} trials per row; "
        "message delays from the first proposal until every voter knows the decision"
    )
    head = (
        "voters",
        "proposers",
        "delays med",
        "delays max",
        "sim ms med",
        "vote ops med",
        "net msgs med",
        "cpu ms med",
    )
    print(" | ".join(head))
    for r in rows:
        print(
            " | ".join(
                str(x)
                for x in (
                    r["voters"],
                    r["proposers"],
                    r["rounds_median"],
                    r["rounds_max"],
                    r["sim_ms_median"],
                    r["votes_median"],
                    r["messages_median"],
                    round(r["wall_ms_median"], 1),
                )
            )
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"agreement-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"machine": info, "delay_ms": DELAY_MS, "rows": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
