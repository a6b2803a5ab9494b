"""Mastership: who claims, with which generation id, and how demotion is handled."""

from __future__ import annotations

import pytest

from controller.forwarding.intents import (
    ROLE_EQUAL,
    ROLE_MASTER,
    ROLE_NOCHANGE,
    ROLE_SLAVE,
    RoleRequest,
)
from controller.forwarding.mastership import (
    UNDEFINED_GENERATION,
    BecameMaster,
    LostMaster,
    Mastership,
    MastershipConfig,
    newer,
    next_generation,
)

DP = 0x101


class FakeSwitch:
    """OVS's role rules: bigger-or-equal generation ids win, one master, stale refused.

    Like OVS, it reports 2**64-1 as the generation id before anyone claimed.
    """

    def __init__(self):
        self.generation = None
        self.master = None
        self.roles = {}  # who -> role; a controller that never asked is EQUAL

    def request(self, who, req: RoleRequest):
        reported = UNDEFINED_GENERATION if self.generation is None else self.generation
        if req.role == ROLE_NOCHANGE:
            if self.master == who:
                return ROLE_MASTER, reported
            role = self.roles.get(who, ROLE_EQUAL)
            return (ROLE_SLAVE if role == ROLE_MASTER else role), reported
        if self.generation is not None and newer(self.generation, req.generation_id):
            return "stale", self.generation
        self.generation = req.generation_id
        if req.role == ROLE_MASTER:
            if self.master is not None and self.master != who:
                self.roles[self.master] = ROLE_SLAVE
            self.master = who
        elif self.master == who:
            self.master = None
        self.roles[who] = req.role
        return req.role, self.generation


def drive(switch, who, logic, events, now):
    """Deliver role requests to the switch and replies back, until quiet."""
    out = []
    queue = list(events)
    while queue:
        event = queue.pop(0)
        out.append(event)
        if isinstance(event, RoleRequest):
            role, gen = switch.request(who, event)
            if role == "stale":
                queue += logic.role_failed(DP, now)
            else:
                queue += logic.role_reply(DP, role, gen, now)
    return out


def test_generation_ids_grow_and_differ_per_controller():
    assert next_generation(0, 1) == 0x101
    assert next_generation(0x101, 2) == 0x202
    assert next_generation(0x202, 1) == 0x301 > 0x202
    with pytest.raises(ValueError):
        next_generation(0, 256)


def test_home_controller_reads_then_claims_and_is_confirmed():
    switch, home = FakeSwitch(), Mastership(controller_index=1)
    events = drive(switch, "home", home, home.switch_connected(DP, rank=0, now_ms=0), 0)
    assert events[0] == RoleRequest(DP, ROLE_NOCHANGE)
    assert RoleRequest(DP, ROLE_MASTER, 0x101) in events
    assert BecameMaster(DP, 0x101) in events
    assert home.is_master(DP) and switch.master == "home"


def test_backup_waits_while_home_lives_and_takes_over_when_it_dies():
    switch = FakeSwitch()
    home, backup = Mastership(1), Mastership(2)
    drive(switch, "home", home, home.switch_connected(DP, 0, 0), 0)
    events = drive(switch, "backup", backup, backup.switch_connected(DP, 1, 0), 0)
    assert not backup.is_master(DP) and not any(isinstance(e, BecameMaster) for e in events)
    events = drive(switch, "backup", backup, backup.better_alive(DP, False, 100), 100)
    assert backup.is_master(DP) and switch.master == "backup"
    assert switch.generation == 0x202  # above home's 0x101


def test_home_returns_and_takes_back_backup_learns_it_was_demoted():
    switch = FakeSwitch()
    backup = Mastership(2, MastershipConfig(query_interval_ms=100))
    drive(switch, "backup", backup, backup.switch_connected(DP, 1, 0), 0)
    drive(switch, "backup", backup, backup.better_alive(DP, False, 0), 0)
    assert switch.master == "backup"
    home = Mastership(1)
    drive(switch, "home", home, home.switch_connected(DP, 0, 10), 10)
    assert switch.master == "home" and home.is_master(DP)
    # The backup does not step down by itself (home might not reach the switch); OpenFlow
    # 1.3 does not tell it either; its periodic read finds out.
    assert drive(switch, "backup", backup, backup.better_alive(DP, True, 20), 20) == []
    events = drive(switch, "backup", backup, backup.tick(200), 200)
    assert LostMaster(DP) in events and not backup.is_master(DP)
    assert switch.master == "home"


def test_silent_demotion_is_noticed_by_the_periodic_read_and_holddown_applies():
    cfg = MastershipConfig(query_interval_ms=100, holddown_ms=1_000)
    switch = FakeSwitch()
    backup = Mastership(2, cfg)
    drive(switch, "backup", backup, backup.switch_connected(DP, 1, 0), 0)
    drive(switch, "backup", backup, backup.better_alive(DP, False, 0), 0)
    switch.master, switch.generation = "someone", 0x9999  # taken over behind its back
    events = drive(switch, "backup", backup, backup.tick(200), 200)
    assert LostMaster(DP) in events and not backup.is_master(DP)
    assert not any(isinstance(e, RoleRequest) and e.role == ROLE_MASTER for e in events)
    events = drive(switch, "backup", backup, backup.tick(1_300), 1_300)  # hold-down over
    assert backup.is_master(DP) and switch.generation > 0x9999


def test_flow_mod_refused_as_slave_means_stop_programming():
    switch = FakeSwitch()
    home = Mastership(1)
    drive(switch, "home", home, home.switch_connected(DP, 0, 0), 0)
    events = home.demoted(DP, 5)
    assert events == [LostMaster(DP), RoleRequest(DP, ROLE_NOCHANGE)]
    assert not home.is_master(DP)


def test_unanswered_claim_is_retried_and_disconnect_reports_loss():
    cfg = MastershipConfig(claim_timeout_ms=50, query_interval_ms=10_000)
    home = Mastership(1, cfg)
    home.switch_connected(DP, 0, 0)
    claim = home.role_reply(DP, ROLE_EQUAL, 0, 0)
    assert claim == [RoleRequest(DP, ROLE_MASTER, 0x101)]
    assert home.tick(20) == []  # still waiting for the answer
    assert home.tick(100)[0] == RoleRequest(DP, ROLE_NOCHANGE)
    home.role_reply(DP, ROLE_MASTER, 0x101, 101)
    assert home.switch_disconnected(DP) == [LostMaster(DP)]


def test_serial_order_of_generation_ids_survives_wraparound():
    assert newer(2, 1) and not newer(1, 2) and not newer(5, 5)
    assert newer(3, 2**64 - 5)  # just past the wrap is newer


def test_only_one_role_request_in_flight_and_claims_use_the_latest_generation():
    backup = Mastership(2)
    assert backup.switch_connected(DP, 1, 0) == [RoleRequest(DP, ROLE_NOCHANGE)]
    assert backup.better_alive(DP, False, 0) == []  # waits for the answer in flight
    events = backup.role_reply(DP, ROLE_EQUAL, UNDEFINED_GENERATION, 1)
    assert events == [RoleRequest(DP, ROLE_MASTER, 0x102)]  # 0 + 1, not a wrapped id
    assert backup.tick(1_000) == []  # the claim is still in flight: no second request
    events = backup.role_reply(DP, ROLE_MASTER, 0x102, 1_001)
    assert events == [BecameMaster(DP, 0x102)]


def test_a_backup_that_does_not_claim_asks_to_be_slave():
    switch = FakeSwitch()
    home, backup = Mastership(1), Mastership(2)
    drive(switch, "home", home, home.switch_connected(DP, 0, 0), 0)
    events = drive(switch, "backup", backup, backup.switch_connected(DP, 1, 0), 0)
    assert RoleRequest(DP, ROLE_SLAVE, 0x101) in events
    assert switch.master == "home" and not backup.is_master(DP)


def test_a_burst_of_refusals_queues_one_read_not_one_per_error():
    home = Mastership(1)
    home.switch_connected(DP, 0, 0)  # a read is in flight
    for t in range(1_000):
        home.demoted(DP, t)
    assert len(home._switches[DP].queued or []) <= 1
