"""The test harness itself: ports are the OS's choice and held, Ctrl-C reaches a test's processes.

``make test`` runs the files on several xdist workers at once; these tests hold
the promises that keep them apart and keep a Ctrl-C test independent of how the
suite was started (tests/conftest.py).
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import holding_closed_port, sigint_as_in_a_terminal
from tests.pod.s3server import MotoServer
from tests.registry import Registry


def _listening_sockets(port: int) -> set[str]:
    """Inodes of the sockets listening on 127.0.0.1:``port`` (Linux's /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        address, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and address == f"0100007F:{port:04X}":  # LISTEN on 127.0.0.1
            found.add(inode)
    return found


def _sockets_of(pid: int) -> set[str]:
    """Inodes of the sockets process ``pid`` has open."""
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            found.add(target[len("socket:["):-1])
    return found


def _cannot_bind(port: int) -> int:
    """The errno of binding ``port`` as a server would (SO_REUSEADDR, as werkzeug and http.server set)."""
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            other.bind(("127.0.0.1", port))
        except OSError as error:
            return error.errno
    return 0


def test_the_s3_server_listens_on_the_port_its_endpoint_names(tmp_path):
    server = MotoServer(tmp_path / "moto_server.log").start()
    try:
        port = int(server.endpoint.rsplit(":", 1)[1])
        assert _listening_sockets(port) & _sockets_of(server.process.pid)  # its own socket, bound before use
        assert _cannot_bind(port) == errno.EADDRINUSE
    finally:
        server.stop()


def test_the_registry_listens_on_the_port_its_host_names():
    registry = Registry().start()
    try:
        port = int(registry.host.rsplit(":", 1)[1])
        assert _listening_sockets(port) & _sockets_of(os.getpid())
        assert _cannot_bind(port) == errno.EADDRINUSE
    finally:
        registry.stop()


def test_a_closed_port_refuses_connections_and_no_server_can_take_it_while_held():
    with holding_closed_port() as port:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=10).close()
        assert _cannot_bind(port) == errno.EADDRINUSE
        assert not _listening_sockets(port)


#: What a child makes of SIGINT: Python's handler, and whether bash can trap it.
_PYTHON_PROBE = "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
_BASH_PROBE = 'trap "echo trapped" INT; kill -INT $$; echo done'


def _children_see() -> tuple[str, str]:
    python = subprocess.run([sys.executable, "-c", _PYTHON_PROBE], capture_output=True, text=True, check=True)
    bash = subprocess.run(["bash", "-c", _BASH_PROBE], capture_output=True, text=True, check=True)
    return python.stdout.strip(), " ".join(bash.stdout.split())


def test_a_ctrl_c_test_runs_as_in_a_terminal_even_when_the_suite_was_started_in_the_background():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # what `make test &` in a script hands pytest
    try:
        # Inherited across exec: no KeyboardInterrupt in Python, no trap in bash. Every Ctrl-C test would fail.
        assert _children_see() == ("False", "done")
        with sigint_as_in_a_terminal():
            assert _children_see() == ("True", "trapped done")
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # put back as it was
    finally:
        signal.signal(signal.SIGINT, previous)
