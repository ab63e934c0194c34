"""Operator commands: `adaptinf migrate`, `adaptinf keys create|list|revoke` and `adaptinf gc`."""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import select

from service.config import Settings, get_settings

# alembic.ini's settings, for a Config built without it (its other keys configure logging,
# which `adaptinf migrate` leaves to the caller). `%%` is ConfigParser's escaped `%`.
_FILE_TEMPLATE = "%%(year)d%%(month).2d%%(day).2d_%%(rev)s_%%(slug)s"


def migrations_dir() -> Path:
    """The folder of the `migrations` package, wherever it is installed (a checkout, an editable
    install or a wheel): Alembic's script location."""
    spec = importlib.util.find_spec("migrations")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in map(Path, folders):
        if (folder / "env.py").is_file() and (folder / "versions").is_dir():
            return folder
    raise FileNotFoundError(f"the Alembic migrations (package 'migrations' with env.py and versions/) are not "
                            f"installed; found {folders or 'nothing'}")


def alembic_config(database_url: str | None = None) -> Config:
    """An Alembic Config built from the installed migrations: no alembic.ini, no dependence on
    the current directory."""
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("file_template", _FILE_TEMPLATE)
    if database_url:
        # ConfigParser interpolation: a literal % in a password must be doubled.
        cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    cfg.attributes["configure_logging"] = False
    return cfg


def upgrade_database(database_url: str, revision: str = "head") -> None:
    """Bring the database at `database_url` to `revision` (creates every table on a new database)."""
    if database_url.startswith("sqlite:///"):
        Path(database_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(database_url), revision)


def _session(settings: Settings):  # noqa: ANN202
    from service.db.session import session_scope

    return session_scope(settings.resolved_database_url)


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = get_settings()
    upgrade_database(settings.resolved_database_url, args.revision)
    print(f"database at revision {args.revision}", file=sys.stderr)
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    from service.auth import create_api_key, create_owner, find_owner
    from service.db.models import Owner

    with _session(get_settings()) as session:
        if args.owner:
            owner = find_owner(session, args.owner)
            if owner is None:
                print(f"error: no owner with id or name {args.owner!r}", file=sys.stderr)
                return 1
        else:
            if session.scalar(select(Owner).where(Owner.name == args.name)) is not None:
                print(f"error: owner {args.name!r} exists; use --owner {args.name} for another key", file=sys.stderr)
                return 1
            owner = create_owner(session, args.name)
        key, secret = create_api_key(session, owner, name=args.key_name)
        print(f"owner {owner.id} ({owner.name}), key {key.id}; the key is shown once:", file=sys.stderr)
    print(secret)  # last line of stdout, for scripts: KEY=$(adaptinf keys create --name me | tail -1)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from service.db.models import ApiKey

    with _session(get_settings()) as session:
        keys = session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)).all()
        print(f"{'KEY_ID':<30} {'PREFIX':<12} {'OWNER':<24} {'CREATED':<26} REVOKED")
        for k in keys:
            revoked = k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "-"
            created = k.created_at.isoformat(timespec="seconds")
            print(f"{k.id:<30} ak_{k.prefix:<9} {k.owner.name:<24} {created:<26} {revoked}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from service.auth import revoke_api_key

    with _session(get_settings()) as session:
        key = revoke_api_key(session, args.key_id)
        if key is None:
            print(f"error: no key {args.key_id!r}", file=sys.stderr)
            return 1
        print(f"revoked {key.id} (ak_{key.prefix}...)")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from service.gc import collect

    if args.grace_hours < 0:
        print("error: --grace-hours must be >= 0", file=sys.stderr)
        return 2
    settings = get_settings()
    with _session(settings) as session:
        report = collect(session, settings.blob_store(), grace_seconds=args.grace_hours * 3600,
                         delete=args.delete)
    verb = "deleted" if args.delete else "would delete (dry run; pass --delete)"
    print(f"{report.scanned} blobs, {report.referenced} referenced; {verb}: {len(report.unreferenced)} "
          f"unreferenced blobs older than {args.grace_hours:g} h ({report.unreferenced_bytes / 2**20:.1f} MiB) "
          f"and {len(report.stale_tmp)} stale temp files")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("migrate", help="Upgrade the database schema (Alembic) to the latest revision.")
    p.add_argument("--revision", default="head", help="target revision (default: head)")
    p.set_defaults(func=cmd_migrate)

    keys = subparsers.add_parser("keys", help="Manage API keys.")
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    c = ksub.add_parser("create", help="Create an API key; prints it as the last line of stdout.")
    who = c.add_mutually_exclusive_group(required=True)
    who.add_argument("--name", help="create a new owner with this name")
    who.add_argument("--owner", help="id or name of an existing owner")
    c.add_argument("--key-name", default="default", help="label of the key (default: default)")
    c.set_defaults(func=cmd_keys_create)
    ksub.add_parser("list", help="List keys (prefix, owner, created, revoked); never the secret.").set_defaults(
        func=cmd_keys_list
    )
    r = ksub.add_parser("revoke", help="Revoke a key by id.")
    r.add_argument("key_id")
    r.set_defaults(func=cmd_keys_revoke)

    g = subparsers.add_parser("gc", help="Remove blobs nothing refers to (dry run unless --delete).")
    g.add_argument("--grace-hours", type=float, default=24.0,
                   help="never touch blobs or temp files younger than this (default: 24)")
    g.add_argument("--delete", action="store_true", help="delete; without it, only report")
    g.set_defaults(func=cmd_gc)
