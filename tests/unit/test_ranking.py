"""Controller ranking and liveness: who should master a switch, and who is dead."""

from __future__ import annotations

import pytest

from controller.forwarding.intents import ROLE_EQUAL, ROLE_MASTER, RoleRequest
from controller.forwarding.mastership import UNDEFINED_GENERATION, Mastership
from controller.forwarding.ranking import (
    PROBE_FAILURES_DEAD,
    Liveness,
    better_alive,
    controller_order,
    home_site_from_desc,
    rank_in,
)

SITES = ("edge1", "cloud", "edge2")  # --controllers, the same order everywhere


@pytest.mark.parametrize("desc, home", [
    ("mininet synod-site=edge1", "edge1"),
    ("synod-site=cloud,rack=3", "cloud"),
    ("Open vSwitch", None),
    ("synod-site=", None),
    ("", None),
])
def test_home_site_from_desc(desc, home):
    assert home_site_from_desc(desc) == home


@pytest.mark.parametrize("home, own, order", [
    ("edge2", "cloud", ("edge2", "edge1", "cloud")),  # home first, then the list
    ("edge1", "cloud", SITES),
    ("elsewhere", "cloud", ("elsewhere", *SITES)),  # a home with no controller listed
    (None, "cloud", SITES),  # no home named: the list alone
    (None, "lab", ("lab", *SITES)),  # ...unless we are not in it: then we come first
])
def test_controller_order(home, own, order):
    assert controller_order(home, SITES, own) == order


def test_every_controller_computes_the_same_order():
    orders = {controller_order("edge2", SITES, own) for own in SITES}
    assert len(orders) == 1


def test_rank_in():
    order = controller_order("edge2", SITES, "cloud")
    assert [rank_in(order, s) for s in ("edge2", "edge1", "cloud")] == [0, 1, 2]
    assert rank_in(order, "nowhere") == 3


@pytest.mark.parametrize("alive, cloud_defers", [
    ({"edge2": True, "edge1": True}, True),
    ({"edge2": False, "edge1": True}, True),
    ({"edge2": False, "edge1": False}, False),
    ({}, False),  # unknown counts as dead
])
def test_who_should_master_given_who_lives(alive, cloud_defers):
    order = controller_order("edge2", SITES, "cloud")
    assert better_alive(order, "cloud", alive) is cloud_defers
    assert better_alive(order, "edge2", {}) is False  # the home controller defers to none


def test_a_controller_is_dead_after_n_failed_probes_in_a_row():
    live = Liveness(["edge1", "cloud"])
    assert live.alive() == {"edge1": True, "cloud": True}  # before any probe
    for _ in range(PROBE_FAILURES_DEAD - 1):
        assert live.probed({"edge1": False, "cloud": True}) is False
        assert live.alive()["edge1"]
    assert live.probed({"edge1": False, "cloud": True}) is True
    assert live.alive() == {"edge1": False, "cloud": True}
    assert live.probed({"edge1": False, "cloud": True}) is False  # still dead: no change
    assert live.probed({"edge1": True, "cloud": True}) is True  # one answer: alive again
    assert live.alive()["edge1"]


def test_an_answer_between_failures_starts_the_count_again():
    live = Liveness(["edge1"], failures_dead=3)
    for answered in (False, False, True, False, False):
        live.probed({"edge1": answered})
    assert live.alive() == {"edge1": True}
    live.probed({"edge1": False})
    assert live.alive() == {"edge1": False}


def test_failures_are_counted_up_to_the_threshold_only():
    live = Liveness(["edge1"])
    for _ in range(10_000):
        live.probed({"edge1": False})
    assert live._failures["edge1"] == PROBE_FAILURES_DEAD
    assert live.probed({"edge1": True}) and live.alive() == {"edge1": True}


def test_liveness_misuse_raises():
    with pytest.raises(ValueError):
        Liveness(["edge1"], failures_dead=0)
    with pytest.raises(ValueError, match="unknown controllers"):
        Liveness(["edge1"]).probed({"mars": True})
    assert "mars" not in Liveness(["edge1"]).alive()  # better_alive counts it dead


def _claims(alive: dict[str, bool]) -> bool:
    """Does controller `cloud` (backup for an edge1 switch) claim it, given `alive`?"""
    order = controller_order("edge1", SITES, "cloud")
    backup = Mastership(controller_index=2)
    events = backup.switch_connected(0x101, rank_in(order, "cloud"), 0)
    events += backup.better_alive(0x101, better_alive(order, "cloud", alive), 0)
    events += backup.role_reply(0x101, ROLE_EQUAL, UNDEFINED_GENERATION, 1)
    return any(isinstance(e, RoleRequest) and e.role == ROLE_MASTER for e in events)


def test_a_backup_does_not_claim_before_the_first_probe():
    """Before the ranking moved here, the app asked 'is a better controller alive?' of
    an empty map until its first probe round finished, got 'no', and a backup whose
    switch connected in that window claimed it from a live home controller."""
    assert _claims({}) is True  # what the empty map did
    live = Liveness([s for s in SITES if s != "cloud"])
    assert _claims(live.alive()) is False
    for _ in range(PROBE_FAILURES_DEAD):
        live.probed({"edge1": False, "edge2": True})
    assert _claims(live.alive()) is True
