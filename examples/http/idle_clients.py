#!/usr/bin/env python3
"""examples/http/idle_clients.py PORT COUNT — opens COUNT keep-alive connections to perfloc-http, makes one
request on each (GET /items?count=0) and reads its answer, then keeps them all open and idle. Prints `ready`
once every connection has had its answer, and closes them all when its standard input ends (the demo reads
the server's resident memory in between)."""
import socket
import sys


def main() -> int:
    port, count = int(sys.argv[1]), int(sys.argv[2])
    request = b"GET /items?count=0 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    connections = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(request)
        answer = b""
        while not answer.endswith(b"[]"):  # the body of count=0, after the header
            data = s.recv(4096)
            if not data:
                print(f"connection {len(connections)} closed by the server", file=sys.stderr)
                return 1
            answer += data
        connections.append(s)
    print("ready", flush=True)
    sys.stdin.read()
    for s in connections:
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
