"""Every environment variable spark-control reads, typed and read once.

The node inventory is open-ended (`SPARK1_HOST`, `SPARK2_HOST`, ... `SPARK{n}_HOST`), which a
fixed settings class cannot declare, so `Settings.from_env()` reads it by hand and everything
else through pydantic-settings. A mistake becomes a ConfigError naming the variable, the value
and what would be accepted; nothing here touches the disk except `ensure_data_dir()`.
"""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.errors import ConfigError

_NODE_VAR = re.compile(r"^SPARK(\d+)_HOST$")
_LOCAL_HOSTS = {"local", "localhost-local"}
_OPTIONAL_NODE_VARS = {"FABRIC_IP": "fabric_ip", "FABRIC_IFACE": "fabric_iface", "RDMA_DEVICES": "rdma_devices"}  # `SPARK1_HOST=local` means: this machine, no SSH


class NodeConfig(BaseModel):
    """One Spark. `host="local"` runs commands on this machine without SSH."""

    name: str
    host: str
    user: str
    port: int = 22
    # The 200G ConnectX-7 link between Sparks: multi-node NCCL/Ray traffic must use it, not the LAN.
    fabric_ip: str | None = None          # this node's address on the CX7 link; None -> `host`
    fabric_iface: str = "enp1s0f1np1"     # the CX7 interface (NCCL_SOCKET_IFNAME etc.)
    rdma_devices: str = "rocep1s0f1,roceP2p1s0f1"  # NCCL_IB_HCA: both RoCE devices

    @property
    def fabric_address(self) -> str:
        return self.fabric_ip or self.host

    @property
    def is_local(self) -> bool:
        return self.host in _LOCAL_HOSTS


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    """`/data` inside the container; a per-user directory everywhere else."""
    env = os.environ if env is None else env
    container_data = Path("/data")
    if container_data.is_dir() and os.access(container_data, os.W_OK):
        return container_data
    xdg = env.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "spark-control"


class Settings(BaseSettings):
    """Declared settings; the names are the environment variables (case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    nodes: list[NodeConfig] = Field(default_factory=list, exclude=True)
    data_dir: Path = Field(default_factory=default_data_dir)
    bind_port: int = Field(9999, ge=1, le=65535)
    ssh_key_path: Path | None = None
    ssh_dir: Path = Field(default_factory=lambda: Path.home() / ".ssh")
    ssh_known_hosts: Path | None = None
    models_yaml: Path | None = None
    models_overrides: Path | None = None
    services_overrides: Path | None = None
    redaction_map_db: Path | None = None
    # Redaction gateway (docs/REDACTION_GATEWAY.md): the map key (base64 of 32 bytes; else a key
    # file beside the DB, created 0600), how long a conversation's map lives after its last use,
    # and where redacted requests go (an OpenAI base URL and its key; unset = this gateway's /v1).
    redaction_key: str | None = Field(None, repr=False)
    redaction_key_file: Path | None = None
    redaction_ttl_s: float = Field(7 * 24 * 3600.0, gt=0)
    redaction_upstream_url: str | None = Field(None, pattern=r"^https?://[^\s/]+\S*$")
    redaction_upstream_api_key: str | None = Field(None, repr=False)
    # What is redacted: entity types (comma-separated; unset = all), terms never redacted
    # (comma-separated, e.g. your company's name), and whether person names are looked for (NER).
    redaction_entities: str | None = None
    redaction_allowlist: str | None = None
    redaction_ner: bool = True
    connectivity_log: Path | None = None
    # How often the connectivity probe looks at every node, and how much history it keeps.
    connectivity_interval_s: float = Field(3.0, gt=0)
    connectivity_history: int = Field(2000, ge=10)
    # Model lifecycle: how long a model may take to load, and how often it is checked meanwhile.
    launch_timeout_s: float = Field(1800.0, gt=0)
    launch_poll_interval_s: float = Field(2.0, gt=0)
    # A download, copy or image pull whose node answers no poll for this long ends `failed` (the
    # work may still run there). Long enough for a blip or a reboot.
    job_unreachable_give_up_s: float = Field(600.0, gt=0)
    # Gateway: how long a request waits for a model that is loading (a swap), the largest body
    # accepted, and optional API keys (comma-separated) for the /v1 endpoints.
    proxy_wait_for_model_s: float = Field(300.0, ge=0)
    proxy_max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    proxy_api_keys: str | None = Field(None, repr=False)
    # Audio gateway: the largest audio file accepted by POST /v1/audio/transcriptions (OpenAI: 25 MB).
    audio_max_bytes: int = Field(25 * 1024 * 1024, ge=1024)
    # Hugging Face token for gated/private repos: handed to `hf download` on stdin, never logged or returned.
    hf_token: str | None = Field(None, repr=False)
    # NGC API key for NIMs: sent to the node on stdin (docker login + `-e NGC_API_KEY`), never logged or returned.
    ngc_api_key: str | None = Field(None, repr=False)
    # Deep health (app/deep_health.py): how often it runs in the background (0 = off), and the
    # MemAvailable under which a node gets a warning.
    deep_health_interval_s: float = Field(300.0, ge=0)
    deep_health_min_available_gb: float = Field(8.0, ge=0)
    # SSH: a dead node is noticed after about keepalive_interval * keepalive_count seconds.
    ssh_connect_timeout_s: float = Field(5.0, gt=0)
    ssh_command_timeout_s: float = Field(15.0, gt=0)
    ssh_keepalive_interval_s: float = Field(2.0, gt=0)
    ssh_keepalive_count: int = Field(3, ge=1)

    @property
    def api_keys(self) -> frozenset[str]:
        return frozenset(k.strip() for k in (self.proxy_api_keys or "").split(",") if k.strip())

    @property
    def known_hosts_path(self) -> Path:
        return self.ssh_known_hosts or self.ssh_dir / "known_hosts"

    @property
    def redaction_map_db_path(self) -> Path:
        return self.redaction_map_db or self.data_dir / "redaction_maps.db"

    @property
    def connectivity_log_path(self) -> Path:
        return self.connectivity_log or self.data_dir / "connectivity.json"

    @property
    def pending_cancels_path(self) -> Path:
        return self.data_dir / "pending-cancels.json"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "Settings":
        """Read the environment; a bad value raises ConfigError naming the variable."""
        env = dict(os.environ if environ is None else environ)
        nodes = overrides.pop("nodes", None)
        if nodes is None:
            nodes = nodes_from_env(env)
        declared = {k.lower(): v for k, v in env.items() if k.lower() in cls.model_fields}
        declared = {k: v for k, v in declared.items() if v != ""}  # empty = unset
        declared.setdefault("data_dir", default_data_dir(env))
        try:
            # Validate the environment's strings explicitly, so a test's `environ` is honoured.
            return cls.model_validate({**declared, **overrides, "nodes": nodes})
        except ValidationError as exc:
            raise ConfigError(_describe_validation_error(exc)) from None

    def ensure_data_dir(self) -> None:
        """Create the directories the data files live in (the seed crashed when they were missing)."""
        for path in (self.redaction_map_db_path, self.connectivity_log_path, self.pending_cancels_path):
            path.parent.mkdir(parents=True, exist_ok=True)


def nodes_from_env(env: Mapping[str, str]) -> list[NodeConfig]:
    """SPARK{n}_HOST / _USER / _PORT for any n, ordered by n. None configured -> this machine."""
    numbers = sorted(int(m.group(1)) for key in env if (m := _NODE_VAR.match(key)) and env[key])
    default_user = env.get("USER") or _current_user()
    nodes = []
    for n in numbers:
        port_text = env.get(f"SPARK{n}_PORT", "22") or "22"
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ConfigError(
                f"environment variable SPARK{n}_PORT: {port_text!r} is not a TCP port; use a number 1-65535"
            )
        optional = {key: env[f"SPARK{n}_{var}"].strip() for var, key in _OPTIONAL_NODE_VARS.items()
                    if env.get(f"SPARK{n}_{var}", "").strip()}
        nodes.append(
            NodeConfig(
                name=f"spark{n}",
                host=env[f"SPARK{n}_HOST"].strip(),
                user=(env.get(f"SPARK{n}_USER") or default_user).strip(),
                port=int(port_text),
                **optional,
            )
        )
    if not nodes:
        nodes.append(NodeConfig(name="spark1", host="local", user=default_user))
    return nodes


def _current_user() -> str:
    """getpass fails for a uid with no passwd entry (containers run with --user 10001): use the uid."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"])
        value = err.get("input")
        parts.append(f"environment variable {field.upper()}={value!r}: {err['msg']}")
    return "; ".join(parts)
