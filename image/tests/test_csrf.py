"""csrf_guard: cross-origin state-changing requests to control endpoints are refused; proxies are not."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.server import _CSRF_EXEMPT_PREFIXES, CSRFGuard


@pytest.fixture
def client():
    # A bare app with the real middleware: one control endpoint and one proxy-style endpoint.
    app = FastAPI()
    app.add_middleware(CSRFGuard)

    @app.post("/api/models/x/launch")
    async def launch():
        return {"launched": True}

    @app.post("/v1/chat/completions")
    async def chat():
        return {"ok": True}

    @app.get("/api/status")
    async def status():
        return {"ok": True}

    return TestClient(app, base_url="http://spark-control.lan:9999")


def test_cross_origin_post_to_control_endpoint_is_refused(client):
    r = client.post("/api/models/x/launch", headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    assert "cross-origin" in r.json()["error"]["message"]


def test_cross_origin_via_referer_only_is_refused(client):
    r = client.post("/api/models/x/launch", headers={"Referer": "http://evil.example/page"})
    assert r.status_code == 403


def test_same_port_different_host_is_refused(client):
    r = client.post("/api/models/x/launch", headers={"Origin": "http://other.lan:9999"})
    assert r.status_code == 403


def test_null_origin_is_refused(client):
    r = client.post("/api/models/x/launch", headers={"Origin": "null"})
    assert r.status_code == 403


def test_same_origin_post_is_allowed(client):
    r = client.post("/api/models/x/launch", headers={"Origin": "http://spark-control.lan:9999"})
    assert r.status_code == 200 and r.json() == {"launched": True}


def test_no_origin_no_referer_is_allowed(client):
    # curl, SDKs and scripts send neither; browsers always send Origin cross-origin.
    assert client.post("/api/models/x/launch").status_code == 200


def test_proxy_endpoints_are_exempt(client):
    assert "/v1/" in _CSRF_EXEMPT_PREFIXES
    r = client.post("/v1/chat/completions", headers={"Origin": "http://my-app.lan:3000"})
    assert r.status_code == 200


def test_safe_methods_pass_cross_origin(client):
    assert client.get("/api/status", headers={"Origin": "http://evil.example"}).status_code == 200


def test_default_ports_compare_equal():
    app = FastAPI()
    app.add_middleware(CSRFGuard)

    @app.delete("/api/thing")
    async def delete():
        return {}

    c = TestClient(app, base_url="http://sparks.lan")
    assert c.delete("/api/thing", headers={"Origin": "http://sparks.lan:80"}).status_code == 200
    assert c.delete("/api/thing", headers={"Origin": "https://sparks.lan"}).status_code == 403
