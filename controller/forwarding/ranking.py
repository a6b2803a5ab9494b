"""Controller ranking: which controller should master a switch, and which controllers live.

A switch names its home site in its OpenFlow description. The home site's controller
ranks first; the others follow in the order of `--controllers`, the same list on every
controller, so each computes the same order without asking the others. Mastership
(mastership.py) claims for the best-ranked controller it believes alive.

Liveness is bookkeeping of probe results; the probe itself (a TCP connect that must be
answered by an OpenFlow HELLO) is the os-ken shim's. A controller counts as dead after
`PROBE_FAILURES_DEAD` failed probes in a row, and as alive until then, before its first
probe too: a backup that has not yet heard from the home controller must not claim.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "PROBE_FAILURES_DEAD",
    "SITE_TAG",
    "Liveness",
    "better_alive",
    "controller_order",
    "home_site_from_desc",
    "rank_in",
    "sites_to_probe",
]

SITE_TAG = "synod-site="
PROBE_FAILURES_DEAD = 2  # consecutive failed probes before a controller counts as gone


def home_site_from_desc(dp_desc: str) -> str | None:
    """The home site a switch announces in its description ("... synod-site=edge1 ...")."""
    for word in dp_desc.replace(",", " ").split():
        if word.startswith(SITE_TAG) and len(word) > len(SITE_TAG):
            return word[len(SITE_TAG):]
    return None


def controller_order(home: str | None, sites: Sequence[str], own_site: str) -> tuple[str, ...]:
    """The controllers' sites, best first, for a switch whose home site is `home`.

    `sites` is the configured controller list. A switch that names no home site is
    ranked by that list alone, except that a controller missing from the list puts
    itself first (a lone controller programs whatever connects to it).
    """
    if home is None and own_site and own_site not in sites:
        return (own_site, *sites)
    return ((home,) if home else ()) + tuple(s for s in sites if s != home)


def rank_in(order: Sequence[str], site: str) -> int:
    """`site`'s rank in `order` (0 is best); a site not in it ranks after all of them."""
    return order.index(site) if site in order else len(order)


def better_alive(order: Sequence[str], own_site: str, alive: Mapping[str, bool]) -> bool:
    """Is any controller ranked above `own_site` alive? (Unknown sites count as dead.)"""
    return any(alive.get(site, False) for site in order[:rank_in(order, own_site)])


def sites_to_probe(orders: Iterable[Sequence[str]], own_site: str) -> frozenset[str]:
    """The controllers whose liveness matters to `own_site`: those ranked above it for a
    switch connected to it (`orders`: controller_order of each). better_alive asks about
    no other, so probing every peer only made each controller's cost grow with the number
    of sites (decision 0097): a site's controller probes the sites whose switches it backs
    up, the cloud's every edge, an edge's none or one."""
    return frozenset(s for order in orders for s in order[:rank_in(order, own_site)])


class Liveness:
    """Which peer controllers are alive, from the results of their probes."""

    def __init__(self, sites: Iterable[str], failures_dead: int = PROBE_FAILURES_DEAD) -> None:
        if failures_dead < 1:
            raise ValueError(f"failures_dead must be at least 1, got {failures_dead}")
        self.failures_dead = failures_dead
        self._failures: dict[str, int] = {site: 0 for site in sites}

    def probed(self, results: Mapping[str, bool]) -> bool:
        """One round of probes: site -> did it answer. True if any site's liveness changed."""
        unknown = set(results) - set(self._failures)
        if unknown:
            raise ValueError(f"probe results for unknown controllers: {sorted(unknown)}")
        before = self.alive()
        for site, answered in results.items():
            # Capped, so a controller dead for days does not count up without bound.
            self._failures[site] = 0 if answered else \
                min(self._failures[site] + 1, self.failures_dead)
        return self.alive() != before

    def forget(self, sites: Iterable[str]) -> bool:
        """Sites no longer probed count as alive again, as before their first probe: when
        one matters again, it must fail `failures_dead` probes before we claim what it
        should master. True if any site's liveness changed."""
        before = self.alive()
        for site in sites:
            if site in self._failures:
                self._failures[site] = 0
        return self.alive() != before

    def alive(self) -> dict[str, bool]:
        """site -> alive, for every peer (sites not listed count as dead)."""
        return {site: n < self.failures_dead for site, n in self._failures.items()}
