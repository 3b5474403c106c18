"""The demo page: served on / and /demo with a strict CSP and revalidation headers, off with --no-demo."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from proxy import demo
from proxy.cli import _parser, build_config
from proxy.config import Config, ConfigError, Limits, from_env
from tests.server.test_server import http_get, proxy

STATIC = Path(demo.__file__).parent / "static"


request = http_get


def config(**values: object) -> Config:
    return Config(port=0, limits=Limits(ping_interval_s=0), **values)  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ["/", "/demo", "/demo/"])
async def test_the_page_is_served_as_html_with_a_strict_csp(path: str) -> None:
    async with proxy(config()) as (_server, port):
        status, headers, body = await request(port, path)
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert body == (STATIC / "demo.html").read_bytes()
    assert int(headers["content-length"]) == len(body)
    csp = dict(part.strip().split(" ", 1) for part in headers["content-security-policy"].split(";"))
    assert csp["default-src"] == "'none'"
    for directive in ("script-src", "style-src", "connect-src"):
        assert csp[directive] == "'self'"  # nothing inline, nothing from another origin
    assert csp["frame-ancestors"] == "'none'"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-cache"
    assert re.fullmatch(r'"[0-9a-f]{32}"', headers["etag"])


@pytest.mark.parametrize(
    ("path", "name", "content_type"),
    [
        ("/demo/demo.js", "demo.js", "text/javascript; charset=utf-8"),
        ("/demo/mic-worklet.js", "mic-worklet.js", "text/javascript; charset=utf-8"),
        ("/demo/demo.css", "demo.css", "text/css; charset=utf-8"),
        ("/demo/icon.svg", "icon.svg", "image/svg+xml"),
    ],
)
async def test_the_script_the_worklet_and_the_styles_are_served(path: str, name: str, content_type: str) -> None:
    async with proxy(config()) as (_server, port):
        status, headers, body = await request(port, path)
    assert (status, headers["content-type"]) == (200, content_type)
    assert body == (STATIC / name).read_bytes()
    assert "content-security-policy" in headers


async def test_a_matching_etag_is_answered_with_304_and_no_body() -> None:
    async with proxy(config()) as (_server, port):
        _status, headers, _body = await request(port, "/demo")
        etag = headers["etag"]
        status, headers, body = await request(port, "/demo", extra=f'If-None-Match: W/{etag}, "other"\r\n')
        assert (status, body, headers["etag"]) == (304, b"", etag)
        status, _headers, body = await request(port, "/demo", extra='If-None-Match: "stale"\r\n')
        assert status == 200
        assert body


async def test_only_get_is_allowed_on_the_page() -> None:
    async with proxy(config()) as (_server, port):
        status, headers, _body = await request(port, "/demo", method="POST")
    assert (status, headers["allow"]) == (405, "GET")


@pytest.mark.parametrize(
    "path", ["/", "/demo", "/demo/demo.js", "/demo/mic-worklet.js", "/demo/demo.css", "/demo/icon.svg"]
)
async def test_disabled_the_demo_is_404(path: str) -> None:
    async with proxy(config(demo=False)) as (_server, port):
        status, _headers, body = await request(port, path)
        health, _headers, _body = await request(port, "/health")
    assert (status, body, health) == (404, b"Not Found", 200)


@pytest.mark.parametrize("path", ["/demo/../pyproject.toml", "/demo/demo.html", "/demo/demo.js/", "/static/demo.js"])
async def test_only_the_pages_files_are_served(path: str) -> None:
    async with proxy(config()) as (_server, port):
        status, _headers, _body = await request(port, path)
    assert status == 404


def test_the_page_uses_no_inline_code_and_nothing_from_another_origin() -> None:
    html = (STATIC / "demo.html").read_text()
    for inline in ("<script>", "<style", " onclick="):
        assert inline not in html
    for name in ("demo.html", "demo.js", "mic-worklet.js", "demo.css"):
        text = (STATIC / name).read_text()
        assert not re.search(r"(src|href)=\"(https?:)?//", text), name
        assert "import " not in text.replace("import.meta", ""), name  # no modules pulled in from anywhere


@pytest.mark.parametrize(
    ("argv", "env", "served"),
    [
        ([], {}, True),
        (["--no-demo"], {}, False),
        ([], {"PROXY_DEMO": "0"}, False),
        ([], {"PROXY_DEMO": "off"}, False),
        ([], {"PROXY_DEMO": "1"}, True),
        (["--no-demo"], {"PROXY_DEMO": "1"}, False),
    ],
)
def test_the_switch_by_flag_and_variable(argv: list[str], env: dict[str, str], served: bool) -> None:
    assert build_config(_parser().parse_args(argv), env).demo is served


def test_a_bad_variable_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="PROXY_DEMO"):
        from_env({"PROXY_DEMO": "maybe"})


def test_every_static_file_is_package_data() -> None:
    """The wheel carries the page: every file in proxy/static matches a package-data pattern."""
    import fnmatch
    import tomllib

    pyproject = tomllib.loads((STATIC.parents[1] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["proxy"]
    files = sorted(path.relative_to(STATIC.parent).as_posix() for path in STATIC.iterdir())
    assert files
    assert [f for f in files if not any(fnmatch.fnmatch(f, p) for p in patterns)] == []
