"""The vendor's endpoint as the gateway meets it at the socket: however it dribbles its answer, a try is over in
TIMEOUT seconds (requests' own timeouts bound each wait for a byte, not the whole answer)."""

import socket
import threading
import time

import pytest

from paygate.gateways import vendor_webhooks
from tests.helpers.vendor import SECRET


def dribbling_endpoint(first: bytes, then: bytes, every: float, times: int):
    """A socket that answers `first`, then `then` every `every` seconds, `times` times; returns its URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve():
        conn, _ = listener.accept()
        conn.recv(65536)
        try:
            conn.sendall(first)
            for _ in range(times):
                time.sleep(every)
                conn.sendall(then)
        except OSError:
            pass  # the sender hung up: as it should
        conn.close()
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}/events"


@pytest.mark.parametrize(
    "first, then",
    [
        (b"HTTP/1.1 200 OK\r\n", b"X"),  # its headers, a byte at a time
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", b"o"),  # its body, a byte at a time
        (b"", b""),  # nothing at all, the connection held open
    ],
)
def test_an_endpoint_that_dribbles_is_given_up_at_the_timeout(monkeypatch, first, then):
    monkeypatch.setattr(vendor_webhooks, "TIMEOUT", 1.5)
    url = dribbling_endpoint(first, then, every=0.3, times=40)
    started = time.monotonic()
    answer = vendor_webhooks.send(url, SECRET, "msg_dribbled", "{}")
    took = time.monotonic() - started
    assert answer == vendor_webhooks.Answer(None, "no answer within 1.5 s")
    assert 1.4 <= took < 3, took


def test_a_quick_answer_after_a_slow_one_is_not_cut_by_the_old_timer(monkeypatch):
    """A try's timer dies with its try: the pooled connection it leaves serves the next try in full."""
    monkeypatch.setattr(vendor_webhooks, "TIMEOUT", 1.0)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve():  # one connection, kept alive: a shut socket would make the second try open another, never accepted
        conn, _ = listener.accept()
        for _ in range(2):
            request = b""
            while not request.endswith(b"\r\n\r\n{}"):  # its headers and its body may come apart
                request += conn.recv(65536)
            time.sleep(0.2)
            conn.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        conn.close()
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/events"
    assert vendor_webhooks.send(url, SECRET, "msg_one", "{}").ok
    time.sleep(1.3)  # past the first try's TIMEOUT, its connection idle in the pool
    assert vendor_webhooks.send(url, SECRET, "msg_two", "{}").ok
