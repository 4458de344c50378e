"""Annotation sessions: people review a version's records in the browser, and their decisions become
a new, recorded version.

Everything lives in the workspace catalog (SQLite, WAL), beside `versions`:

    ann_users        name, role (admin | annotator), scrypt password hash (never the password)
    ann_sessions     a session over one version: label schema, overlap k, annotators, status
    ann_items        one row a record of the session: hand-out order, revision, an admin's edit,
                     how many annotators hold it (claims) and whether that reached k (full)
    ann_claims       which annotator was handed which record (the queue, and where to resume)
    ann_decisions    one decision a (session, record, annotator), with the revision it was made on
    ann_resolutions  an admin's verdict on a conflict
    ann_log          admin actions that change or remove something: who, what, when

Why these rules:
- Hand-out is a claim taken inside one write transaction (BEGIN IMMEDIATE), in a fixed order (the
  record's first row in the version), so two annotators asking at the same moment queue on SQLite's
  write lock and can never both take the k-th copy of a record; the same workspace always hands out
  the same records in the same order.
- A decision is written in its own transaction the moment it is made; two annotators deciding on the
  same record keep one row each (the key includes the annotator). Each decision carries the record
  revision it was made on: when an admin has changed the record since, the decision is refused with
  a message instead of silently applying to text the annotator never saw.
- Resuming is a query, not client state: an annotator's next record is the first one they claimed
  and have not decided at its current revision, else a new claim.
- Every function takes the acting user and checks the role stored in the catalog (not the role the
  caller's object claims): an annotator cannot finalise, resolve, edit, delete or read others' work.
  `OPERATOR` stands for whoever runs the CLI on the workspace files (they can open the SQLite file
  anyway), and for the app in open local mode (a workspace with no users).

A record that appears twice in a version is one item: it is reviewed once, and the decision applies
to each of its rows.

Modules: `tables` (the catalog tables), `users` (users, roles, passwords), `sessions` (create, list,
load, delete), `queue` (hand-out, decisions, edits, conflicts, progress), `kappa` (agreement) and
`finalizing` (the session's result as a version). `kappa` and `finalizing` are not named after the
functions `agreement` and `finalize` they hold, so that re-exporting those here shadows no module.
"""

from .finalizing import finalize
from .kappa import agreement, fleiss_kappa
from .queue import (
                    EDIT_FIELDS,
                    LABELS,
                    Item,
                    conflicts,
                    decide,
                    edit_record,
                    export_decisions,
                    get_item,
                    next_item,
                    release_claims,
                    resolve,
                    status,
)
from .sessions import LabelSchema, Session, audit_flags, create_session, delete_session, get_session, list_sessions
from .tables import DDL
from .users import (
                    MIN_PASSWORD,
                    OPERATOR,
                    ROLES,
                    SCRYPT_N,
                    SCRYPT_P,
                    SCRYPT_R,
                    User,
                    add_user,
                    authenticate,
                    check_password,
                    get_user,
                    has_users,
                    hash_password,
                    list_users,
)

__all__ = ["DDL", "EDIT_FIELDS", "LABELS", "MIN_PASSWORD", "OPERATOR", "ROLES", "SCRYPT_N", "SCRYPT_P", "SCRYPT_R",
           "Item", "LabelSchema", "Session", "User", "add_user", "agreement", "audit_flags", "authenticate",
           "check_password", "conflicts", "create_session", "decide", "delete_session", "edit_record",
           "export_decisions", "finalize", "fleiss_kappa", "get_item", "get_session", "get_user", "has_users",
           "hash_password", "list_sessions", "list_users", "next_item", "release_claims", "resolve", "status"]
