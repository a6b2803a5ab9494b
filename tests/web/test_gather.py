"""controller/web/gather.py's panels that need a merge to happen for real (tests/cluster
makes them): conflicts and lineage, read from an engine-shaped stand-in."""

from __future__ import annotations

from controller.replication import encode
from controller.web import gather


class _Engine:
    def __init__(self, conflicts: dict, forks: dict) -> None:
        self._conflicts, self._forks = conflicts, forks

    def rows(self, table: str) -> dict:
        assert table == "conflicts"
        return self._conflicts

    def forks(self) -> dict:
        return self._forks


def _conflict(name: str, kept, lost, kind: str = "row") -> dict:
    return {"kind": kind, "name": name, "row_key": encode(["k1"]), "column_name": "value",
            "kept": encode(kept), "lost": encode(lost), "kept_author": "a" * 32,
            "kept_hlc": 2, "kept_lineage": "1" * 64, "lost_author": "b" * 32, "lost_hlc": 1,
            "lost_lineage": "2" * 64}


def test_conflicts_read_as_the_cli_words_them_and_are_cut():
    engine = _Engine({("c1",): _conflict("kv", "x" * 1000, "y"),
                      ("c2",): _conflict("policy/v2", 1, 2, kind="slot")},
                     {"e" * 32: 7})
    out = gather._conflicts(engine)
    assert [c["kind"] for c in out] == ["equivocation", "row", "slot"]
    assert out[0]["description"].startswith(f"node {'e' * 32} signed two ops at seq 7")
    assert out[1]["description"].startswith('kv ["k1"] column value:')
    assert len(out[1]["description"]) == gather.TEXT_CHARS_MAX  # a huge value is clipped
    assert "slot policy/v2 was decided 1" in out[2]["description"]


def test_an_unreadable_conflict_row_is_shown_not_fatal():
    bad = _conflict("kv", 1, 2)
    bad["kept"] = b"\xff\xfe"
    out = gather._conflicts(_Engine({("c",): bad}, {}))
    assert out == [{"kind": "row", "description": "(unreadable conflict row)"}]
