"""`assay annotate ...`: users, annotation sessions, their progress, export and finalising.

The CLI acts as the local operator (whoever can run it on the workspace files can open its SQLite
file anyway), with an admin's rights; `--user NAME` makes it act as that user instead, after the
password (from $ASSAY_PASSWORD, else a hidden prompt), so the same role checks as the app apply.
"""

from __future__ import annotations

import io
import json
import os
import sys
from typing import Annotated, Any, Optional

import polars as pl
import typer
from rich.table import Table

from assay.app.cli.common import JsonFlag, current_store, out, run_command
from assay.core import annotation as ann
from assay.core.errors import AssayError

annotate_app = typer.Typer(help="Annotation sessions: people accept, reject or edit records; the result is a version.",
                           no_args_is_help=True)
users_app = typer.Typer(help="Users of the app (admins and annotators).", no_args_is_help=True)
annotate_app.add_typer(users_app, name="users")
_acting: dict[str, Optional[str]] = {}


@annotate_app.callback()
def _annotate(user: Annotated[Optional[str], typer.Option(
        "--user", "-u", help="act as this user (password from $ASSAY_PASSWORD or a prompt); "
                             "default: the local operator")] = None) -> None:
    _acting["user"] = user


def _actor() -> ann.User:
    name = _acting.get("user")
    if not name:
        return ann.OPERATOR
    password = os.environ.get("ASSAY_PASSWORD")
    if password is None:
        password = typer.prompt(f"password for {name}", hide_input=True, err=True)
    user = ann.authenticate(current_store(), name, password)
    if user is None:
        raise AssayError(f"wrong user name or password for {name!r}")
    return user


def _csv(value: Optional[str]) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


@users_app.command("add")
def users_add(name: Annotated[str, typer.Argument(help="user name")],
              role: Annotated[str, typer.Option("--role", help="admin or annotator")] = "annotator",
              password_stdin: Annotated[bool, typer.Option("--password-stdin",
                                                           help="read the password from stdin")] = False,
              as_json: JsonFlag = False) -> None:
    """Add a user; the password is asked for (or read from stdin), and only its scrypt hash is kept."""

    def work():
        if password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = typer.prompt(f"password for {name}", hide_input=True, confirmation_prompt=True, err=True)
        user = ann.add_user(current_store(), _actor(), name, password, role)
        return {"name": user.name, "role": user.role}

    run_command(as_json, work, lambda r: out.print(f"added {r['role']} {r['name']}"))


@users_app.command("list")
def users_list(as_json: JsonFlag = False) -> None:
    """List users and their roles."""

    def render(r):
        for u in r["users"]:
            out.print(f"{u['name']:<24} {u['role']:<10} {u['created_at'][:19]}")

    run_command(as_json, lambda: {"users": ann.list_users(current_store(), _actor())}, render)


@annotate_app.command("create")
def create(version: Annotated[str, typer.Argument(help="version to annotate (id, prefix, NAME or NAME@N)")],
           name: Annotated[Optional[str], typer.Option("--name", "-n",
                                                       help="session name (default: VERSION-review)")] = None,
           where: Annotated[Optional[str], typer.Option("--where", help="annotate a saved filter of the version "
                                                        "(a SQL condition, as in `assay filter`)")] = None,
           overlap: Annotated[int, typer.Option("--overlap", "-k", help="annotators who see each record")] = 1,
           annotators: Annotated[Optional[str], typer.Option(
               "--annotators", help="comma-separated user names (default: everyone)")] = None,
           reasons: Annotated[Optional[str], typer.Option("--reasons",
                                                          help="comma-separated reasons annotators may tick")] = None,
           categories: Annotated[Optional[str], typer.Option(
               "--categories", help="comma-separated categories, one picked per record")] = None,
           allow_edit: Annotated[bool, typer.Option("--allow-edit",
                                                    help="annotators may edit instruction, input and output "
                                                         "(a chat record: its turns' text)")] = False,
           as_json: JsonFlag = False) -> None:
    """Create an annotation session over a version."""

    def work():
        schema = ann.LabelSchema(reasons=_csv(reasons), categories=_csv(categories), allow_edit=allow_edit)
        s = ann.create_session(current_store(), _actor(), version, name=name, where=where, schema=schema,
                               overlap=overlap, annotators=_csv(annotators))
        return s.summary()

    run_command(as_json, work, lambda r: out.print(
        f"session {r['name']} ({r['id']}): {r['items']} records, overlap {r['overlap']}"))


@annotate_app.command("status")
def status(session: Annotated[Optional[str], typer.Argument(help="session id or name (default: list sessions)")] = None,
           as_json: JsonFlag = False) -> None:
    """A session's progress per annotator, record states and agreement; without SESSION, the sessions."""

    def work():
        store, actor = current_store(), _actor()
        if session is None:
            return {"sessions": [s.summary() for s in ann.list_sessions(store, actor)]}
        result = ann.status(store, actor, session)
        if actor.is_admin:
            result["agreement"] = ann.agreement(store, actor, session)
        return result

    run_command(as_json, work, _render_status)


def _render_status(r: dict[str, Any]) -> None:
    if "sessions" in r:
        for s in r["sessions"]:
            out.print(f"{s['id']}  {s['name']:<28} {s['status']:<10} {s['items']:>7} records  overlap {s['overlap']}  "
                      f"version {s['version_id'][:12]}")
        return
    s = r["session"]
    out.print(f"{s['name']} ({s['id']}) {s['status']}: {s['items']} records, overlap {s['overlap']}")
    if "records" in r:
        out.print("  records  " + "  ".join(f"{k}={v}" for k, v in r["records"].items()))
    table = Table()
    for col in ("annotator", "decided", "remaining", "accept rate", "median s"):
        table.add_column(col)
    per = r.get("agreement", {}).get("annotators", {})
    for name, p in r["annotators"].items():
        a = per.get(name, {})
        rate = f"{a['accept_rate']:.0%}" if a else "-"
        secs = f"{a['median_seconds']:.1f}" if a.get("median_seconds") is not None else "-"
        table.add_row(name, str(p["decided"]), str(p["remaining"]), rate, secs)
    out.print(table)
    if "agreement" in r:
        k = r["agreement"]["label"]
        value = f"{k['kappa']:.3f}" if k["kappa"] is not None else "n/a"
        out.print(f"  agreement: {k['method'] or '-'} kappa {value} over {k['items']} records {k['note']}")


@annotate_app.command("export")
def export(session: Annotated[str, typer.Argument(help="session id or name")],
           path: Annotated[str, typer.Argument(help="out.jsonl (one decision a line) or out.csv / out.parquet")],
           as_json: JsonFlag = False) -> None:
    """Write every decision of a session (annotator, label, reasons, category, edit, revision, time)."""
    def work():
        rows = ann.export_decisions(current_store(), _actor(), session)
        if path.endswith(".jsonl"):
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            data = text.encode("utf-8")
        elif path.endswith((".csv", ".parquet")):
            frame = pl.DataFrame([{**r, "reasons": json.dumps(r["reasons"]),
                                   "edit": json.dumps(r["edit"]) if r["edit"] else None} for r in rows],
                                 infer_schema_length=None)
            buf = io.BytesIO()
            frame.write_csv(buf) if path.endswith(".csv") else frame.write_parquet(buf)
            data = buf.getvalue()
        else:
            raise AssayError(f"{path}: export writes .jsonl, .csv or .parquet")
        tmp = f"{path}.tmp"
        with open(tmp, "wb") as fh:  # whole file or nothing
            fh.write(data)
        os.replace(tmp, path)
        return {"path": path, "decisions": len(rows)}

    run_command(as_json, work, lambda r: out.print(f"wrote {r['decisions']} decisions to {r['path']}"))


@annotate_app.command("finalize")
def finalize(session: Annotated[str, typer.Argument(help="session id or name")],
             name: Annotated[Optional[str], typer.Option(
                 "--name", "-n", help="dataset for the new version (default: the same)")] = None,
             allow_undecided: Annotated[bool, typer.Option(
                 "--allow-undecided", help="leave undecided records out instead of refusing")] = False,
             resume: Annotated[bool, typer.Option("--resume", help="finish a finalize that was interrupted")] = False,
             as_json: JsonFlag = False) -> None:
    """Make the session's accepted (and edited) records a new version; the session then closes."""

    def work():
        return ann.finalize(current_store(), _actor(), session, name=name, allow_undecided=allow_undecided,
                            resume=resume)

    run_command(as_json, work, lambda r: out.print(
        f"{r['ref']} ({r['version'][:12]}): {r['records']} records; accepted {r['params']['accepted']}, "
        f"rejected {r['params']['rejected']}, edited {r['params']['edited']}"))


@annotate_app.command("release")
def release(session: Annotated[str, typer.Argument(help="session id or name")],
            annotator: Annotated[str, typer.Argument(help="user whose undecided records go back to the pool")],
            as_json: JsonFlag = False) -> None:
    """Hand back the records an annotator holds without deciding (someone who left), so others get them."""
    run_command(as_json, lambda: {"released": ann.release_claims(current_store(), _actor(), session, annotator)},
                lambda r: out.print(f"released {r['released']} records held by {annotator}"))
