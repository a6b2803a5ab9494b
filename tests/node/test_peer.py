"""Peer sync between in-process nodes over mTLS; quorum acks; bad peers are refused."""

from __future__ import annotations

import datetime
import time

import grpc
import pytest
from synod.v1 import northbound_pb2 as nb
from synod.v1 import peer_pb2, peer_pb2_grpc

from controller.node import pki
from controller.node.client import ClientError
from controller.node.codec import value_pb
from controller.node.datadir import DataDir
from controller.replication import Identity, SyncRequest, encode_message

from .conftest import InProcessNode, free_port


def _put(c, key, ack=nb.ACK_LOCAL, timeout_ms=0):
    row = nb.Row(table="kv", key=[value_pb(key)], values={"value": value_pb(b"v")})
    return c.call(c.rows.Put, nb.PutRequest(rows=[row], ack=ack, timeout_ms=timeout_ms))


def _wait(pred, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def pair(cluster_dirs):
    """n1 and n2 of a 3-member cluster running; n3 stays down."""
    ports = [free_port() for _ in range(3)]
    peers = [f"127.0.0.1:{p}" for p in ports]
    nodes = []
    for i in range(2):
        others = [a for j, a in enumerate(peers) if j != i]
        nodes.append(InProcessNode(cluster_dirs[i], peers[i], peer={"peers": others}).start())
    yield nodes, peers, cluster_dirs
    for n in nodes:
        n.stop()


def test_quorum_write_is_held_by_a_majority_and_replicates(pair):
    (n1, n2), _, _ = pair
    token = n1.admin_token
    with n1.client(token) as c:
        r = _put(c, "a", nb.ACK_QUORUM, 5000)
        assert r.ack == nb.ACK_QUORUM and r.holders >= 2
    with n2.client(token) as c2, n1.client(token) as c1:
        assert _wait(lambda: c2.call(c2.rows.Get, nb.GetRequest(
            table="kv", key=[value_pb("a")])).found)
        assert _wait(lambda: c1.call(c1.cluster.GetDigest, nb.GetDigestRequest()).state_digest
                     == c2.call(c2.cluster.GetDigest, nb.GetDigestRequest()).state_digest)


def test_quorum_timeout_keeps_the_write(pair):
    (n1, n2), _, _ = pair
    token = n1.admin_token
    n2.stop()
    with n1.client(token) as c:
        with pytest.raises(ClientError) as e:
            _put(c, "lonely", nb.ACK_QUORUM, 300)
        assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "written locally" in str(e.value)
        assert c.call(c.rows.Get, nb.GetRequest(table="kv", key=[value_pb("lonely")])).found


def _peer_stub(address, ca, key, cert, name="node.synod"):
    creds = grpc.ssl_channel_credentials(ca, key, cert)
    ch = grpc.secure_channel(address, creds, options=[("grpc.ssl_target_name_override", name)])
    return ch, peer_pb2_grpc.PeerServiceStub(ch)


def test_bad_peers_are_refused_and_the_node_keeps_serving(pair):
    (n1, _), peers, dirs = pair
    d3 = DataDir(dirs[2])
    ca, key, cert = d3.tls()
    # a member's certificate, but garbage and a spoofed sender inside
    ch, stub = _peer_stub(peers[0], ca, key, cert)
    with ch:
        g = d3.genesis()
        spoof = encode_message(SyncRequest(g.cluster_id, DataDir(dirs[1]).identity().node_id, {}))
        r = stub.Deliver(peer_pb2.DeliverRequest(messages=[b"\xff\x00garbage", spoof]),
                         timeout=5)
        assert r.rejected == 2
    # a certificate from the cluster CA for a key that is not a member
    dca = DataDir(dirs[0])
    stranger = pki.issue_node_cert(pki.KeyPair(dca.ca_key.read_bytes(), ca), Identity.generate())
    ch, stub = _peer_stub(peers[0], ca, stranger.key_pem, stranger.cert_pem)
    with ch, pytest.raises(grpc.RpcError) as e:
        stub.Hello(peer_pb2.HelloRequest(), timeout=5)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "not a member" in e.value.details()
    # a certificate from a foreign CA: the TLS handshake fails
    foreign_ca = pki.make_ca("other")
    foreign = pki.issue_node_cert(foreign_ca, d3.identity())
    ch, stub = _peer_stub(peers[0], ca, foreign.key_pem, foreign.cert_pem)
    with ch, pytest.raises(grpc.RpcError) as e:
        stub.Hello(peer_pb2.HelloRequest(), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    with n1.client(n1.admin_token) as c:
        assert _put(c, "still-fine").seq > 0
        status = c.call(c.cluster.GetStatus, nb.GetStatusRequest())
        assert status.counters["peer_rejected|malformed"] >= 1
        assert status.counters["peer_rejected|wrong_sender"] == 1


def test_an_expired_member_certificate_is_refused(pair):
    (n1, _), peers, dirs = pair
    d3, dca = DataDir(dirs[2]), DataDir(dirs[0])
    ca = dca.ca_cert.read_bytes()
    long_ago = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=30)  # noqa: UP017
    expired = pki.issue_node_cert(pki.KeyPair(dca.ca_key.read_bytes(), ca), d3.identity(),
                                  not_before=long_ago, valid_days=1)
    ch, stub = _peer_stub(peers[0], ca, expired.key_pem, expired.cert_pem)
    with ch, pytest.raises(grpc.RpcError) as e:
        stub.Hello(peer_pb2.HelloRequest(), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE  # the TLS handshake fails
    # the same member with a valid certificate is served, and so is everyone else
    ch, stub = _peer_stub(peers[0], ca, *d3.tls()[1:])
    with ch:
        assert stub.Hello(peer_pb2.HelloRequest(), timeout=5).node_id
    with n1.client(n1.admin_token) as c:
        assert _put(c, "after-expired").seq > 0


def test_a_flooding_peer_is_rate_limited_and_others_are_served(cluster_dirs):
    ports = [free_port() for _ in range(3)]
    peers = [f"127.0.0.1:{p}" for p in ports]
    n1 = InProcessNode(cluster_dirs[0], peers[0],
                       peer={"peers": peers[1:2], "rate_per_s": 20.0, "burst": 20}).start()
    try:
        d3 = DataDir(cluster_dirs[2])
        ch, stub = _peer_stub(peers[0], *d3.tls())
        refused = 0
        with ch:
            for _ in range(60):
                try:
                    stub.Deliver(peer_pb2.DeliverRequest(messages=[]), timeout=5)
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    assert "rate limit" in e.details()
                    refused += 1
        assert refused >= 30
        with n1.client(n1.admin_token) as c:
            assert _put(c, "still-served").seq > 0
            status = c.call(c.cluster.GetStatus, nb.GetStatusRequest())
            assert status.counters["peer_refused|rate"] == refused
    finally:
        n1.stop()


def _delivery_calls(port: int) -> dict[str, float]:
    """grpc_server_started_total of the peer service's two delivery methods, scraped."""
    from .test_metrics import families, sample, scrape

    fams = families(scrape(port)[0])
    return {m: sample(fams, "grpc_server_started", "grpc_server_started_total",
                      grpc_service="synod.v1.PeerService", grpc_method=m) or 0.0
            for m in ("Deliver", "DeliverStream")}


def _two_nodes(cluster_dirs, metrics_port):
    ports = [free_port() for _ in range(3)]
    peers = [f"127.0.0.1:{p}" for p in ports]
    n1 = InProcessNode(cluster_dirs[0], peers[0], peer={"peers": [peers[1], peers[2]]}).start()
    n2 = InProcessNode(cluster_dirs[1], peers[1], peer={"peers": [peers[0], peers[2]]},
                       metrics={"listen": f"127.0.0.1:{metrics_port}"}).start()
    return n1, n2


@pytest.mark.parametrize("peer_streams", [True, False], ids=["stream", "older-peer"])
def test_deliveries_ride_one_stream_or_fall_back_to_calls(cluster_dirs, monkeypatch,
                                                          peer_streams):
    """Links deliver over one DeliverStream per peer (a call per batch no more); a peer
    without it (older code: UNIMPLEMENTED) gets Deliver calls, and quorum writes work."""
    from controller.node.peers import PeerServicer

    if not peer_streams:
        async def no_stream(self, request_iterator, context):
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
            yield  # an async generator, as gRPC expects of a streaming handler

        monkeypatch.setattr(PeerServicer, "DeliverStream", no_stream)
    port = free_port()
    n1, n2 = _two_nodes(cluster_dirs, port)
    try:
        with n1.client(n1.admin_token) as c:
            for i in range(20):
                assert _put(c, f"s{i}", nb.ACK_QUORUM, 5000).holders >= 2
        calls = _delivery_calls(port)
        if peer_streams:
            assert calls["DeliverStream"] >= 1 and calls["DeliverStream"] <= 4, calls
            assert calls["Deliver"] == 0, calls
        else:
            assert calls["Deliver"] >= 20, calls  # one call per batch at least
    finally:
        n1.stop()
        n2.stop()


def test_vector_changes_name_what_changed_and_what_left():
    from controller.node.peers import vector_changes

    assert vector_changes({"a": 1, "b": 2}, {"a": 1, "b": 2}) == {}
    assert vector_changes({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 1}) == {"b": 3, "c": 1}
    assert vector_changes({"a": 1, "b": 2}, {"a": 1}) == {"b": 0}


@pytest.mark.parametrize("asked", [True, False], ids=["changes", "older-caller"])
def test_a_stream_answers_with_the_vector_changes_when_asked(pair, asked):
    """On a DeliverStream whose caller asks for it, an answer after the first carries only
    the entries of the vector that changed since the previous answer (decision 0101); a
    caller that does not ask (older code) gets the whole vector every time."""
    import queue

    (n1, _), peers, dirs = pair
    ch, stub = _peer_stub(peers[0], *DataDir(dirs[2]).tls())
    requests: queue.Queue = queue.Queue()
    with ch:
        answers = stub.DeliverStream(iter(requests.get, None), timeout=30)

        def exchange():
            requests.put(peer_pb2.DeliverRequest(messages=[], vector_changes=asked))
            return next(answers)

        first = exchange()
        whole = dict(first.version_vector)
        assert not first.vector_changes and whole
        idle = exchange()
        with n1.client(n1.admin_token) as c:
            seq = _put(c, "changed").seq
        after = exchange()
        requests.put(None)
    me = n1.info["node_id"]
    if asked:
        assert idle.vector_changes and dict(idle.version_vector) == {}
        assert after.vector_changes and dict(after.version_vector) == {me: seq}
    else:
        assert not idle.vector_changes and dict(idle.version_vector) == whole
        assert not after.vector_changes and dict(after.version_vector) == {**whole, me: seq}
