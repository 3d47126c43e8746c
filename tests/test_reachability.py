"""The preflight TCP check that lets a job with a dead endpoint fail at once."""

import socket

from culturealign.reachability import unreachable_reason


def test_open_port_is_reachable():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert unreachable_reason(f"http://127.0.0.1:{listener.getsockname()[1]}/v1") is None


def test_closed_port_and_unknown_host_say_why():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert unreachable_reason(f"http://127.0.0.1:{port}/v1").startswith(f"cannot connect to 127.0.0.1:{port}")
    assert unreachable_reason("http://no-such-host.invalid/v1") == "cannot resolve host 'no-such-host.invalid'"


def test_proxied_urls_are_left_to_the_proxy(monkeypatch):
    monkeypatch.setenv("https_proxy", "http://proxy.internal:3128")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert unreachable_reason("https://no-such-host.invalid/v1") is None
