"""Optional token expiry (decision 0060): `synod token create --expires`, enforced at
authentication, shown by `synod token list`; records from before expiry stay readable."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import grpc
import pytest
from synod.v1 import northbound_pb2 as nb

from controller.node.auth import Authenticator, Denied
from controller.node.client import ClientError
from controller.node.tokens import (
    Role,
    TokenError,
    expiry_ms,
    new_token,
    record_from_row,
    token_key,
)
from controller.replication import decode, encode

NOW = 1_900_000_000_000  # 2030-03-17T17:46:40Z


@pytest.mark.parametrize("text, at", [
    ("90m", NOW + 90 * 60_000),
    ("12h", NOW + 12 * 3_600_000),
    ("30d", NOW + 30 * 86_400_000),
    ("2w", NOW + 14 * 86_400_000),
    ("2031-01-31", 1_927_584_000_000),
    ("2031-01-31T12:00:00Z", 1_927_627_200_000),
    ("2031-01-31T13:00:00+01:00", 1_927_627_200_000),
])
def test_expiry_is_a_duration_or_an_iso_date(text, at):
    assert expiry_ms(text, NOW) == at


@pytest.mark.parametrize("text, needle", [
    ("soon", "give a duration"),
    ("-5d", "give a duration"),
    ("2020-01-01", "is not in the future"),
    ("0s", "is not in the future"),
])
def test_bad_or_past_expiry_is_refused(text, needle):
    with pytest.raises(TokenError, match=needle):
        expiry_ms(text, NOW)


def test_records_without_expiry_keep_their_row_and_old_rows_read_as_never():
    _, record = new_token(Role.OPERATOR, "old", NOW)
    plain = decode(record.to_row())
    assert "expires_ms" not in plain  # byte for byte the row of a node before expiry
    assert record_from_row(token_key(record.id), encode(plain)).expires_ms == 0
    _, expiring = new_token(Role.VIEWER, "new", NOW, NOW + 1000)
    back = record_from_row(token_key(expiring.id), expiring.to_row())
    assert back == expiring and back.expires_ms == NOW + 1000


def test_the_authenticator_refuses_an_expired_token_naming_the_time():
    token, record = new_token(Role.ADMIN, "", NOW, NOW + 60_000)
    auth = Authenticator(lambda key: record.to_row() if key == token_key(record.id) else None,
                         100.0, 100, 10)
    auth.wall_clock = lambda: (NOW + 59_999) / 1000
    assert auth.authenticate(f"Bearer {token}", Role.VIEWER) == record
    auth.wall_clock = lambda: (NOW + 60_000) / 1000
    with pytest.raises(Denied) as e:
        auth.authenticate(f"Bearer {token}", Role.VIEWER)
    assert e.value.code == "unauthenticated"
    assert str(e.value) == f"token {record.id} expired at 2030-03-17T17:47:40Z"


def test_a_token_created_with_expiry_works_until_then_and_list_shows_it(solo):
    with solo.client() as c:
        with pytest.raises(ClientError) as e:
            c.call(c.admin.CreateToken, nb.CreateTokenRequest(
                role="viewer", expires_ms=int(time.time() * 1000) - 1))
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "not in the future" in str(
            e.value)
        expires = int(time.time() * 1000) + 1500
        made = c.call(c.admin.CreateToken, nb.CreateTokenRequest(role="viewer",
                                                                 expires_ms=expires))
        assert made.info.expires_ms == expires and not made.info.expired
    with solo.client(made.token) as v:
        assert v.call(v.cluster.GetStatus, nb.GetStatusRequest()).node_id
    time.sleep(max(0.0, expires / 1000 - time.time()) + 0.1)
    with solo.client(made.token) as v:
        with pytest.raises(ClientError) as e:
            v.call(v.cluster.GetStatus, nb.GetStatusRequest())
    assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert f"token {made.info.id} expired at 20" in str(e.value)
    with solo.client() as c:
        listed = {t.id: t for t in c.call(c.admin.ListTokens, nb.ListTokensRequest()).tokens}
    assert listed[made.info.id].expired and listed[made.info.id].expires_ms == expires
    assert not any(t.expires_ms or t.expired for i, t in listed.items() if i != made.info.id)


def test_synod_token_create_expires_and_list(solo):
    synod = [sys.executable, "-c", "from controller.cli import main; main()"]
    common = ["--server", solo.api, "--insecure", "--token", solo.admin_token]

    def run(*args):
        return subprocess.run([*synod, *args, *common], capture_output=True, text=True,
                              timeout=60, check=False)

    done = run("token", "create", "--role", "viewer", "--expires", "2099-01-01", "--json")
    assert done.returncode == 0, done.stderr
    made = json.loads(done.stdout)
    assert made["info"]["expires_ms"] == 4070908800000  # a JSON number, not a string
    done = run("token", "list")
    assert done.returncode == 0, done.stderr
    header, *lines = done.stdout.splitlines()
    assert "EXPIRES" in header
    line = next(x for x in lines if x.startswith(made["info"]["id"]))
    assert "2099-01-01T00:00:00Z" in line
    assert any("never" in x for x in lines if not x.startswith(made["info"]["id"]))
    done = run("token", "create", "--role", "viewer", "--expires", "yesterday")
    assert done.returncode == 1 and "--expires: expiry 'yesterday'" in done.stderr
