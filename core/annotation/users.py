"""Users, roles and password login. The role that counts is the one stored in the catalog, never the
one a caller's User object claims."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from ..errors import AssayError
from ..store import Store
from .tables import _log, _now, _schema

ROLES = ("admin", "annotator")
# scrypt cost: 2**14 x 8 x 1 is the interactive-login setting of the scrypt paper (~16 MB, ~50 ms)
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1
MIN_PASSWORD = 8


@dataclass(frozen=True)
class User:
    name: str
    role: str
    operator: bool = False  # the local operator (CLI, open mode): not a row in ann_users

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


OPERATOR = User("local", "admin", operator=True)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if kind != "scrypt":
        return False
    got = hashlib.scrypt(password.encode("utf-8"), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                         dklen=len(digest) // 2)
    return hmac.compare_digest(got.hex(), digest)


_DUMMY_HASH: list[str] = []


def has_users(store: Store) -> bool:
    _schema(store)
    return bool(store.catalog.query("SELECT 1 FROM ann_users LIMIT 1"))


def add_user(store: Store, actor: User, name: str, password: str, role: str = "annotator") -> User:
    """Add a user. The first user of a workspace must be an admin (someone has to run sessions)."""
    _schema(store)
    name = (name or "").strip()
    if not name or len(name) > 64 or not all(c.isalnum() or c in "._-@" for c in name):
        raise AssayError(f"invalid user name {name!r}: use 1-64 letters, digits, '.', '_', '-', '@'")
    if name == OPERATOR.name:
        raise AssayError(f"user name {name!r} is reserved for the local operator")
    if role not in ROLES:
        raise AssayError(f"invalid role {role!r}: use admin or annotator")
    if len(password or "") < MIN_PASSWORD:
        raise AssayError(f"password for {name!r} too short: use at least {MIN_PASSWORD} characters")
    pw_hash = hash_password(password)  # before the write lock: it takes ~50 ms on purpose
    with store.catalog.write() as conn:
        first = conn.execute("SELECT COUNT(*) FROM ann_users").fetchone()[0] == 0
        if first and role != "admin":
            raise AssayError("the first user of a workspace must be an admin (--role admin)")
        if not first:
            _require_admin(conn, actor, "add users")
        if conn.execute("SELECT 1 FROM ann_users WHERE name = ?", (name,)).fetchone():
            raise AssayError(f"user {name!r} already exists")
        conn.execute("INSERT INTO ann_users VALUES (?,?,?,?)", (name, role, pw_hash, _now()))
        _log(conn, actor, "add_user", None, {"name": name, "role": role})
    return User(name, role)


def list_users(store: Store, actor: User) -> list[dict[str, Any]]:
    _schema(store)
    with store.catalog.write() as conn:
        _require_admin(conn, actor, "list users")
        rows = conn.execute("SELECT name, role, created_at FROM ann_users ORDER BY name").fetchall()
    return [dict(r) for r in rows]


def authenticate(store: Store, name: str, password: str) -> User | None:
    """The user if the password is right, else None (same work either way: no user enumeration by timing)."""
    _schema(store)
    rows = store.catalog.query("SELECT name, role, pw_hash FROM ann_users WHERE name = ?", ((name or "").strip(),))
    if not rows:
        if not _DUMMY_HASH:
            _DUMMY_HASH.append(hash_password("not a password"))
        check_password(password or "", _DUMMY_HASH[0])
        return None
    row = rows[0]
    return User(row["name"], row["role"]) if check_password(password or "", row["pw_hash"]) else None


def get_user(store: Store, name: str) -> User | None:
    """The user as the catalog has it now (a removed user is None; a changed role shows)."""
    _schema(store)
    rows = store.catalog.query("SELECT name, role FROM ann_users WHERE name = ?", (name,))
    return User(rows[0]["name"], rows[0]["role"]) if rows else None


def _role(conn, actor: User) -> str:
    if actor is None:
        raise AssayError("not logged in")
    if actor.operator:
        return OPERATOR.role
    row = conn.execute("SELECT role FROM ann_users WHERE name = ?", (actor.name,)).fetchone()
    if row is None:
        raise AssayError(f"unknown user {actor.name!r}")
    return row["role"]


def _require_admin(conn, actor: User, what: str) -> None:
    if _role(conn, actor) != "admin":
        raise AssayError(f"refused: {actor.name} is an annotator; only an admin may {what}")

