"""The proxy in front of gunicorn (deploy/nginx.conf, docker-compose.yml): it buffers whole requests within
timeouts, so slow clients hold nginx's connections and never gunicorn's threads; its body limits are the
application's; it sets the forwarded headers the service trusts from exactly one proxy; and gunicorn is
reachable only through it. `nginx -t` checks the file where nginx is installed (.ci/run installs it)."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from paygate.web import guard

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "deploy" / "nginx.conf"
REQUIRE_NGINX = os.environ.get("REQUIRE_NGINX") == "1"


def parse(text: str) -> list:
    """nginx's syntax, enough for this file: [(name, [args], children or None)]."""
    tokens = re.findall(r'"[^"]*"|[{};]|[^\s{};"]+', re.sub(r"#[^\n]*", "", text))
    stack, current, words = [], [], []
    for token in tokens:
        if token == ";":
            current.append((words[0], words[1:], None))
            words = []
        elif token == "{":
            block: list = []
            current.append((words[0], words[1:], block))
            stack.append(current)
            current, words = block, []
        elif token == "}":
            assert not words, f"unterminated directive {words}"
            current = stack.pop()
        else:
            words.append(token.strip('"'))
    assert not stack and not words, "unbalanced braces"
    return current


def directives(block: list, name: str) -> list:
    return [args for n, args, _ in block if n == name]


def one(block: list, name: str) -> list:
    found = directives(block, name)
    assert len(found) == 1, f"{name}: {found}"
    return found[0]


def blocks(block: list, name: str, *args) -> list:
    return [children for n, a, children in block if n == name and (not args or tuple(a) == args)]


def size(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kKmM]?)", value).groups()
    return int(number) * {"": 1, "k": 1024, "m": 1024 * 1024}[unit.lower()]


def seconds(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(s|m)?", value).groups()
    return int(number) * (60 if unit == "m" else 1)


@pytest.fixture(scope="module")
def http():
    return blocks(parse(CONF.read_text()), "http")[0]


@pytest.fixture(scope="module")
def https(http):
    servers = [s for s in blocks(http, "server") if any("ssl" in args for args in directives(s, "listen"))]
    assert len(servers) == 1
    return servers[0]


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_bodies_are_bounded_as_the_application_bounds_them(http, https):
    assert size(one(http, "client_max_body_size")[0]) == guard.MAX_BODY_BYTES
    webhook = blocks(https, "location", "=", guard.WEBHOOK_PATH)
    assert len(webhook) == 1
    assert size(one(webhook[0], "client_max_body_size")[0]) == guard.WEBHOOK_MAX_BYTES
    for location in blocks(https, "location"):  # no other location raises it
        for args in directives(location, "client_max_body_size"):
            assert size(args[0]) <= guard.WEBHOOK_MAX_BYTES


def test_slow_clients_are_buffered_and_timed_out_by_nginx(http, https):
    assert one(https, "proxy_request_buffering") == ["on"]  # whole bodies before gunicorn sees them
    assert one(https, "proxy_buffering") == ["on"]  # whole answers taken from gunicorn at once
    for name in ("client_header_timeout", "client_body_timeout", "send_timeout"):
        assert seconds(one(http, name)[0]) <= 15, name  # nginx's default is 60 s
    for location in blocks(https, "location"):
        assert "proxy_request_buffering" not in {n for n, _, _ in location}
        assert "proxy_buffering" not in {n for n, _, _ in location}


def test_requests_are_rate_limited_per_address(http, https):
    zones = {args[1].split("=")[1].split(":")[0]: args for args in directives(http, "limit_req_zone")}
    assert zones and all(args[0] == "$binary_remote_addr" for args in zones.values())
    assert one(http, "limit_req_status") == ["429"]
    for location in blocks(https, "location"):
        limits = directives(location, "limit_req")
        assert len(limits) == 1 and limits[0][0].split("=")[1] in zones


def test_the_forwarded_headers_are_the_proxys_own(https):
    headers = {args[0].lower(): args[1] for args in directives(https, "proxy_set_header")}
    assert headers["host"] == "$host"
    assert headers["x-forwarded-for"] == "$remote_addr"  # replaced, not appended: one trusted proxy
    assert headers["x-forwarded-proto"] == "$scheme"
    assert headers["x-forwarded-host"] == "$host"
    assert headers["x-request-id"] == "$request_id"
    # The id in every answer, nginx's own refusals included (the application keeps the proxy's id).
    assert one(https, "add_header") == ["X-Request-ID", "$request_id", "always"]
    assert one(https, "proxy_hide_header") == ["X-Request-ID"]
    for location in blocks(https, "location"):  # one there would drop all of the server's
        assert not directives(location, "proxy_set_header") and not directives(location, "add_header")
        assert one(location, "proxy_pass") == ["http://paygate"]
    assert any("ssl" in args for args in directives(https, "listen"))
    assert one(https, "ssl_certificate")[0].startswith("/etc/nginx/certs/")


def test_gunicorn_is_reachable_only_through_the_proxy(http, https, compose):
    upstream = blocks(http, "upstream", "paygate")[0]
    assert one(upstream, "server")[0] == "web:8000"
    web, proxy = compose["services"]["web"], compose["services"]["proxy"]
    assert "ports" not in web, "gunicorn must not be published: slow clients would hold its threads"
    assert "--bind" in web["command"] and "0.0.0.0:8000" in web["command"]
    assert any(str(v).endswith("deploy/nginx.conf:/etc/nginx/nginx.conf:ro") for v in proxy["volumes"])
    assert {str(p).split(":")[-1] for p in proxy["ports"]} == {"80", "443"}
    assert compose["x-settings"]["TRUSTED_PROXIES"] == "${TRUSTED_PROXIES:-1}"
    timeout = int(web["command"][web["command"].index("--timeout") + 1])
    assert seconds(one(https, "proxy_read_timeout")[0]) > timeout


def test_nginx_accepts_the_configuration():
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if nginx is None or shutil.which("openssl") is None:
        message = "nginx (and openssl) not installed: apt-get install nginx; .ci/run installs it"
        if REQUIRE_NGINX:
            pytest.fail(message + " (REQUIRE_NGINX=1)")
        pytest.skip(message)
    result = subprocess.run(
        [str(ROOT / "deploy" / "check-nginx")],
        env={**os.environ, "NGINX": nginx},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr + result.stdout
