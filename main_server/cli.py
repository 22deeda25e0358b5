"""The main server's account commands: ``flask --app main_server create-token`` and ``create-user``."""
import sys

import click

from shared.core.errors import UserError
from shared.web.account_rules import ROLES, check_token_days


def init_app(app):
    """Add the commands ``create-token`` and ``create-user`` to ``app``'s command line."""
    role_option = click.option("--role", type=click.Choice(ROLES), default="member", show_default=True)

    @app.cli.command("create-token")
    @click.argument("name")
    @role_option
    @click.option("--days", default=app.config["TOKEN_DAYS"], show_default=True,
                  help=f"how long it lasts (1 to TOKEN_MAX_DAYS, {app.config['TOKEN_MAX_DAYS']})")
    def create_token(name, role, days):
        """Make an API token NAME with ROLE lasting DAYS; prints the token alone on the last line."""
        store = app.extensions["accounts"]
        try:
            days = check_token_days(days, app.config["TOKEN_MAX_DAYS"])
            token, row = store.create_token(name, role, created_by="command line", days=days)
        except UserError as exc:
            raise click.ClickException(exc.message)
        store.record("command line", "token.create", {"name": row["name"], "role": role, "token_id": row["id"],
                                                      "expires_at": row["expires_at"]}, via="cli", server="main")
        click.echo(f"Token {row['id']} '{row['name']}' ({role}, until {row['expires_at']}); it is shown only now:",
                   err=True)
        click.echo(token)

    @app.cli.command("create-user")
    @click.argument("name")
    @role_option
    def create_user(name, role):
        """Make a user NAME with ROLE; the password is read from stdin (one line)."""
        if sys.stdin.isatty():
            password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        else:
            password = sys.stdin.readline().rstrip("\r\n")
        store = app.extensions["accounts"]
        try:
            row = store.create_user(name, password, role, created_by="command line")
        except UserError as exc:
            raise click.ClickException(exc.message)
        store.record("command line", "user.create", {"name": row["name"], "role": role}, via="cli", server="main")
        click.echo(f"User '{row['name']}' ({role}) created.")
