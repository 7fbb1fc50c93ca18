"""The suite does not need the daemon's default ports: `make pytest` runs it while another
process holds them (tests/hold_ports.py), and this test checks that they were held."""

from __future__ import annotations

import os
import socket

import pytest


def test_the_default_ports_are_taken_while_the_suite_runs() -> None:
    """Under tests/hold_ports.py each default port is taken, so a test binding one would fail."""
    ports = os.environ.get("TESTS_HELD_PORTS")
    if not ports:
        pytest.skip("not run under tests/hold_ports.py (`make pytest` runs it so)")
    for port in (int(p) for p in ports.split(",")):
        with socket.socket() as s, pytest.raises(OSError, match="in use"):
            s.bind(("127.0.0.1", port))
