"""`synod members [list|remove|forget]` against an in-process one-voter node: the listing
is unchanged, and removals and releases the chain does not allow fail with one clear line."""

from __future__ import annotations

import json

from click.testing import CliRunner

from controller.cli import cli


def _run(node, *args):
    opts = ["--server", node.api, "--insecure", "--token", node.admin_token]
    return CliRunner().invoke(cli, [*args, *opts])


def test_members_lists_as_before_and_refuses_what_the_chain_does_not_allow(solo):
    listed = _run(solo, "members", "--json")
    assert listed.exit_code == 0, listed.output
    [me] = json.loads(listed.output)
    assert me["self"] and json.loads(_run(solo, "members", "list", "--json").output) == [me]
    node = me["node_id"]

    r = _run(solo, "members", "remove", node[:10])
    assert r.exit_code == 1 and f"{node[:16]} is the last voter" in r.output
    r = _run(solo, "members", "forget", node)
    assert r.exit_code == 1 and f"{node[:16]} is a voter of membership 0" in r.output
    r = _run(solo, "members", "forget", "deadbeefcafe")
    assert r.exit_code == 1 and "'deadbeefcafe' names no node" in r.output
    r = _run(solo, "members", "remove", "abc")  # too short to be a prefix
    assert r.exit_code == 1 and "names no node" in r.output
    r = _run(solo, "members", "forget")
    assert r.exit_code == 2  # usage: NODES is required


def test_options_before_the_subcommand_reach_it(solo):
    opts = ["--server", solo.api, "--insecure", "--token", solo.admin_token]
    r = CliRunner().invoke(cli, ["members", *opts, "forget", "deadbeefcafe"])
    assert r.exit_code == 1 and "names no node" in r.output


def test_a_release_is_not_proposed_while_a_member_may_run_older_code():
    """Older code refuses a decided release and stops following membership changes: the
    node asks for one only when every member's hello said it runs this version."""
    from types import SimpleNamespace

    from controller.node.engine import Engine

    engine = SimpleNamespace(node_id="a" * 32, members={"a" * 32: b"", "b" * 32: b"",
                                                        "c" * 32: b""},
                             replica=SimpleNamespace(delta_peers={"b" * 32}))
    assert Engine.members_on_older_code(engine) == ["c" * 32]  # not heard, or older code
    engine.replica.delta_peers.add("c" * 32)
    assert Engine.members_on_older_code(engine) == []
    engine.replica.delta_peers = None  # the simulators: every peer is new
    assert Engine.members_on_older_code(engine) == []
