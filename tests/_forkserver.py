"""A fork server for the docs tests: ``poolwise`` commands without the interpreter's start-up.

Each ``poolwise`` line of a docs page would start Python and import torch, numpy, timm and
poolwise again (3-6 s on 2 cores; the pages hold about forty). Instead, one server process
imports them once and, for each command, forks a child that runs ``poolwise.cli.main`` with
the command's arguments, working directory, environment and standard streams, so the command
runs in a fresh copy of an interpreter that has run nothing yet. A ``poolwise`` shim first on
the test's ``PATH`` connects to the server, hands over its streams and exits with the command's
status. What the shim cannot give a command (an environment variable read when torch is
imported) the pages do not use; the console script itself is tested elsewhere
(tests/test_cli.py, tests/test_packaging.py).

    python tests/_forkserver.py SOCKET   # serves until killed
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys

SHIM = """#!{python} -IS
import json, os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect({socket_path!r})
message = json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}})
socket.send_fds(s, [message.encode() + b"\\n"], [0, 1, 2])
reply = b""
while not reply.endswith(b"\\n"):
    chunk = s.recv(64)
    if not chunk:
        sys.exit(1)
    reply += chunk
sys.exit(int(reply))
"""


def write_shim(bin_dir: str, socket_path: str) -> str:
    """Writes the ``poolwise`` shim into ``bin_dir``; returns its path."""
    path = os.path.join(bin_dir, "poolwise")
    with open(path, "w") as f:
        f.write(SHIM.format(python=sys.executable, socket_path=socket_path))
    os.chmod(path, 0o755)
    return path


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds = b"", []
    while not data.endswith(b"\n"):
        chunk, new_fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
        if not chunk:
            raise ConnectionError("the shim went away")
        data, fds = data + chunk, fds + list(new_fds)
    return json.loads(data), fds


def _child(conn: socket.socket, request: dict, fds: list[int]) -> None:
    """Runs one command in this forked process, sends its status to the shim and exits."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the command waits for its own children
    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", closefd=False, buffering=1)
        sys.stderr = open(2, "w", closefd=False, buffering=1)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["poolwise", *request["argv"]]
        from poolwise.cli import main

        try:
            code = main(request["argv"])
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        try:
            conn.sendall(f"{(code or 0) % 256}\n".encode())
        finally:
            os._exit(code or 0)


def serve(socket_path: str) -> None:
    # what the commands import, once: torch, the CLI of both halves, timm, matplotlib
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot  # noqa: F401
    import timm  # noqa: F401
    import torch  # noqa: F401

    import poolwise.pain.commands
    import poolwise.vision.commands  # noqa: F401
    from poolwise.cli import build_parser

    build_parser()
    server = socket.socket(socket.AF_UNIX)
    server.bind(socket_path)
    server.listen(16)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # finished commands are reaped by the kernel
    print("ready", flush=True)
    while True:  # one thread: every fork copies a process that holds no other thread's locks
        conn, _ = server.accept()
        with conn:
            request, fds = _receive(conn)
            if os.fork() == 0:
                _child(conn, request, fds)
            for fd in fds:
                os.close(fd)


if __name__ == "__main__":
    serve(sys.argv[1])
