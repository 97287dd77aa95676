"""The redaction map DB on a real SQLite file: WAL, one writer, AES-GCM values, HMAC lookups, TTL,
delete, the key file, and no plaintext PII anywhere in the files (`strings`-style byte scan)."""

from __future__ import annotations

import base64
import os
import sqlite3
import stat
import threading

import pytest

from app.redaction.placeholders import normalize
from app.redaction.store import Item, RedactionStore, StoreUnavailable, load_key

KEY = bytes(range(32))
VALUES = [("PERSON", "Ada Lovelace"), ("EMAIL", "ada.lovelace@example.org"), ("PHONE", "+1 415-555-0132"),
          ("CREDIT_CARD", "4111 1111 1111 1111"), ("US_SSN", "078-05-1120"),
          ("ADDRESS", "221 Baker Street, Springfield, IL 62704")]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def item(entity: str, value: str) -> Item:
    return Item(entity, normalize(entity, value), value)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(tmp_path, clock):
    s = RedactionStore(tmp_path / "maps" / "r.db", KEY, ttl_s=3600, clock=clock)
    yield s
    s.close()


def test_wal_mode_and_missing_directory_created(store, tmp_path):
    assert store.journal_mode() == "wal"
    store.assign("conv-1", [item("PERSON", "Ada Lovelace")])
    assert (tmp_path / "maps" / "r.db-wal").exists()


def test_same_value_same_tag_new_value_next_number(store):
    tags, _ = store.assign("c", [item("PERSON", "Ada Lovelace"), item("EMAIL", "a@example.org"),
                                 item("PERSON", "Grace Hopper")])
    assert tags == [("PERSON", 1), ("EMAIL", 1), ("PERSON", 2)]
    tags, table = store.assign("c", [item("PERSON", "ADA   lovelace"), item("PERSON", "Alan Turing")])
    assert tags == [("PERSON", 1), ("PERSON", 3)], "normalized spelling finds the first tag"
    assert table.originals == {("PERSON", 1): "Ada Lovelace", ("EMAIL", 1): "a@example.org",
                               ("PERSON", 2): "Grace Hopper", ("PERSON", 3): "Alan Turing"}
    tags, _ = store.assign("c", [item("PHONE", "+1 (415) 555-0132")])
    again, _ = store.assign("c", [item("PHONE", "14155550132")])
    assert tags == again == [("PHONE", 1)], "a phone is its digits"


def test_conversations_are_separate_and_survive_a_reopen(store, tmp_path, clock):
    store.assign("c1", [item("PERSON", "Ada Lovelace")])
    store.assign("c2", [item("PERSON", "Grace Hopper")])
    assert store.table("c1").originals == {("PERSON", 1): "Ada Lovelace"}
    assert store.table("c2").originals == {("PERSON", 1): "Grace Hopper"}
    assert store.table("c3") is None
    store.close()
    reopened = RedactionStore(tmp_path / "maps" / "r.db", KEY, ttl_s=3600, clock=clock)
    try:
        tags, table = reopened.assign("c1", [item("PERSON", "ada lovelace")])
        assert tags == [("PERSON", 1)] and table.originals == {("PERSON", 1): "Ada Lovelace"}
    finally:
        reopened.close()


def test_values_are_encrypted_and_bound_to_their_row(store, tmp_path):
    store.assign("c1", [item("PERSON", "Ada Lovelace")])
    store.assign("c2", [item("PERSON", "Grace Hopper")])
    db = sqlite3.connect(tmp_path / "maps" / "r.db")
    rows = db.execute("SELECT conv, lookup, sealed FROM entries ORDER BY rowid").fetchall()
    assert all(len(lookup) == 32 and len(conv) == 32 for conv, lookup, _ in rows), "HMAC-SHA256 keys"
    assert all(b"Ada" not in sealed and b"Grace" not in sealed for _, _, sealed in rows)
    # Swap the ciphertexts of the two conversations: AES-GCM's associated data refuses both.
    db.execute("UPDATE entries SET sealed = ? WHERE conv = ?", (rows[1][2], rows[0][0]))
    db.commit()
    db.close()
    assert store.table("c1").originals == {}, "a ciphertext moved to another conversation must not decrypt"
    assert store.table("c2").originals == {("PERSON", 1): "Grace Hopper"}


def test_another_key_is_refused_at_open(store, tmp_path):
    store.assign("c", [item("PERSON", "Ada Lovelace")])
    with pytest.raises(StoreUnavailable, match="created with another key"):
        RedactionStore(tmp_path / "maps" / "r.db", bytes(32), ttl_s=3600)


def test_ttl_expires_and_purges_sliding_on_use(store, clock, tmp_path):
    store.assign("old", [item("PERSON", "Ada Lovelace")])
    store.assign("used", [item("PERSON", "Grace Hopper")])
    clock.now += 3000
    store.assign("used", [item("EMAIL", "g@example.org")])   # use extends its life
    clock.now += 1000
    assert store.table("old") is None, "expired an hour after its last use"
    assert store.table("used").originals[("PERSON", 1)] == "Grace Hopper"
    assert store.purge_expired() == 1
    db = sqlite3.connect(tmp_path / "maps" / "r.db")
    assert db.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == 2, "the expired conversation's rows are gone"
    db.close()
    tags, _ = store.assign("old", [item("PERSON", "Someone Else")])
    assert tags == [("PERSON", 1)], "an expired conversation starts afresh"


def test_delete_a_conversation(store):
    store.assign("c", [item("PERSON", "Ada Lovelace"), item("EMAIL", "a@example.org")])
    store.assign("keep", [item("PERSON", "Grace Hopper")])
    assert store.delete_conversation("c") == 2
    assert store.table("c") is None
    assert store.delete_conversation("c") is None
    assert store.table("keep").originals == {("PERSON", 1): "Grace Hopper"}


def test_no_plaintext_pii_in_the_db_or_wal_files(tmp_path):
    db_path = tmp_path / "r.db"
    s = RedactionStore(db_path, KEY, ttl_s=3600)
    conversations = ["support-ticket-4711", "c-derived-xyz"]
    for conv in conversations:
        s.assign(conv, [item(e, v) for e, v in VALUES])
    s.delete_conversation(conversations[1])
    wal_before_checkpoint = (tmp_path / "r.db-wal").read_bytes()
    s.close()   # the last close checkpoints the WAL into the DB file
    blobs = [wal_before_checkpoint] + [p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("r.db")]
    assert sum(len(b) for b in blobs) > 8000, "the scan must see real files"
    needles = [v for _, v in VALUES] + [normalize(e, v) for e, v in VALUES] + conversations
    needles += ["Lovelace", "lovelace", "ada.lovelace", "Baker Street", "4111111111111111", "0785051120"]
    for blob in blobs:
        for needle in needles:
            for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
                assert needle.encode(encoding) not in blob, f"{needle!r} found in the map DB files ({encoding})"


def test_concurrent_writers_get_one_consistent_numbering(store):
    results: list = []

    def work():
        tags, _ = store.assign("busy", [item("PERSON", f"Person Number{i}") for i in range(20)])
        results.append(tags)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == results[0] for r in results) and len({n for _, n in results[0]}) == 20


def test_key_file_is_created_0600_and_reused(tmp_path):
    key_file = tmp_path / "sub" / "r.db.key"
    key = load_key(None, key_file)
    assert len(key) == 32
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert load_key(None, key_file) == key
    env_key = base64.b64encode(os.urandom(32)).decode()
    assert load_key(env_key, key_file) == base64.b64decode(env_key)


def test_bad_keys_and_unusable_paths_are_explained(tmp_path):
    with pytest.raises(StoreUnavailable, match="REDACTION_KEY must be the base64 of exactly 32 bytes"):
        load_key("c2hvcnQ=", tmp_path / "k")
    (tmp_path / "k2").write_text("not base64!\n")
    with pytest.raises(StoreUnavailable, match="key file .*k2 must be"):
        load_key(None, tmp_path / "k2")
    a_file = tmp_path / "plain-file"
    a_file.write_text("")
    with pytest.raises(StoreUnavailable, match="cannot open the redaction map DB .*REDACTION_MAP_DB"):
        RedactionStore(a_file / "sub" / "r.db", KEY, ttl_s=60)
