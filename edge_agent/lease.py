"""Ownership leases of services that fail over (decision 0081). Pure: ages and times in,
answers out.

The owner of a `failover-after: S` service keeps its VM only while it hears from a majority
of the members: it stops the VM once it has not for `owner_deadline_ms(S)`, early enough
that the VM is gone (a bounded stop, one round late) before anyone else may take over. Any
other agent takes over only when its node has not heard from the owner's node for S
(`may_take_over`). With clocks whose rates differ by at most RHO, the old VM is gone before
the new one starts; the slot placement/<service>/<generation> makes sure one taker wins.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from controller.agreement.placement import RHO, ROUND_MS_MAX, STOP_MS_MAX, PlacementValue
from edge_agent.spec import FAILOVER_S_MIN, ServiceSpec, spec_hash

__all__ = ["FAILOVER_S_MIN", "RHO", "STOP_MS_MAX", "Contact", "lease_until_ms",
           "may_take_over", "owner_deadline_ms", "placement_value"]

# RHO (the assumed clock-rate bound), STOP_MS_MAX (the runtime's urgent stop: quit 3 s, then
# SIGKILL 5 s) and ROUND_MS_MAX (a round may notice late by this much) are the voters' too:
# controller/agreement/placement.py, where acceptors check the same rule.


@dataclass(frozen=True)
class Contact:
    """One member as this node sees it: how long since it last heard from it."""

    node: str
    age_ms: int  # -1: never heard since this node started
    is_self: bool = False


def owner_deadline_ms(failover_after_s: int) -> int:
    """How long the owner may go without hearing a majority before it must stop the VM:
    S/(1+RHO), less the stop and one round, so the VM is gone by the time a taker's clock
    says S."""
    return int(failover_after_s * 1000 / (1 + RHO)) - STOP_MS_MAX - ROUND_MS_MAX


def placement_value(spec: ServiceSpec, node: str) -> dict:
    """What this node proposes in placement/<service>/<g> (decision 0081): the node, the
    spec's hash and the owner's lease, owner_deadline_ms(S) (0 for a `local-only` service:
    no lease, it never moves). Voters let another node own it only after
    lease * (1 + RHO) + margin without hearing the owner, which is at most S."""
    lease = owner_deadline_ms(spec.failover_after_s) if spec.restart == "failover-after" else 0
    return PlacementValue(node, spec_hash(spec), lease).to_value()


def lease_until_ms(contacts: Iterable[Contact], checked_at_ms: int,
                   failover_after_s: int) -> int:
    """Until when (on the clock of checked_at_ms) the owner may keep running: the time it
    last heard from a majority (itself counts) plus its deadline. Without a majority ever
    heard: checked_at_ms - 1 (already over)."""
    members = list(contacts)
    need = len(members) // 2 + 1
    ages = sorted(0 if c.is_self else c.age_ms for c in members
                  if c.is_self or c.age_ms >= 0)
    if len(ages) < need:
        return checked_at_ms - 1
    last_majority_ms = checked_at_ms - ages[need - 1]
    return last_majority_ms + owner_deadline_ms(failover_after_s)


def may_take_over(owner_age_ms: int, failover_after_s: int) -> bool:
    """Whether this node has not heard from the owner's node for failover_after_s (an
    owner never heard from since this node started is not taken over: no age to trust)."""
    assert failover_after_s >= FAILOVER_S_MIN, "the spec's minimum"
    return owner_age_ms >= failover_after_s * 1000
