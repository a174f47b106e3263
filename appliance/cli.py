"""The `notebook-appliance` command: serve, token, generate-config, check-config."""

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from appliance import __version__, config
from appliance.errors import ApplianceError, ConfigError

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
    tok = sub.add_parser("token", help="print a new API token for USER")
    tok.add_argument("user")
    tok.add_argument("--note", default="created by notebook-appliance token")
    sub.add_parser("generate-config", help="print every key with its default and help")
    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("path", nargs="?", type=Path)
    return p


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
    """Print a new API token for a user allowed by the policy (like `jupyterhub token`)."""
    from appliance.auth import Authenticator
    from appliance.store import open_sync

    cfg = load_config(args.config)
    auth = Authenticator(cfg.auth)
    try:
        account = auth.account_sync(args.user)
    finally:
        auth.close()
    store = open_sync(cfg.hub.state_dir / "appliance.sqlite")
    try:
        print(store.create_token_sync(account.name, args.note))
    finally:
        store._close_sync()
    return 0


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


VERBS = {"serve": cmd_serve, "token": cmd_token, "generate-config": cmd_generate_config,
         "check-config": cmd_check_config}
