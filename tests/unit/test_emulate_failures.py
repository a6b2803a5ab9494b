"""`synod emulate` (sdn): a node that does not answer is a failed check naming the step and
the cause, never a traceback (issue 14: at 10 sites `synod flows list` timed out after
30 s and the run ended in subprocess.TimeoutExpired)."""

from __future__ import annotations

import contextlib
import logging
import subprocess
from types import SimpleNamespace

import pytest

_LOGGER_CLASS = logging.getLoggerClass()
from topologies import netctl, sdn, sdn_scenario  # noqa: E402 - imports Mininet, which ...
from topologies.cloud_edge import SiteInfo  # noqa: E402
from topologies.netctl import EmulationError  # noqa: E402
from topologies.reach import Deadline, Reach, describe_pairs  # noqa: E402
from topologies.scenario import ScenarioOptions  # noqa: E402

# ... makes every logger created later its own (with a level and a console handler): the
# tests after this module in the same process, which look at records with caplog, would
# see none. Mininet's own logger keeps its class.
logging.setLoggerClass(_LOGGER_CLASS)


def test_a_cli_call_that_times_out_is_an_emulation_error_naming_it(monkeypatch, tmp_path):
    def hang(argv, **kw):
        raise subprocess.TimeoutExpired(argv, kw["timeout"])

    monkeypatch.setattr(sdn.subprocess, "run", hang)
    cluster = sdn.SdnCluster(["cloud", "edge1"], tmp_path, lambda m: None)
    with pytest.raises(EmulationError, match=r"synod flows list at cloud: no answer within "
                                             r"40 s \(the node's log: .*cloud/logs\)"):
        cluster.synod("cloud", "flows", "list")


class _Cluster:
    """The calls the scenario makes of SdnCluster; `synod` fails for one command."""

    def __init__(self, sites, workdir, progress, failing: str) -> None:
        self.sites, self.workdir, self.ca, self.failing = sites, workdir, "ca.crt", failing

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    controller_targets = None

    def web_url(self, site, with_token=True):
        return "https://127.0.0.1:1/"

    def synod(self, site, *args, timeout_s=30):
        if " ".join(args[:2]) == self.failing:
            raise EmulationError(f"synod {' '.join(args)} at {site}: no answer within 40 s")
        return ""

    def wait(self, predicate, timeout_s, interval_s=0.3):
        return 0.1

    def cut(self, site):
        pass

    heal = cut


@pytest.mark.parametrize("failing, step", [
    ("flows add", "a flow added at the cloud for e1s1"),
    ("flows list", "heal: edge1's flow at the cloud"),
])
def test_a_step_that_fails_ends_the_scenario_with_a_failed_check(monkeypatch, tmp_path,
                                                                 failing, step):
    net = {"cs1": SimpleNamespace(dpid="0000000000000001"),
           "e1s1": SimpleNamespace(dpid="0000000000000101")}
    site_map = {"cloud": SiteInfo("cloud", ("cloud-h1",), ("cs1",)),
                "edge1": SiteInfo("edge1", ("edge1-h1",), ("e1s1",))}

    @contextlib.contextmanager
    def running_network(topo, port, progress, targets_for=None):
        yield net

    monkeypatch.setattr(sdn_scenario, "SdnCluster",
                        lambda *a: _Cluster(*a, failing=failing))
    monkeypatch.setattr(sdn_scenario, "running_network", running_network)
    monkeypatch.setattr(sdn_scenario, "sites", lambda n: site_map)
    waits = []
    monkeypatch.setattr(netctl, "wait_reachable",
                        lambda n, pairs, t: waits.append((len(pairs), t)) or
                        Reach({p: 0.1 for p in pairs}))
    monkeypatch.setattr(sdn_scenario, "ping_pairs",
                        lambda n, pairs, **kw: {p: True for p in pairs})
    monkeypatch.setattr(sdn_scenario, "_mastership", lambda *a: [])
    monkeypatch.setattr(sdn_scenario, "_dump", lambda bridge: "nw_dst=10.250.0.1 "
                                                              "nw_dst=10.250.0.2")
    monkeypatch.setattr(sdn_scenario, "cut_wan", lambda *a: None)
    monkeypatch.setattr(sdn_scenario, "heal_wan", lambda *a: None)
    healed = []
    report = sdn_scenario.run_sdn(None, ScenarioOptions(sites=1), lambda m: None,
                                  str(tmp_path), on_healed=lambda c, r: healed.append(r))
    text, ok = report.checks[-1]
    assert not ok and not report.passed and healed == []
    assert text.startswith(f"{step}: synod {failing} ") and text.endswith(
        "at cloud: no answer within 40 s"), text
    assert "result: FAIL" in report.render()
    assert waits[0] == (2, 31.0)  # the start: 30 s for the network, a round for 2 pairs


def test_a_reachability_deadline_names_what_it_waited_for_and_every_failed_pair():
    site_of = {"ch1": "cloud", "ch2": "cloud", "e1h1": "edge1", "e1h2": "edge1"}
    pairs = [(a, b) for a in site_of for b in site_of if a != b]
    missing = {("ch1", "e1h1"), ("e1h1", "ch1"), ("e1h1", "ch2"), ("e1h2", "ch1"),
               ("e1h2", "ch2")}
    reach = Reach({p: None if p in missing else 1.5 for p in pairs}, sent=40,
                  echoes={p: 31 if p == ("ch1", "e1h1") else 30 for p in pairs})
    assert reach.took is None and set(reach.missing) == missing
    text, ok = reach.check("start: every host reached every other host",
                           Deadline(30, len(pairs)), site_of)
    assert not ok and text == (
        "start: every host reached every other host: not within 31 s: 30 s for the network "
        "and 1 s for one round of echoes over 12 host pairs (3.9 ms a pair: 256 awaiting "
        "an answer at once, an echo every 1 s while unanswered); 40 echoes sent: 5 never "
        "answered (echoed 30-31 times each): ch1 -> e1h1, edge1 -> cloud: all 4")
    assert describe_pairs([], site_of, pairs) == ""
    done = Reach({p: 0.5 for p in pairs})
    assert done.check("x", Deadline(30, 12), site_of) == ("x in 0.50 s", True)


def test_a_failed_wait_says_why_sends_failed_and_which_sources_it_could_not_probe():
    site_of = {"ch1": "cloud", "e1h1": "edge1"}
    reach = Reach({("ch1", "e1h1"): None, ("e1h1", "ch1"): None}, sent=3,
                  errors=["e1h1: its namespace: [Errno 2] No such file or directory"],
                  echoes={("ch1", "e1h1"): 3})
    reach.send_errors["ENETUNREACH"] += 3
    text, ok = reach.check("heal: full reachability returned", Deadline(30, 2), site_of)
    assert not ok
    assert "2 never answered (echoed 0-3 times each): ch1 -> e1h1, e1h1 -> ch1" in text
    assert text.endswith("; sends refused: ENETUNREACH x3; could not probe from e1h1: its "
                         "namespace: [Errno 2] No such file or directory")
