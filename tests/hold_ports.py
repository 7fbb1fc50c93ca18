"""Run a command while the daemon's default loopback ports are taken: `make pytest` runs the
test suite under it, so the suite passing proves that no test needs 127.0.0.1:50051 (gRPC),
50052, 50053 (Admin) or 9464 (/metrics), as when `make run` serves in another shell.

    python tests/hold_ports.py [--ports 50051,9464] -- COMMAND [ARGS...]

A port something else already listens on is fine: it is just as taken. The held ports are
passed to the command as TESTS_HELD_PORTS (tests/test_isolation.py checks they are taken);
the exit code is the command's.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from collections.abc import Sequence

DEFAULT_PORTS = (50051, 50052, 50053, 9464)


def hold(ports: Sequence[int]) -> tuple[list[socket.socket], list[int]]:
    """Listening sockets on the ports that were free, and the ports that were not."""
    held: list[socket.socket] = []
    taken: list[int] = []
    for port in ports:
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            s.close()
            taken.append(port)
        else:
            held.append(s)
    return held, taken


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ports", default=",".join(map(str, DEFAULT_PORTS)))
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to run")
    ports = [int(p) for p in args.ports.split(",") if p.strip()]
    held, taken = hold(ports)
    mine = [s.getsockname()[1] for s in held]
    print(
        f"hold_ports: 127.0.0.1 ports {mine} held by this process"
        + (f", {taken} already taken by another" if taken else "")
        + f", while running: {' '.join(command)}",
        file=sys.stderr,
    )
    env = {**os.environ, "TESTS_HELD_PORTS": ",".join(map(str, ports))}
    try:
        return subprocess.run(command, env=env, check=False).returncode
    except KeyboardInterrupt:
        return 130
    finally:
        for s in held:
            s.close()


if __name__ == "__main__":
    raise SystemExit(main())
