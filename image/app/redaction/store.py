"""REDACTION_MAP_DB: which tag stands for which value, per conversation, with no plaintext at rest.

SQLite in WAL mode (readers never wait for the writer). One writer: every write goes through
one connection under one lock; each reading thread has its own connection.

Nothing identifying is stored in the clear:
  - a conversation is its HMAC-SHA256(key, "conversation" || id);
  - a value is found by HMAC-SHA256(key, conversation hash || entity || normalized value), so the
    same value gets the same tag without the value being stored to compare against;
  - the original text is AES-256-GCM encrypted (random 96-bit nonce), its row bound into the
    associated data so a ciphertext copied to another row or conversation fails to decrypt.
Tags (`PERSON`, 1) are stored as they are: they are what the upstream model sees anyway.

Conversations expire `ttl_s` after their last use (sliding); expired ones are purged on open and
then at most once a minute by the writer. `PRAGMA secure_delete` zeroes what is deleted.

The key: REDACTION_KEY (base64 of 32 bytes), else a key file created 0600 beside the DB on first
start. A DB created under another key is refused at open (a check value in `meta`), rather than
answering every lookup with garbage.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.redaction.placeholders import TagTable

_KEY_BYTES = 32
_NONCE_BYTES = 12
_PURGE_EVERY_S = 60.0
_KEY_CHECK_LABEL = b"spark-control redaction key check v1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS conversations (
    conv BLOB PRIMARY KEY,
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS conversations_expires ON conversations (expires);
CREATE TABLE IF NOT EXISTS entries (
    conv BLOB NOT NULL REFERENCES conversations (conv) ON DELETE CASCADE,
    lookup BLOB NOT NULL,
    entity TEXT NOT NULL,
    number INTEGER NOT NULL,
    sealed BLOB NOT NULL,
    PRIMARY KEY (conv, lookup),
    UNIQUE (conv, entity, number)
);
"""


class StoreUnavailable(Exception):
    """The map DB cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class Item:
    """One value to pseudonymize: its entity, its normalized form (the identity), its text."""

    entity: str
    normalized: str
    original: str


def load_key(env_key: str | None, key_file: Path) -> bytes:
    """REDACTION_KEY when set; else the key file, created (0600, exclusive) on first start."""
    if env_key:
        return _decode_key(env_key, "environment variable REDACTION_KEY")
    try:
        key_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        try:
            return _decode_key(key_file.read_text().strip(), f"key file {key_file}")
        except OSError as exc:
            raise StoreUnavailable(f"cannot read the redaction key file {key_file}: {exc.strerror or exc}") from None
    except OSError as exc:
        raise StoreUnavailable(f"cannot create the redaction key file {key_file}: {exc.strerror or exc}; "
                               "set REDACTION_KEY_FILE to a writable path or REDACTION_KEY") from None
    key = os.urandom(_KEY_BYTES)
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(key).decode() + "\n")
    return key


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != _KEY_BYTES:
        raise StoreUnavailable(f"{where} must be the base64 of exactly {_KEY_BYTES} bytes "
                               "(e.g. `python -c 'import os,base64;print(base64.b64encode(os.urandom(32)).decode())'`)")
    return key


class RedactionStore:
    """The map DB. Methods are blocking (SQLite): async code calls them in a thread."""

    def __init__(self, path: Path, key: bytes, *, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.ttl_s = ttl_s
        self._clock = clock
        self._mac_key = hmac.new(key, b"lookup", hashlib.sha256).digest()   # separate keys per use
        self._aead = AESGCM(hmac.new(key, b"seal", hashlib.sha256).digest())
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._next_purge = 0.0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = self._connect()
            self._writer.executescript(_SCHEMA)
            self._check_key(key)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"cannot open the redaction map DB {self.path}: {exc}; check REDACTION_MAP_DB "
                                   "and that its directory is writable") from None
        self.purge_expired()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=10.0, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")   # WAL: durable at checkpoints, no fsync per commit
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA secure_delete=ON")
        return conn

    def _check_key(self, key: bytes) -> None:
        check = hmac.new(key, _KEY_CHECK_LABEL, hashlib.sha256).digest()
        row = self._writer.execute("SELECT value FROM meta WHERE name = 'key_check'").fetchone()
        if row is None:
            self._writer.execute("INSERT INTO meta (name, value) VALUES ('key_check', ?)", (check,))
        elif not hmac.compare_digest(row[0], check):
            raise StoreUnavailable(f"the redaction map DB {self.path} was created with another key: restore the "
                                   "key (REDACTION_KEY or the key file) or delete the DB to start afresh")

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    # -- hashing and sealing ---------------------------------------------------------------------
    def _conv(self, conversation: str) -> bytes:
        return hmac.new(self._mac_key, b"conversation\0" + conversation.encode(), hashlib.sha256).digest()

    def _lookup(self, conv: bytes, entity: str, normalized: str) -> bytes:
        return hmac.new(self._mac_key, conv + entity.encode() + b"\0" + normalized.encode(), hashlib.sha256).digest()

    @staticmethod
    def _aad(conv: bytes, entity: str, number: int) -> bytes:
        return conv + f"{entity}_{number}".encode()

    def _seal(self, conv: bytes, entity: str, number: int, original: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, original.encode(), self._aad(conv, entity, number))

    def _open(self, conv: bytes, entity: str, number: int, sealed: bytes) -> str:
        return self._aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:],
                                  self._aad(conv, entity, number)).decode()

    def derive_conversation_id(self, text: str) -> str:
        """An id for a conversation that sent none: keyed, so it reveals nothing about `text`."""
        return "c-" + hmac.new(self._mac_key, b"derive\0" + text.encode(), hashlib.sha256).hexdigest()[:32]

    # -- operations ------------------------------------------------------------------------------
    def assign(self, conversation: str, items: Iterable[Item]) -> tuple[list[tuple[str, int]], TagTable]:
        """The tag of every item (an existing one for a value seen before in this conversation,
        else the entity's next number), and then the conversation's whole table. One transaction."""
        items = list(items)
        conv = self._conv(conversation)
        now = self._clock()
        with self._write_lock:
            self._maybe_purge(now)
            db = self._writer
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("INSERT INTO conversations (conv, expires) VALUES (?, ?) "
                           "ON CONFLICT (conv) DO UPDATE SET expires = excluded.expires", (conv, now + self.ttl_s))
                tags = []
                next_number: dict[str, int] = {}
                for item in items:
                    lookup = self._lookup(conv, item.entity, item.normalized)
                    row = db.execute("SELECT number FROM entries WHERE conv = ? AND lookup = ?",
                                     (conv, lookup)).fetchone()
                    if row is None:
                        if item.entity not in next_number:
                            top = db.execute("SELECT MAX(number) FROM entries WHERE conv = ? AND entity = ?",
                                             (conv, item.entity)).fetchone()[0]
                            next_number[item.entity] = (top or 0) + 1
                        number = next_number[item.entity]
                        next_number[item.entity] += 1
                        db.execute("INSERT INTO entries (conv, lookup, entity, number, sealed) VALUES (?, ?, ?, ?, ?)",
                                   (conv, lookup, item.entity, number,
                                    self._seal(conv, item.entity, number, item.original)))
                    else:
                        number = row[0]
                    tags.append((item.entity, number))
                table = self._table(db, conv)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return tags, table

    def table(self, conversation: str) -> TagTable | None:
        """Every tag issued in the conversation; None when it is unknown, expired or deleted."""
        db = self._reader()
        conv = self._conv(conversation)
        row = db.execute("SELECT expires FROM conversations WHERE conv = ?", (conv,)).fetchone()
        if row is None or row[0] <= self._clock():
            return None
        return self._table(db, conv)

    def _table(self, db: sqlite3.Connection, conv: bytes) -> TagTable:
        table = TagTable()
        for entity, number, sealed in db.execute("SELECT entity, number, sealed FROM entries WHERE conv = ?", (conv,)):
            try:
                table.add(entity, number, self._open(conv, entity, number, sealed))
            except InvalidTag:
                continue   # a tampered row restores nothing rather than something wrong
        return table

    def delete_conversation(self, conversation: str) -> int | None:
        """Forget a conversation now: how many values it held, None when there was no such one."""
        conv = self._conv(conversation)
        with self._write_lock:
            count = self._writer.execute("SELECT COUNT(*) FROM entries WHERE conv = ?", (conv,)).fetchone()[0]
            gone = self._writer.execute("DELETE FROM conversations WHERE conv = ?", (conv,)).rowcount
        return count if gone else None

    def purge_expired(self) -> int:
        with self._write_lock:
            return self._purge(self._clock())

    def _maybe_purge(self, now: float) -> None:
        if now >= self._next_purge:
            self._purge(now)

    def _purge(self, now: float) -> int:
        self._next_purge = now + _PURGE_EVERY_S
        return self._writer.execute("DELETE FROM conversations WHERE expires <= ?", (now,)).rowcount

    def journal_mode(self) -> str:
        return self._reader().execute("PRAGMA journal_mode").fetchone()[0]

    def close(self) -> None:
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        with self._write_lock:
            self._writer.close()
