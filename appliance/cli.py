"""The `notebook-appliance` command: serve, token, roster, generate-config, check-config."""

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path

from appliance import __version__, config
from appliance.errors import ApplianceError, ConfigError, NotFound

DEFAULT_CONFIG = Path("/etc/notebook-appliance/appliance.toml")
log = logging.getLogger("appliance")


def parser() -> argparse.ArgumentParser:
    """The argument parser, one sub-command per verb."""
    p = argparse.ArgumentParser(prog="notebook-appliance",
                                description="Multi-user Jupyter notebook service.")
    p.add_argument("--version", action="version", version=__version__)
    p.add_argument("--config", type=Path, default=None,
                   help=f"configuration file (default {DEFAULT_CONFIG})")
    sub = p.add_subparsers(dest="verb", required=True)
    sub.add_parser("serve", help="run the hub")
    tok = sub.add_parser("token", help="print a new API token for USER; list or revoke tokens",
                         usage="notebook-appliance token USER [--note TEXT] [--expires-in "
                               "DURATION] [--scope SCOPE ...] | --list USER | --revoke ID")
    tok.add_argument("user", nargs="?")
    tok.add_argument("--note", default="created by notebook-appliance token")
    tok.add_argument("--expires-in", type=duration, metavar="DURATION",
                     help='e.g. "30d" or "8h" (default: never)')
    tok.add_argument("--scope", action="append", dest="scopes", metavar="SCOPE",
                     help='a JupyterHub scope the token is limited to, e.g. "list:users" '
                          "(repeat it; each must be USER's; default: all of USER's access)")
    tok.add_argument("--list", metavar="USER", dest="list_user",
                     help="list USER's tokens (id, note, created, last used, expires)")
    tok.add_argument("--revoke", metavar="ID", type=int, help="delete the token with this id")
    roster = sub.add_parser("roster", help="import a class list as OS accounts; export it",
                            usage="notebook-appliance roster import FILE.csv | export")
    roster.add_argument("action", choices=("import", "export"))
    roster.add_argument("file", nargs="?", type=Path,
                        help="CSV: username, full name, groups (blank- or ;-separated)")
    sub.add_parser("generate-config", help="print every key with its default and help")
    sub.add_parser("account-helper", help="(started by systemd) change a password or make "
                   "accounts for the hub, on the connection passed as standard input")
    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("path", nargs="?", type=Path)
    return p


def duration(value: str) -> float:
    """argparse type: a duration as the config file writes it ("30d", "1h30m")."""
    try:
        return config.parse_duration(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def load_config(path: Path | None) -> config.Config:
    """The explicit file, else the default file, else built-in defaults (said in the log)."""
    if path is not None:
        return config.load(path)
    if DEFAULT_CONFIG.exists():
        return config.load(DEFAULT_CONFIG)
    log.warning("no %s; using built-in defaults (see notebook-appliance generate-config)",
                DEFAULT_CONFIG)
    return config.defaults()


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return VERBS[args.verb](args)
    except ConfigError as e:
        print(f"notebook-appliance: {e}", file=sys.stderr)
        return 2
    except ApplianceError as e:
        print(f"notebook-appliance: {e}", file=sys.stderr)
        return 1


def cmd_serve(args) -> int:
    """Run the hub until SIGTERM."""
    from appliance.server import serve

    cfg = load_config(args.config)
    asyncio.run(serve(cfg))
    return 0


def cmd_token(args) -> int:
    """Print a new API token for a user allowed by the policy (like `jupyterhub token`), or
    list a user's tokens, or revoke one by id."""
    from appliance.store import open_sync

    cfg = load_config(args.config)
    if sum(x is not None for x in (args.user, args.list_user, args.revoke)) != 1:
        raise ConfigError("token: give USER, --list USER or --revoke ID (one of them)")
    store = open_sync(cfg.hub.state_dir / "appliance.sqlite")
    try:
        if args.list_user is not None:
            print_tokens(store.list_tokens_sync(args.list_user))
        elif args.revoke is not None:
            token = store.revoke_token_sync(args.revoke)
            if token is None:
                raise NotFound(f"no token with id {args.revoke}")
            owner = token.user if token.service is None else f"service {token.service}"
            print(f"revoked token {token.id} of {owner} ({token.note})")
        else:
            account = allowed_account(cfg, args.user)
            scopes = token_scopes(cfg, store, account, args.scopes or ["inherit"])
            print(store.create_token_sync(account.name, args.note, args.expires_in, scopes))
    finally:
        store._close_sync()
    return 0


def allowed_account(cfg: config.Config, name: str):
    """The account if the login policy allows it; NotFound naming why otherwise."""
    from appliance.auth import Authenticator

    auth = Authenticator(cfg.auth)
    try:
        return auth.account_sync(name)
    finally:
        auth.close()


def token_scopes(cfg: config.Config, store, account, wanted: list[str]) -> tuple[str, ...]:
    """The scopes asked for a new token, if they exist and the account holds them all (the
    API's rule and JupyterHub's words); ConfigError otherwise."""
    from appliance import scopes
    from appliance.groups import unix_members
    from appliance.roles import Roles

    try:
        scopes.check_exist(wanted)
    except scopes.ScopeNotFound as e:
        raise ConfigError(f"token: {' '.join(str(e).split())}") from None
    members = {g.name: g.users for g in store.groups_sync()}
    members.update(unix_members(cfg.auth.sync_groups))
    roles = Roles(cfg, lambda user: frozenset(g for g, users in members.items()
                                              if user in users))
    held = roles.scopes_of(account.name, roles.of_user(account.name, account.admin))
    excess = roles.excess(account.name, held, wanted)
    if excess:
        raise ConfigError(f"token: Not assigning requested scopes {','.join(sorted(excess))} "
                          f"not held by User {account.name}")
    return tuple(dict.fromkeys(wanted))


def cmd_roster(args) -> int:
    """Import a roster (print the new accounts' initial passwords once) or export one."""
    from appliance import roster

    cfg = load_config(args.config)
    if args.action == "export":
        from appliance.auth import Authenticator

        auth = Authenticator(cfg.auth)
        try:
            sys.stdout.write(roster.roster_csv(roster.export_sync(auth.account_sync)))
        finally:
            auth.close()
        return 0
    if args.file is None:
        raise ConfigError("roster import: give the CSV file (username, full name, groups)")
    return import_roster(args.file.read_text(encoding="utf-8-sig"))


def import_roster(text: str) -> int:
    """Create the missing accounts of a roster; their passwords as CSV on stdout, the rest
    said on stderr."""
    from appliance import roster

    missing, existing = roster.plan_sync(text)
    for name in existing:
        print(f"{name}: the account exists already; left as it is", file=sys.stderr)
    try:
        made = asyncio.run(roster.create_all(missing))
    except roster.RosterError as e:
        if e.created:  # their passwords are shown now or never
            sys.stdout.write(roster.passwords_csv(e.created))
        raise
    if made:
        sys.stdout.write(roster.passwords_csv(made))
    print(f"{len(made)} account(s) created; each must choose a new password at first login. "
          "The passwords above are not stored anywhere.", file=sys.stderr)
    return 0


def print_tokens(tokens) -> None:
    """A table of tokens, one per line, times in UTC."""
    def when(t: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.gmtime(t)) if t else "-"

    print(f"{'ID':>5}  {'CREATED':16}  {'LAST USED':16}  {'EXPIRES':16}  NOTE")
    for t in tokens:
        print(f"{t.id:>5}  {when(t.created):16}  {when(t.last_used):16}  "
              f"{when(t.expires):16}  {t.note}")


def cmd_account_helper(args) -> int:
    """Serve one account request (notebook-appliance-accounts@.service, Accept=yes)."""
    from appliance import accountd

    return accountd.main()


def cmd_generate_config(args) -> int:
    """Print the default configuration, every key explained."""
    sys.stdout.write(config.generate())
    return 0


def cmd_check_config(args) -> int:
    """Validate a configuration file (and its TLS files); exit 2 naming file and key on error."""
    from appliance.tls import server_context

    path = args.path or args.config or DEFAULT_CONFIG
    server_context(config.load(path))  # the certificate and key must load too
    print(f"{path}: ok")
    return 0


VERBS = {"serve": cmd_serve, "token": cmd_token, "roster": cmd_roster,
         "generate-config": cmd_generate_config, "account-helper": cmd_account_helper,
         "check-config": cmd_check_config}
