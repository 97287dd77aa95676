"""Every endpoint and every setting is documented (a new one without docs fails here)."""

from __future__ import annotations

from pathlib import Path


from app.server import create_app
from app.settings import Settings

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_endpoint_is_in_the_api_docs():
    api_doc = (DOCS / "API.md").read_text()
    app = create_app(Settings.from_env(environ={}))
    endpoints = [(method.upper(), path) for path, ops in app.openapi()["paths"].items() for method in ops]
    assert len(endpoints) >= 5, f"the OpenAPI schema lost the routers: {endpoints}"
    missing = [f"{method} {path}" for method, path in endpoints if f"`{method} {path}" not in api_doc]
    assert not missing, f"undocumented endpoints (add them to docs/API.md): {missing}"


def test_every_setting_is_in_the_configuration_docs():
    config_doc = (DOCS / "CONFIGURATION.md").read_text()
    names = [name.upper() for name, f in Settings.model_fields.items() if not f.exclude]
    names += ["SPARK{n}_HOST", "SPARK{n}_USER", "SPARK{n}_PORT", "SPARK{n}_FABRIC_IP", "SPARK{n}_FABRIC_IFACE",
              "SPARK{n}_RDMA_DEVICES"]
    missing = [n for n in names if f"`{n}`" not in config_doc]
    assert not missing, f"undocumented settings (add them to docs/CONFIGURATION.md): {missing}"
