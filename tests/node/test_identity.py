"""Data dirs, certificates bound to node keys, and tokens."""

from __future__ import annotations

import pytest

from controller.node import pki
from controller.node.datadir import DataDir, DataDirError, init_data_dirs
from controller.node.tokens import Role, TokenError, new_token, parse_token, record_from_row
from controller.replication import Identity


def test_init_creates_members_sharing_one_genesis_and_ca(cluster_dirs):
    d1, d2, d3 = (DataDir(p) for p in cluster_dirs)
    g = d1.genesis()
    assert g is not None and g == d2.genesis() == d3.genesis()
    assert {d.identity().public_key for d in (d1, d2, d3)} == set(g.members)
    assert d1.ca_cert.read_bytes() == d3.ca_cert.read_bytes()
    assert d1.admin_token.stat().st_mode & 0o077 == 0 and d1.node_key.stat().st_mode & 0o077 == 0
    assert not d2.admin_token.exists()


def test_init_refuses_to_overwrite_a_key(cluster_dirs):
    with pytest.raises(DataDirError, match="refusing to overwrite"):
        init_data_dirs([cluster_dirs[1]], None, pki.KeyPair(b"", b""))


def test_node_cert_proves_its_member(cluster_dirs):
    d = DataDir(cluster_dirs[1])
    g = d.genesis()
    assert pki.check_node_cert(d.tls_cert.read_bytes(), g.member_ids) == d.identity().node_id


def test_cert_from_the_ca_for_a_non_member_is_refused(cluster_dirs, tmp_path):
    d = DataDir(cluster_dirs[0])
    ca = pki.KeyPair(d.ca_key.read_bytes(), d.ca_cert.read_bytes())
    stranger = pki.issue_node_cert(ca, Identity.generate())
    with pytest.raises(pki.CertError, match="not a member"):
        pki.check_node_cert(stranger.cert_pem, d.genesis().member_ids)


def test_cert_naming_a_member_without_its_key_is_refused(cluster_dirs):
    """A CA that mints a certificate in a member's name cannot sign the binding for it."""
    d = DataDir(cluster_dirs[0])
    ca = pki.KeyPair(d.ca_key.read_bytes(), d.ca_cert.read_bytes())
    victim = DataDir(cluster_dirs[1]).identity()
    forged = pki.issue_node_cert(ca, Identity.generate())
    members = d.genesis().member_ids
    # the forged certificate's key binding belongs to another key: move its name to the victim
    members_as_victim = {**members, Identity.from_seed(bytes(32)).node_id: b"\0" * 32}
    with pytest.raises(pki.CertError):
        pki.check_node_cert(forged.cert_pem, members_as_victim)
    assert victim.node_id in members


def test_tokens_round_trip_and_hide_the_secret():
    token, record = new_token(Role.OPERATOR, "ci", 1)
    token_id, secret = parse_token(token)
    assert token_id == record.id and record.matches(secret) and not record.matches(secret + "x")
    assert secret.encode() not in record.to_row()
    back = record_from_row(f"token/{record.id}", record.to_row())
    assert back == record
    assert record_from_row(f"token/{record.id}", b"\xff garbage") is None
    with pytest.raises(TokenError):
        parse_token("Bearer nope")
    assert Role.ADMIN > Role.OPERATOR > Role.VIEWER
