"""The flow reconciler on a fake OpenFlow table: desired set, audits, refusals, timeouts."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from controller.forwarding.audit import InstalledFlow
from controller.forwarding.fabric import FABRIC_COOKIE
from controller.forwarding.flowspec import FLOW_COOKIE_MASK, FLOW_COOKIE_SPACE, spec_from_row
from controller.forwarding.intents import FlowAdd, FlowDelete, FlowStatsRequest, Match, Output
from controller.forwarding.reconciler import (
    AUDIT_TIMEOUT_MS,
    Audited,
    FlowReconciler,
    FlowRefused,
    ReconcilerConfig,
)
from tests.unit.fake_openflow import FakeSwitch

DP, OTHER_DP = 0x101, 0x202
INTERVAL_MS = 1_000
OFPET_FLOW_MOD_FAILED, OFPFMFC_BAD_TABLE_ID = 5, 9


_HOSTS: dict[str, int] = {}  # flow id -> its own destination, so no two flows overlap


def spec(flow_id: str, port: int = 2, dpid: int = DP, priority: int = 200, **row):
    host = _HOSTS.setdefault(flow_id, len(_HOSTS) + 1)
    return spec_from_row({"dpid": dpid, "flow_id": flow_id, "priority": priority,
                          "match": f"eth_type=0x0800,ipv4_dst=10.1.0.{host}",
                          "actions": f"output:{port}", **row})


def specs(*items) -> dict:
    return {s.cookie: s for s in items}


@dataclass
class Table(FakeSwitch):
    """A fake table 0 that answers flow-stats requests and can refuse chosen flows."""

    refuse: set[int] = field(default_factory=set)  # cookies the switch will not install

    def stats(self, req: FlowStatsRequest) -> list[InstalledFlow]:
        mask = req.cookie_mask
        return [InstalledFlow(f.cookie, 0, f.priority, f.match, f.actions) for f in self.flows
                if f.cookie & mask == req.cookie & mask]

    def holds(self) -> dict[int, tuple]:
        return {f.cookie: (f.priority, f.match, f.actions) for f in self.flows}


def installed(*items) -> dict[int, tuple]:
    return {s.cookie: (s.priority, s.match, s.actions) for s in items}


class Rig:
    """The reconciler mastering one fake switch; stats are answered at once unless held."""

    def __init__(self, desired_known: bool = True) -> None:
        self.rec = FlowReconciler(ReconcilerConfig(audit_interval_ms=INTERVAL_MS),
                                  desired_known=desired_known)
        self.table = Table(DP, [1, 2, 3])
        self.now = 0
        self.hold_stats = False
        self.held: list[FlowStatsRequest] = []
        self.log: list = []  # every output, in order

    def feed(self, outputs) -> list:
        seen, queue = [], list(outputs)
        while queue:
            out = queue.pop(0)
            seen.append(out)
            if isinstance(out, FlowAdd) and out.cookie in self.table.refuse:
                queue += self.rec.switch_error(out.dpid, out.cookie, OFPET_FLOW_MOD_FAILED,
                                               OFPFMFC_BAD_TABLE_ID)
            elif isinstance(out, (FlowAdd, FlowDelete)):
                self.table.apply(out)
            elif isinstance(out, FlowStatsRequest):
                if self.hold_stats:
                    self.held.append(out)
                else:
                    queue += self.rec.flow_stats(out.dpid, self.table.stats(out), False, self.now)
        self.log += seen
        return seen

    def at(self, now: int) -> list:
        """Let time pass to `now`, ticking every 100 ms as the app does."""
        seen = []
        while self.now < now:
            self.now = min(self.now + 100, now)
            seen += self.feed(self.rec.tick(self.now))
        return seen

    def master(self) -> list:
        return self.feed(self.rec.became_master(DP, self.now))


def adds(outputs, cookie=None) -> list[FlowAdd]:
    return [o for o in outputs if isinstance(o, FlowAdd) and cookie in (None, o.cookie)]


def audits(outputs) -> list[Audited]:
    return [o for o in outputs if isinstance(o, Audited)]


def requests(outputs) -> list[FlowStatsRequest]:
    return [o for o in outputs if isinstance(o, FlowStatsRequest)]


# --- the desired set --------------------------------------------------------------------

def test_a_new_master_installs_the_desired_set():
    rig = Rig()
    web, dns = spec("web"), spec("dns", port=3)
    assert rig.feed(rig.rec.set_desired(DP, specs(web, dns), 0)) == []  # not master yet
    assert rig.master() == [web.to_intent(), dns.to_intent()]
    assert rig.table.holds() == installed(web, dns)


def test_a_master_sends_changes_of_the_desired_set_at_once():
    rig = Rig()
    web, dns = spec("web"), spec("dns")
    rig.feed(rig.rec.set_desired(DP, specs(web, dns), 0))
    rig.master()
    moved = spec("web", port=3)
    out = rig.feed(rig.rec.set_desired(DP, specs(moved), 10))
    assert out == [FlowDelete(DP, Match(), dns.cookie), moved.to_intent()]
    assert rig.table.holds() == installed(moved)
    out = rig.feed(rig.rec.flows_changed([(DP, moved.cookie, None),
                                          (DP, dns.cookie, dns)], 20))
    assert out == [FlowDelete(DP, Match(), moved.cookie), dns.to_intent()]
    assert rig.table.holds() == installed(dns)
    assert rig.feed(rig.rec.flows_changed([(DP, dns.cookie, dns)], 30)) == []  # unchanged


def test_a_row_deleted_and_given_again_in_one_batch_counts_once():
    """The node link's watch re-delivers a row as its deletion and the row: a master must
    not delete and re-add a flow that did not change (counters, churn), nor re-send a
    refused one; a row that did change in between is sent once."""
    rig = Rig()
    web, dns = spec("web"), spec("dns")
    rig.feed(rig.rec.set_desired(DP, specs(web, dns), 0))
    rig.master()
    again = spec("web")  # parsed again: equal, another object
    assert again == web and again is not web
    assert rig.feed(rig.rec.flows_changed([(DP, web.cookie, None),
                                           (DP, web.cookie, again)], 10)) == []
    rig.rec.switch_error(DP, dns.cookie, 5, 9)
    assert rig.rec.flows_changed([(DP, dns.cookie, None), (DP, dns.cookie, spec("dns"))],
                                 20) == []
    assert rig.rec.flow_errors() == {(DP, "dns"): "type 5 code 9"}
    moved = spec("web", port=3)
    out = rig.feed(rig.rec.flows_changed([(DP, web.cookie, None), (DP, web.cookie, moved)], 30))
    assert out == [moved.to_intent()]
    assert rig.table.holds() == installed(moved, dns)
    out = rig.feed(rig.rec.flows_changed([(DP, dns.cookie, spec("dns", port=4)),
                                          (DP, dns.cookie, None)], 40))
    assert out == [FlowDelete(DP, Match(), dns.cookie)]


def test_changes_for_switches_we_do_not_master_are_only_remembered():
    rig = Rig()
    rig.master()
    far = spec("far", dpid=OTHER_DP)
    assert rig.rec.flows_changed([(OTHER_DP, far.cookie, far)], 0) == []
    assert rig.rec.desired(OTHER_DP) == specs(far)
    assert rig.rec.became_master(OTHER_DP, 5) == [far.to_intent()]


def test_the_full_snapshot_changes_only_switches_whose_set_differs():
    rig = Rig(desired_known=False)
    web, far = spec("web"), spec("far", dpid=OTHER_DP)
    rig.feed(rig.rec.set_desired(DP, specs(web), 0))
    rig.master()
    out = rig.rec.flows_loaded({DP: specs(web), OTHER_DP: specs(far)}, 10)
    assert out == []  # DP unchanged; OTHER_DP not mastered
    out = rig.feed(rig.rec.flows_loaded({}, 20))  # every row deleted
    assert out == [FlowDelete(DP, Match(), web.cookie)]
    assert rig.rec.desired(OTHER_DP) == {}


def test_specs_filed_under_the_wrong_switch_or_cookie_are_refused():
    rec = FlowReconciler()
    web = spec("web")
    with pytest.raises(ValueError, match="given as"):
        rec.set_desired(OTHER_DP, specs(web), 0)
    with pytest.raises(ValueError, match="given as"):
        rec.flows_changed([(DP, web.cookie + 1, web)], 0)


# --- audits -----------------------------------------------------------------------------

def test_the_audit_repairs_extra_missing_and_different_flows_and_spares_others():
    rig = Rig()
    keep, lost, moved, stale = spec("keep"), spec("lost"), spec("moved"), spec("stale")
    rig.feed(rig.rec.set_desired(DP, specs(keep, lost, moved), 0))
    rig.master()
    rig.at(3_000)  # past the first audits: the table is as desired, nothing in flight
    assert rig.table.holds() == installed(keep, lost, moved)
    fabric_flow = FlowAdd(DP, 100, Match(eth_dst="02:00:00:00:00:01"), (Output(1),),
                          cookie=FABRIC_COOKIE)
    rig.table.apply(fabric_flow)  # another app's flow
    rig.table.apply(FlowDelete(DP, Match(), lost.cookie))  # someone deleted it
    rig.table.apply(FlowAdd(DP, moved.priority, moved.match, (Output(9),),
                            cookie=moved.cookie))  # someone changed it
    rig.table.apply(stale.to_intent())  # its row is gone
    out = rig.at(rig.rec._mastered[DP].next_audit_ms)
    done = audits(out)[-1]
    assert (done.missing, done.changed, done.unexpected) == (("lost",), ("moved",),
                                                             (stale.cookie,))
    assert rig.table.holds() == installed(keep, lost, moved) | {
        FABRIC_COOKIE: (100, fabric_flow.match, fabric_flow.actions)}
    assert all(o.cookie & FLOW_COOKIE_MASK == FLOW_COOKIE_SPACE
               for o in out if isinstance(o, (FlowAdd, FlowDelete)))
    assert rig.rec.last_audit(DP) == done and not done.clean
    later = audits(rig.at(rig.now + INTERVAL_MS + 100))
    assert later and all(a.clean for a in later)


def test_audits_follow_the_interval_from_the_end_of_the_last_one():
    rig = Rig()
    rig.master()
    assert requests(rig.at(100)) == []
    assert requests(rig.at(200)) == [FlowStatsRequest(DP, FLOW_COOKIE_SPACE, FLOW_COOKIE_MASK)]
    rig.hold_stats = True
    assert len(requests(rig.at(1_200))) == 1  # answered at 200: next due at 1,200
    assert requests(rig.at(5_000)) == []  # outstanding: no second request
    rig.feed(rig.rec.flow_stats(DP, [], False, 5_000))
    assert requests(rig.at(5_900)) == []
    assert len(requests(rig.at(6_000))) == 1


def test_an_unanswered_audit_is_given_up_after_the_timeout():
    rig = Rig()
    web = spec("web")
    rig.feed(rig.rec.set_desired(DP, specs(web), 0))
    rig.master()
    rig.hold_stats = True
    rig.at(200)
    assert len(rig.held) == 1
    # Part of a reply, then silence: the rest is never coming.
    rig.feed(rig.rec.flow_stats(DP, [InstalledFlow(spec("stale").cookie, 0, 1, Match(), ())],
                                True, 300))
    assert requests(rig.at(200 + AUDIT_TIMEOUT_MS - 100)) == []
    assert len(requests(rig.at(200 + AUDIT_TIMEOUT_MS))) == 1
    rig.hold_stats = False
    rig.feed(rig.rec.flow_stats(DP, rig.table.stats(rig.held[-1]), False, rig.now))
    done = rig.rec.last_audit(DP)
    assert done is not None and done.unexpected == ()  # the old partial reply is dropped


def test_no_audit_before_the_desired_set_is_known():
    rig = Rig(desired_known=False)
    web = spec("web")
    rig.table.apply(web.to_intent())  # left by an earlier master
    rig.master()
    assert requests(rig.at(5_000)) == []
    assert rig.table.holds() == installed(web)  # not wiped as "unexpected"
    rig.feed(rig.rec.flows_loaded({DP: specs(web)}, rig.now))
    assert requests(rig.at(rig.now + 100)) and rig.table.holds() == installed(web)


def test_flows_sent_just_before_the_request_are_not_yet_missing():
    rig = Rig()
    rig.master()
    rig.at(1_000)
    late = spec("late")
    # Sent, but the switch has not applied it when it answers the stats request.
    rig.rec.flows_changed([(DP, late.cookie, late)], rig.now)
    due = rig.rec._mastered[DP].next_audit_ms
    assert due - rig.now < 500  # within the grace before the request
    assert audits(rig.at(due))[-1].missing == ()
    assert audits(rig.at(rig.now + INTERVAL_MS))[-1].missing == ("late",)
    assert rig.table.holds() == installed(late)


def test_flows_with_timeouts_are_not_readded_when_they_expire():
    rig = Rig()
    brief = spec("brief", idle_timeout=5)
    rig.feed(rig.rec.set_desired(DP, specs(brief), 0))
    rig.master()
    rig.table.apply(FlowDelete(DP, Match(), brief.cookie))  # expired
    rig.at(5_000)
    assert adds(rig.log) == [brief.to_intent()] and rig.table.holds() == {}


# --- mastership -------------------------------------------------------------------------

def test_a_master_that_loses_the_switch_stops_and_ignores_late_replies():
    rig = Rig()
    web = spec("web")
    rig.feed(rig.rec.set_desired(DP, specs(web), 0))
    rig.master()
    rig.hold_stats = True
    rig.at(200)
    assert rig.rec.lost_master(DP) == []
    assert rig.rec.flow_stats(DP, [], False, 300) == []  # would say "web is missing"
    assert rig.rec.set_desired(DP, {}, 400) == [] and rig.at(10_000) == []
    rig.feed(rig.rec.set_desired(DP, specs(web), rig.now))
    rig.master()
    # A reply to the request of the earlier mastership, before this one has asked.
    assert rig.rec.flow_stats(DP, [], False, rig.now + 50) == []


def test_a_new_mastership_audits_soon_even_if_the_last_audit_was_lost():
    """A switch that reconnects while an audit is outstanding never answers it on the new
    connection. Before the reconciler, the app waited out the 30 s audit timeout."""
    rig = Rig()
    rig.master()
    rig.hold_stats = True
    rig.at(200)
    rig.rec.lost_master(DP)
    rig.at(1_000)
    rig.master()
    assert len(requests(rig.at(1_200))) == 1


# --- refused flows ----------------------------------------------------------------------

@pytest.mark.parametrize("how", ["watched change", "full snapshot"])
def test_a_refused_flow_is_reported_once_and_retried_only_when_its_row_changes(how):
    rig = Rig()
    bad, good = spec("bad", table_id=7), spec("good")
    rig.table.refuse.add(bad.cookie)
    rig.feed(rig.rec.set_desired(DP, specs(bad, good), 0))
    out = rig.master()
    error = f"type {OFPET_FLOW_MOD_FAILED} code {OFPFMFC_BAD_TABLE_ID}"
    assert [o for o in out if isinstance(o, FlowRefused)] == [
        FlowRefused(DP, "bad", bad.cookie, error)]
    assert rig.rec.flow_errors() == {(DP, "bad"): error}
    rig.at(20_000)  # many audits
    assert len(audits(rig.log)) > 10
    assert len(adds(rig.log, bad.cookie)) == 1  # not retried
    assert all(a.missing == () for a in audits(rig.log))
    assert rig.rec.flow_errors() == {(DP, "bad"): error}  # still reported
    # The row changes (to something the switch takes): sent again, error cleared.
    fixed = spec("bad")
    rig.table.refuse.clear()
    if how == "watched change":
        rig.feed(rig.rec.flows_changed([(DP, fixed.cookie, fixed)], rig.now))
    else:
        rig.feed(rig.rec.flows_loaded({DP: specs(fixed, good)}, rig.now))
    assert len(adds(rig.log, bad.cookie)) == 2 and rig.rec.flow_errors() == {}
    assert rig.table.holds() == installed(fixed, good)


def test_a_refused_flow_still_refused_after_its_row_changes_is_reported_again():
    rig = Rig()
    bad = spec("bad", table_id=7)
    rig.table.refuse.add(bad.cookie)
    rig.feed(rig.rec.set_desired(DP, specs(bad), 0))
    rig.master()
    worse = spec("bad", table_id=8)
    out = rig.feed(rig.rec.set_desired(DP, specs(worse), 10))
    assert adds(out) == [worse.to_intent()]
    assert [o.flow_id for o in out if isinstance(o, FlowRefused)] == ["bad"]
    assert (DP, "bad") in rig.rec.flow_errors()


def test_an_error_row_goes_when_the_flow_is_deleted_or_seen_installed():
    rig = Rig()
    bad = spec("bad")
    rig.table.refuse.add(bad.cookie)
    rig.feed(rig.rec.set_desired(DP, specs(bad), 0))
    rig.master()
    assert rig.rec.flow_errors()
    rig.table.refuse.clear()
    rig.table.apply(bad.to_intent())  # e.g. installed by the previous master
    rig.at(3_000)
    assert rig.rec.flow_errors() == {}
    rig.table.refuse.add(bad.cookie)
    rig.feed(rig.rec.switch_error(DP, bad.cookie, 1, 2))
    rig.feed(rig.rec.flows_changed([(DP, bad.cookie, None)], rig.now))
    assert rig.rec.flow_errors() == {}


def test_errors_for_flows_that_are_not_desired_are_not_ours():
    rec = FlowReconciler()
    web = spec("web")
    rec.set_desired(DP, specs(web), 0)
    assert rec.switch_error(DP, FABRIC_COOKIE, 5, 1) == []
    assert rec.switch_error(OTHER_DP, web.cookie, 5, 1) == []
    assert rec.flow_errors() == {}


def test_config_rejects_nonsense():
    with pytest.raises(ValueError):
        ReconcilerConfig(audit_interval_ms=0)
    with pytest.raises(ValueError):
        ReconcilerConfig(audit_grace_ms=-1)


# --- flow_state: what the audit saw of each flow -------------------------------------------

def test_the_audit_reports_each_flow_installed_missing_or_failed_with_counters():
    rig = Rig()
    keep, lost, bad = spec("keep"), spec("lost"), spec("bad")
    rig.table.refuse.add(bad.cookie)
    rig.feed(rig.rec.set_desired(DP, specs(keep, lost, bad), 0))
    rig.master()
    rig.at(3_000)
    states = rig.rec.flow_states()[DP]
    assert states["keep"].state == "installed" and states["lost"].state == "installed"
    assert states["bad"].state.startswith("failed: type 5 code 9")
    # The switch's counters come with an installed flow; a flow someone deleted is missing
    # (and re-sent) at the audit that finds it.
    rig.table.stats = lambda req: [InstalledFlow(f.cookie, 0, f.priority, f.match,
                                                 f.actions, packets=4, bytes=240)
                                   for f in rig.table.flows if f.cookie != lost.cookie]
    rig.at(rig.rec._mastered[DP].next_audit_ms)
    states = rig.rec.flow_states()[DP]
    assert (states["keep"].packets, states["keep"].bytes) == (4, 240)
    assert states["lost"].state == "missing"
    # Only switches we master are reported.
    rig.rec.lost_master(DP)
    assert rig.rec.flow_states() == {}


def test_flow_state_rows_follow_states_and_report_counters_at_most_every_interval():
    from controller.forwarding.reconciler import FlowState
    from controller.openflow.node_link import flow_state_changes

    key = ("0000000000000101", "f")
    rows, gone, sent = flow_state_changes({DP: {"f": FlowState("installed", 1, 60)}}, {},
                                          0, 111)
    assert [r[1] for r in rows] == [list(key)] and not gone
    assert rows[0][2] == {"state": "installed", "packets": 1, "bytes": 60, "seen_ms": 111}
    # Counters moved 2 s later: not yet; 10 s later: yes; a state change: at once.
    rows, _, sent2 = flow_state_changes({DP: {"f": FlowState("installed", 5, 300)}}, sent,
                                        2_000, 0)
    assert rows == [] and sent2 == sent
    rows, _, sent3 = flow_state_changes({DP: {"f": FlowState("installed", 9, 540)}}, sent,
                                        10_000, 0)
    assert rows[0][2]["packets"] == 9
    rows, _, sent4 = flow_state_changes({DP: {"f": FlowState("missing")}}, sent3, 10_001, 0)
    assert rows[0][2]["state"] == "missing"
    # A flow no longer ours (or deleted) is retracted.
    rows, gone, _ = flow_state_changes({}, sent4, 10_002, 0)
    assert rows == [] and [g[1] for g in gone] == [list(key)]
