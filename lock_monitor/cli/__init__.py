"""The command line: the `lock-monitor` group and its entry point; one module per command group.

Each command's module is imported only when that command runs (or help lists them all): a
one-shot `lock-monitor locks` then starts without the daemon, its web server, the keyspace
events or the backup code.
"""

from __future__ import annotations

import importlib
import sys

import click
from click.exceptions import NoArgsIsHelpError

from lock_monitor import __version__
from lock_monitor.errors import OperatorError
from lock_monitor.views import printable

# Each command: the module that defines it, and its name there (click's LazyGroup pattern).
COMMANDS = {
    "run": "lock_monitor.cli.run:run",
    "locks": "lock_monitor.cli.locks:locks",
    "backup": "lock_monitor.cli.backup:backup",
    "restore": "lock_monitor.cli.backup:restore",
    "demo": "lock_monitor.cli.demo:demo",
}


class LazyGroup(click.Group):
    """A group whose commands are imported when they are asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, name = COMMANDS[cmd_name].split(":")
        command = getattr(importlib.import_module(module), name)
        assert isinstance(command, click.Command), COMMANDS[cmd_name]
        return command


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="lock-monitor")
def cli() -> None:
    """Prometheus exporter for distributed locks kept in Redis."""


def main() -> None:
    """Entry point: every error is one line on stderr, never a traceback."""
    try:
        code = cli.main(prog_name="lock-monitor", standalone_mode=False)
    except NoArgsIsHelpError as exc:  # `lock-monitor` alone asks what there is: plain help
        click.echo(exc.ctx.get_help() if exc.ctx else exc.format_message())
        sys.exit(0)
    except click.ClickException as exc:
        click.echo(f"lock-monitor: error: {printable(exc.format_message())}", err=True)
        sys.exit(exc.exit_code)
    except OperatorError as exc:
        click.echo(f"lock-monitor: error: {printable(str(exc))}", err=True)
        sys.exit(1)
    except click.Abort:
        click.echo("lock-monitor: aborted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
