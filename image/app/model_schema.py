"""The shape of one models.yaml entry, checked field by field when the catalog loads.

Every model is strict (`extra="forbid"`, no type coercion, frozen once built): a typo in
models.yaml is an error that names the key, never a silently ignored setting. Values that
will reach a command on a node are also run through `app.shellsafe` here, so an entry that
exists is already safe to quote. Validators raise ValueError (pydantic then records where
the problem is); the loader and `LaunchOverrides.parse` turn that into ConfigError or
InvalidInput naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app import shellsafe
from app.errors import InvalidInput

DEFAULT_IMAGE = "nvcr.io/nvidia/vllm:25.09-py3"
DEFAULT_PORT = 8000
# Unified memory: above this a GB10 has no headroom left for the OS and can wedge.
GPU_MEMORY_UTILIZATION_MAX = 0.95

Capability = Literal["chat", "completions", "embeddings", "audio", "vision"]
# vLLM's --kv-cache-dtype choices.
KvCacheDtype = Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"]

_CATALOG_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
# vLLM registry names: quantization methods, tool/reasoning parsers, load formats.
_VLLM_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_NEGATIVE_NUMBER_RE = re.compile(r"-[0-9][0-9.eE+-]*")

_PLACEMENT = "the placement (spark-control builds the multi-node arguments)"
# Flags spark-control writes itself: in extra_args they would fight the field that owns them.
MANAGED_FLAGS = {
    "--model": "hf_repo", "--revision": "revision", "--host": "spark-control (always 0.0.0.0)",
    "--port": "port", "--served-model-name": "served_model_name",
    "--gpu-memory-utilization": "vllm.gpu_memory_utilization", "--max-model-len": "vllm.max_model_len",
    "--kv-cache-dtype": "vllm.kv_cache_dtype", "--quantization": "vllm.quantization",
    "--enable-prefix-caching": "vllm.enable_prefix_caching",
    "--no-enable-prefix-caching": "vllm.enable_prefix_caching",
    "--load-format": "vllm.load_format", "--tool-call-parser": "vllm.tool_call_parser",
    "--enable-auto-tool-choice": "vllm.tool_call_parser", "--reasoning-parser": "vllm.reasoning_parser",
    "--tensor-parallel-size": "tensor_parallel", "--pipeline-parallel-size": "pipeline_parallel",
    "--nnodes": _PLACEMENT, "--node-rank": _PLACEMENT, "--master-addr": _PLACEMENT,
    "--master-port": _PLACEMENT, "--headless": _PLACEMENT, "--distributed-executor-backend": _PLACEMENT,
}
# Set per node from SPARK{n}_FABRIC_IP / _FABRIC_IFACE / _RDMA_DEVICES on multi-node launches.
FABRIC_ENV = ("VLLM_HOST_IP", "NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME", "TP_SOCKET_IFNAME", "UCX_NET_DEVICES",
              "OMPI_MCA_btl_tcp_if_include", "NCCL_IB_DISABLE", "NCCL_IB_HCA", "RAY_memory_monitor_refresh_ms")
# Never written into a command line (it would show in `ps`, logs and the dry-run API).
SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def as_value_error(validator: Callable[..., object], value: object, field: str):
    """Run a shellsafe validator; its InvalidInput becomes a ValueError pydantic can locate."""
    try:
        return validator(value, field=field)
    except InvalidInput as exc:
        raise ValueError(exc.message) from None


def check_extra_args(args: list[str], field: str = "extra_args") -> list[str]:
    """Each item is one literal argument: a `--long-flag`, `--flag=value`, or a value."""
    for index, arg in enumerate(args):
        where = f"{field}[{index}]"
        as_value_error(shellsafe.validate_extra_arg, arg, where)
        if not arg.startswith("-") or _NEGATIVE_NUMBER_RE.fullmatch(arg):
            continue
        flag = arg.partition("=")[0]
        as_value_error(shellsafe.validate_cli_flag, flag, where)
        if flag in MANAGED_FLAGS:
            raise ValueError(f"{where} {arg!r}: {flag} is written by spark-control from {MANAGED_FLAGS[flag]}; "
                             "set that instead")
    return args


def check_env(env: dict[str, str], field: str = "env") -> dict[str, str]:
    for name, value in env.items():
        as_value_error(shellsafe.validate_env_name, name, f"{field} name")
        as_value_error(shellsafe.validate_env_value, value, f"{field}.{name}")
        if name in SECRET_ENV:
            raise ValueError(f"{field}.{name}: secrets are never put in a command; {name} is passed by name "
                             "(`-e HF_TOKEN`) from the node's environment")
        if name in FABRIC_ENV:
            raise ValueError(f"{field}.{name}: set by spark-control on multi-node launches from the node's "
                             "SPARK{n}_FABRIC_IP / SPARK{n}_FABRIC_IFACE / SPARK{n}_RDMA_DEVICES")
    return env


def check_vllm_name(value: str | None, field: str) -> str | None:
    if value is not None and not _VLLM_NAME_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a vLLM {field} name: use 1-64 of a-z 0-9 _ . -, "
                         "starting with a letter or digit")
    return value


_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)


class NodeRange(BaseModel):
    """How many Sparks the model may run on (one GPU each)."""

    model_config = _STRICT

    min: int = Field(1, ge=1, le=16)
    max: int = Field(1, ge=1, le=16)

    @model_validator(mode="after")
    def _ordered(self) -> NodeRange:
        if self.max < self.min:
            raise ValueError(f"nodes.max {self.max} is less than nodes.min {self.min}")
        return self


class VllmArgs(BaseModel):
    """`vllm serve` settings. None leaves the flag out (vLLM's own default applies)."""

    model_config = _STRICT

    gpu_memory_utilization: float = Field(0.80, gt=0, le=GPU_MEMORY_UTILIZATION_MAX)
    max_model_len: int | None = Field(None, ge=128, le=1_048_576)
    kv_cache_dtype: KvCacheDtype | None = None
    quantization: str | None = None
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None
    load_format: str | None = None
    enable_prefix_caching: bool | None = None
    extra_args: list[str] = Field(default_factory=list, max_length=64)

    @field_validator("quantization", "tool_call_parser", "reasoning_parser", "load_format")
    @classmethod
    def _vllm_name(cls, value: str | None, info) -> str | None:
        return check_vllm_name(value, info.field_name)

    @field_validator("extra_args")
    @classmethod
    def _extra_args(cls, value: list[str]) -> list[str]:
        return check_extra_args(value)


class ModelEntry(BaseModel):
    """One catalog model, after `defaults` were merged in."""

    model_config = _STRICT

    name: str
    description: str = Field("", max_length=500)
    hf_repo: str
    revision: str | None = None
    image: str = DEFAULT_IMAGE
    nodes: NodeRange = Field(default_factory=NodeRange)
    tensor_parallel: int | None = Field(None, ge=1, le=16)
    pipeline_parallel: int = Field(1, ge=1, le=16)
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)
    vllm: VllmArgs = Field(default_factory=VllmArgs)
    env: dict[str, str] = Field(default_factory=dict)
    size_gb: float = Field(gt=0, le=4096)
    capabilities: list[Capability] = Field(default_factory=lambda: ["chat", "completions"], min_length=1)
    aliases: list[str] = Field(default_factory=list, max_length=32)
    served_model_name: str

    @model_validator(mode="before")
    @classmethod
    def _served_name_defaults_to_name(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("served_model_name") is None and "name" in data:
            data = {**data, "served_model_name": data["name"]}
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        as_value_error(shellsafe.validate_model_name, value, "name")
        if not _CATALOG_NAME_RE.fullmatch(value):
            raise ValueError(f"catalog name {value!r} must match ^[a-z0-9][a-z0-9._-]*$ (lowercase, no ':')")
        return value

    @field_validator("description")
    @classmethod
    def _description(cls, value: str) -> str:
        return as_value_error(shellsafe.validate_env_value, value, "description")  # any text, no control characters

    @field_validator("hf_repo")
    @classmethod
    def _hf_repo(cls, value: str) -> str:
        return as_value_error(shellsafe.validate_hf_repo, value, "hf_repo")

    @field_validator("revision")
    @classmethod
    def _revision(cls, value: str | None) -> str | None:
        return None if value is None else as_value_error(shellsafe.validate_hf_revision, value, "revision")

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        return as_value_error(shellsafe.validate_image, value, "image")

    @field_validator("served_model_name")
    @classmethod
    def _served_model_name(cls, value: str) -> str:
        return as_value_error(shellsafe.validate_model_name, value, "served_model_name")

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        return check_env(value)

    @field_validator("capabilities")
    @classmethod
    def _capabilities(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"capabilities {value} lists a capability twice")
        return value

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, value: list[str]) -> list[str]:
        for index, alias in enumerate(value):
            as_value_error(shellsafe.validate_model_name, alias, f"aliases[{index}]")
        folded = [alias.casefold() for alias in value]
        if len(set(folded)) != len(folded):
            raise ValueError(f"aliases {value} lists an alias twice")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ModelEntry:
        if self.name.casefold() in (alias.casefold() for alias in self.aliases):
            raise ValueError(f"aliases: {self.name!r} is the model's own name")
        if self.tensor_parallel is not None:
            gpus = self.tensor_parallel * self.pipeline_parallel
            if not self.nodes.min == self.nodes.max == gpus:
                raise ValueError(
                    f"tensor_parallel: {self.tensor_parallel} x pipeline_parallel {self.pipeline_parallel} = {gpus} "
                    f"GPUs, but nodes allows {self.nodes.min}-{self.nodes.max} (one GPU per Spark); leave "
                    f"tensor_parallel out to follow the placement, or set nodes.min = nodes.max = {gpus}")
        if self.nodes.min % self.pipeline_parallel:
            raise ValueError(f"pipeline_parallel: {self.pipeline_parallel} does not divide nodes.min {self.nodes.min}")
        return self

    def summary(self) -> dict:
        """The entry as JSON for the API and the dashboard (no secrets can be in it: see check_env)."""
        return self.model_dump(mode="json")

    @property
    def all_names(self) -> list[str]:
        """Every name a client may send for this model: name, served name, aliases."""
        names = [self.name]
        if self.served_model_name != self.name:
            names.append(self.served_model_name)
        return names + list(self.aliases)


class CatalogDefaults(BaseModel):
    """The `defaults:` block: the keys an entry may inherit. Checked on its own so a typo names `defaults`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    image: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    nodes: NodeRange | None = None
    tensor_parallel: int | None = Field(None, ge=1, le=16)
    pipeline_parallel: int | None = Field(None, ge=1, le=16)
    vllm: VllmArgs | None = None
    env: dict[str, str] | None = None
    capabilities: list[Capability] | None = None

    @field_validator("image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        return None if value is None else as_value_error(shellsafe.validate_image, value, "image")

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return None if value is None else check_env(value)
