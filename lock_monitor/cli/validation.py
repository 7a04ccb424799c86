"""What an option value must look like: click types and callbacks over small pure parsers.

The parsers raise ValueError with the operator's words; the click wrappers only decide whom to
blame (an option, or an environment variable the user set for the backend).
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
from click.core import ParameterSource

from lock_monitor.config import (
    DEFAULT_LISTEN_ADDRESS,
    DEFAULT_REDIS_HOST,
    DEFAULT_REDIS_PORT,
    REDIS_SCHEMES,
)

LISTEN_FORMS = "HOST, HOST:PORT, [IPv6] or [IPv6]:PORT"


def checked_redis_url(value: str) -> str:
    """`value` if redis-py will read it as we mean it; else ValueError naming the problem only,
    never any part of the URL: a password with a `/`, `?` or `#` in it is split across parts."""
    problem = url_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def url_problem(url: str) -> str | None:
    """What is wrong with a Redis URL, in words that quote none of it; None if nothing."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        if url.lower().startswith(("redis:", "rediss:")):
            return "write two slashes after the scheme: redis://HOST[:PORT][/DB]"
        return "not a URL: expected redis://HOST[:PORT][/DB], or rediss://... for TLS"
    if scheme not in REDIS_SCHEMES:
        if scheme.lower() in REDIS_SCHEMES:
            return "write the scheme in lower case: redis:// or rediss://"
        return "the scheme must be redis:// or rediss:// (TLS)"
    authority_end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    if "@" in rest[authority_end:]:
        return (
            "the user name or password holds a '/', '?' or '#': percent-encode it (%2F, %3F, "
            "%23), or pass the password in REDIS_PASSWORD or --redis-password-file"
        )
    try:
        parts = urlsplit(url)
    except ValueError:
        return (
            "the host cannot be read: an IPv6 address goes in brackets (redis://[::1]:6379/0), "
            "and a '[' or ']' in a password must be percent-encoded (%5B, %5D)"
        )
    if not parts.hostname:
        return "the URL names no host: redis://HOST[:PORT][/DB]"
    try:
        port_ok = parts.port != 0
    except ValueError:
        port_ok = False
    if not port_ok:
        return "a port is a number from 1 to 65535"
    database = parts.path.strip("/")
    if database and not database.isdigit():
        return "the database (the path) must be a number, such as /0"
    if parts.query or parts.fragment:
        # redis-py lets URL options override ours (ssl_cert_reqs=none, socket_timeout=600),
        # silently turning off TLS checks or timeouts: each has an option of its own here.
        return "options in the URL are not accepted; use the --redis-* options"
    return None


def redis_url_from_environment(environ: Mapping[str, str]) -> str:
    """The guide's backend convention, REDIS_HOST and REDIS_PORT, else the default Redis.

    A bad value is blamed on the variable that holds it: the user set that one, not --redis-url.
    """
    host = environ.get("REDIS_HOST") or DEFAULT_REDIS_HOST
    port = environ.get("REDIS_PORT") or str(DEFAULT_REDIS_PORT)
    if not port.isdigit() or not 0 < int(port) < 65536:
        # Kubernetes sets REDIS_PORT=tcp://IP:PORT in pods that see a Service named `redis`.
        link = "://" in port
        hint = " (a Kubernetes service link: set enableServiceLinks: false)" if link else ""
        raise ValueError(f"REDIS_PORT={port!r} is not a port number from 1 to 65535{hint}")
    in_url = f"[{host}]" if _is_ipv6(host) else host
    url = f"redis://{in_url}:{port}/0"
    try:
        parsed_host = urlsplit(checked_redis_url(url)).hostname
    except ValueError:
        parsed_host = None
    if parsed_host != host.lower() or any(char.isspace() for char in host):
        raise ValueError(f"REDIS_HOST={host!r} is not a host name or address")
    return url


def split_listen_address(value: str) -> tuple[str, int | None]:
    """(host, port or None) from HOST, HOST:PORT, [IPv6] or [IPv6]:PORT.

    HOST:PORT is the habit of other exporters' --web.listen-address; ":PORT" there means every
    interface, as the default address does here. A bare IPv6 address has no port.
    """
    text = value.strip()
    port: str | None = None
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed or not _is_ipv6(host) or (rest and not rest.startswith(":")):
            raise ValueError(f"{value!r} is not {LISTEN_FORMS}")
        port = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
        host = host or DEFAULT_LISTEN_ADDRESS
    elif ":" in text and not _is_ipv6(text):
        raise ValueError(f"{value!r} is not {LISTEN_FORMS}")
    else:
        host = text
    if not host or (port is not None and not (port.isdigit() and int(port) <= 65535)):
        raise ValueError(f"{value!r} is not {LISTEN_FORMS}")
    return host, None if port is None else int(port)


def _is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


# --- click types and callbacks ------------------------------------------------------------


def redis_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    """--redis-url as given; when neither it nor its variable is set, the backend's variables."""
    if value is None:
        try:
            return redis_url_from_environment(os.environ)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    try:
        checked_redis_url(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if urlsplit(value).password and from_command_line(ctx, param):
        raise click.BadParameter(
            "a password in the URL on the command line shows in `ps`: set the URL in "
            "LOCK_MONITOR_REDIS_URL instead, or the password in REDIS_PASSWORD or a file "
            "(--redis-password-file)"
        )
    return value


def not_empty(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value.strip():
        raise click.BadParameter("must not be empty")
    return value


def env_only(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Passwords on the command line show in `ps` and in pod specs: only the environment."""
    names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or [])
    if value is not None and from_command_line(ctx, param):
        raise click.BadParameter(f"pass the password in {names[-1]} or a password file, not here")
    return value


def from_command_line(ctx: click.Context, param: click.Parameter) -> bool:
    return ctx.get_parameter_source(param.name or "") is ParameterSource.COMMANDLINE


def read_secret(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A mounted Secret: the file's content, without the trailing newline editors add."""
    if value is None:
        return None
    try:
        secret = Path(value).read_text().rstrip("\r\n")
    except OSError as exc:
        raise click.BadParameter(f"cannot read {value}: {exc.strerror}") from None
    if not secret:
        raise click.BadParameter(f"{value} is empty")
    return secret


def web_config(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """The web configuration file, read and checked now: a mistake stops the start (exit 2)."""
    if value is None:
        return None
    from lock_monitor.webconfig import WebConfigError, load_web_config  # `run` alone needs it

    try:
        return load_web_config(value)
    except WebConfigError as exc:
        raise click.BadParameter(str(exc)) from None


class EveryOccurrence(click.Option):
    """An option click keeps the last of when it is given twice, each occurrence checked by
    its type and callback first: `--redis-url redis://u:PW@h --redis-url redis://h` must not
    slip a password past the command-line check (and leave it in `ps`)."""

    def add_to_parser(self, parser: Any, ctx: click.Context) -> None:
        parser.add_option(obj=self, opts=self.opts, dest=self.name, action="append", nargs=1)

    def process_value(self, ctx: click.Context, value: Any) -> Any:
        if not isinstance(value, list):  # from the environment, or not given
            return super().process_value(ctx, value)
        for one in value:  # the parser gives at least one
            checked = super().process_value(ctx, one)
        return checked


class FiniteFloat(click.FloatRange):
    """A float range that also refuses nan and inf, which FloatRange lets through (every
    comparison with nan is false): `--interval nan` would otherwise spin against Redis."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class HostPort(click.ParamType):  # type: ignore[type-arg]
    name = "HOST:PORT"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, int]:
        if isinstance(value, tuple):
            return value
        host, _, port = str(value).rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            self.fail(f"{value!r} is not HOST:PORT", param, ctx)
        return host.strip("[]"), int(port)


class ListenAddress(click.ParamType):  # type: ignore[type-arg]
    """An address to serve on, with or without a port (see `split_listen_address`)."""

    name = "HOST[:PORT]"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, int | None]:
        if isinstance(value, tuple):
            return value
        try:
            return split_listen_address(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


EXISTING_FILE = click.Path(exists=True, dir_okay=False)
