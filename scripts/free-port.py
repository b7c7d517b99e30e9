"""Prints a free loopback TCP port: the bench scripts' throwaway Redis servers
listen there, so that nothing depends on a Redis already running."""

import socket

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
