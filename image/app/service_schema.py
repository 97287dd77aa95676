"""The shape of one services.yaml entry, checked field by field when the services catalog loads.

A service is a side container next to the models: spark_embed, a Whisper server, a diarizer,
a NIM, anything a user adds. Like models.yaml entries, every entry is strict (`extra="forbid"`,
no coercion, frozen) and every value that reaches a command on a node is run through
`app.shellsafe` here, so an entry that loaded is already safe to quote.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app import shellsafe
from app.model_schema import as_value_error, check_env

ServiceKind = Literal["embeddings", "transcription", "diarization", "nim", "other"]
DEFAULT_HEALTH_PATH = "/health"
NIM_HEALTH_PATH = "/v1/health/ready"  # a NIM's /v1/health/live answers long before the model is loaded
# Never written into a command line: NGC_API_KEY is passed by name (`-e NGC_API_KEY`) from the shell
# that app/nim.py fills from stdin; HF_TOKEN the same way the model launches do.
SERVICE_SECRET_ENV = ("NGC_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def _check_volume(spec: str, field: str) -> str:
    """`HOST:CONTAINER[:ro|rw]`; HOST absolute or `~/...` (the node's $HOME), CONTAINER absolute."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise ValueError(f"{field} {spec!r} must be HOST_PATH:CONTAINER_PATH or HOST_PATH:CONTAINER_PATH:ro")
    as_value_error(shellsafe.validate_path, parts[0], f"{field} host path")
    as_value_error(shellsafe.validate_path, parts[1], f"{field} container path")
    if not parts[1].startswith("/"):
        raise ValueError(f"{field} {spec!r}: the container path must be absolute")
    return spec


class ServiceEntry(BaseModel):
    """One service of the catalog (services.yaml merged with SERVICES_OVERRIDES)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str
    description: str = Field("", max_length=500)
    kind: ServiceKind = "other"
    image: str
    port: int = Field(ge=1, le=65535)
    # The variables that carry `port` into the container (a NIM reads NIM_SERVER_PORT, uvicorn apps PORT).
    port_env: list[str] = Field(default_factory=lambda: ["PORT"], min_length=1, max_length=8)
    node: str = "spark1"
    env: dict[str, str] = Field(default_factory=dict)
    args: list[str] = Field(default_factory=list, max_length=64)
    volumes: list[str] = Field(default_factory=list, max_length=16)
    health_path: str | None = None  # None: /health, or /v1/health/ready for a NIM
    gpu: bool = False
    start_timeout_s: float = Field(300.0, gt=0, le=7200)
    # Deep health: the model name sent in real requests, and the embedding dimension expected back.
    served_model_name: str | None = None
    expected_dimension: int | None = Field(None, ge=1, le=65536)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return as_value_error(shellsafe.validate_service_name, value, "name")

    @field_validator("description")
    @classmethod
    def _description(cls, value: str) -> str:
        return as_value_error(shellsafe.validate_env_value, value, "description")

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        return as_value_error(shellsafe.validate_image, value, "image")

    @field_validator("node")
    @classmethod
    def _node(cls, value: str) -> str:
        return as_value_error(shellsafe.validate_service_name, value, "node")

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        value = check_env(value)
        for name in value:
            if name in SERVICE_SECRET_ENV:
                raise ValueError(f"env.{name}: secrets are never put in a command; spark-control passes {name} "
                                 "by name from its own settings")
        return value

    @field_validator("port_env")
    @classmethod
    def _port_env(cls, value: list[str]) -> list[str]:
        for index, name in enumerate(value):
            as_value_error(shellsafe.validate_env_name, name, f"port_env[{index}]")
        return value

    @field_validator("args")
    @classmethod
    def _args(cls, value: list[str]) -> list[str]:
        for index, arg in enumerate(value):
            as_value_error(shellsafe.validate_extra_arg, arg, f"args[{index}]")
        return value

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, value: list[str]) -> list[str]:
        return [_check_volume(spec, f"volumes[{i}]") for i, spec in enumerate(value)]

    @field_validator("health_path")
    @classmethod
    def _health_path(cls, value: str | None) -> str | None:
        if value is not None and not (value.startswith("/") and value.isascii() and value.isprintable()
                                      and " " not in value and len(value) <= 200):
            raise ValueError(f"{value!r} is not a URL path: start with / (e.g. /health), no spaces")
        return value

    @field_validator("served_model_name")
    @classmethod
    def _served(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # NIMs serve `org/model` names: the HF repo alphabet, or a plain model name.
        validator = shellsafe.validate_hf_repo if "/" in value else shellsafe.validate_model_name
        return as_value_error(validator, value, "served_model_name")

    @model_validator(mode="after")
    def _consistent(self) -> ServiceEntry:
        clash = sorted(set(self.port_env) & set(self.env))
        if clash:
            raise ValueError(f"env: {clash[0]} is written by spark-control from `port` (it is in port_env); "
                             "set port instead")
        if self.expected_dimension is not None and self.kind != "embeddings":
            raise ValueError(f"expected_dimension: only embeddings services have one (this one is {self.kind})")
        return self

    @property
    def health(self) -> str:
        """The readiness path: the entry's own, else /health (/v1/health/ready for a NIM)."""
        return self.health_path or (NIM_HEALTH_PATH if self.kind == "nim" else DEFAULT_HEALTH_PATH)

    @property
    def model_name(self) -> str:
        """The `model` sent in real requests (deep health)."""
        return self.served_model_name or self.name

    def summary(self) -> dict:
        return {**self.model_dump(mode="json"), "health_path": self.health}
