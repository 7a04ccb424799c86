"""The command line: the `lock-monitor` group and its entry point; one module per command group."""

from __future__ import annotations

import sys

import click
from click.exceptions import NoArgsIsHelpError

from lock_monitor import __version__
from lock_monitor.cli.backup import backup, restore
from lock_monitor.cli.demo import demo
from lock_monitor.cli.locks import locks
from lock_monitor.cli.run import run
from lock_monitor.errors import OperatorError
from lock_monitor.views import printable


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="lock-monitor")
def cli() -> None:
    """Prometheus exporter for distributed locks kept in Redis."""


for command in (run, locks, backup, restore, demo):
    cli.add_command(command)


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
