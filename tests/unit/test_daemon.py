"""The daemon's start-up errors: each names the option that fixes it."""

import errno
import socket

import pytest

from lock_monitor.config import ServerSettings
from lock_monitor.daemon import listen_error


@pytest.mark.parametrize("code", [errno.EADDRINUSE, errno.EACCES])
def test_a_port_that_cannot_be_had_points_at_port(code: int) -> None:
    error = listen_error(ServerSettings("0.0.0.0", 9150), OSError(code, "Address already in use"))
    assert str(error) == (
        "cannot listen on 0.0.0.0:9150: Address already in use; "
        "choose another port with --port or LOCK_MONITOR_PORT"
    )


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address"),
        socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
    ],
)
def test_an_address_that_cannot_be_had_points_at_listen_address(exc: OSError) -> None:
    error = listen_error(ServerSettings("::2", 9150), exc)
    assert str(error).startswith(f"cannot listen on [::2]:9150: {exc.strerror}; ")
    assert str(error).endswith("check --listen-address or LOCK_MONITOR_LISTEN_ADDRESS")
