"""The exact `docker run ... vllm serve ...` command for each node of a placement.

Commands are built as argv lists of plain strings and joined with shellsafe.quote_args, so
`shlex.split(command) == argv` for every command (the vLLM pre-flight relies on it). The one
value meant for the node's shell is the Hugging Face cache mount: its `$HOME` must expand on
the node, so the argv holds `$HOME/.cache/huggingface:...` and the command `"$HOME"/.cache/...`.

Secrets never enter a command: `-e HF_TOKEN` passes the node's own variable by name.

Two nodes use vLLM's native multi-node mode (vLLM >= 0.11.1): the same `vllm serve` on every
node with `--nnodes N --node-rank r --master-addr <head CX7 address> --master-port 29501`,
`--headless` on workers, and per-node env that pins NCCL/Gloo/UCX/MPI to the ConnectX-7 link.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app import shellsafe
from app.errors import InvalidInput, NotFound
from app.model_containers import LABEL_PREFIX, container_name
from app.model_schema import (GPU_MEMORY_UTILIZATION_MAX, KvCacheDtype, ModelEntry, as_value_error, check_env,
                              check_extra_args, check_vllm_name)
from app.placement import Placement
from app.settings import NodeConfig

HF_CACHE_MOUNT = "$HOME/.cache/huggingface:/root/.cache/huggingface"
MASTER_PORT = 29501
_DOCKER_RUN_FLAGS = ["--gpus", "all", "--ipc=host", "--network", "host", "--shm-size", "16g",
                     "--ulimit", "memlock=-1", "--ulimit", "stack=67108864"]


class LaunchOverrides(BaseModel):
    """What a user may change for one launch (API body). None keeps the catalog's value."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    gpu_memory_utilization: float | None = Field(None, gt=0, le=GPU_MEMORY_UTILIZATION_MAX)
    max_model_len: int | None = Field(None, ge=128, le=1_048_576)
    port: int | None = Field(None, ge=1, le=65535)
    image: str | None = None
    extra_args: list[str] = Field(default_factory=list, max_length=64)
    env: dict[str, str] = Field(default_factory=dict)
    kv_cache_dtype: KvCacheDtype | None = None
    load_format: str | None = None

    @field_validator("image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        return None if value is None else as_value_error(shellsafe.validate_image, value, "image")

    @field_validator("port")
    @classmethod
    def _port(cls, value: int | None) -> int | None:
        return None if value is None else as_value_error(shellsafe.validate_port, value, "port")

    @field_validator("extra_args")
    @classmethod
    def _extra_args(cls, value: list[str]) -> list[str]:
        return check_extra_args(value)

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        return check_env(value)

    @field_validator("load_format")
    @classmethod
    def _load_format(cls, value: str | None) -> str | None:
        return check_vllm_name(value, "load_format")

    @classmethod
    def parse(cls, data: object) -> LaunchOverrides:
        """Validate an API body; any problem is InvalidInput naming the field."""
        if data is None:
            return cls()
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = f"unknown field; allowed: {', '.join(cls.model_fields)}"
            elif err["type"] != "value_error" and isinstance(err.get("input"), (str, int, float)):
                shown = repr(err["input"])
                message += f" (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
            field_name = where or "overrides"
            raise InvalidInput(f"Invalid override {field_name}: {message}", field=field_name) from None


@dataclass(frozen=True)
class NodeCommand:
    node: str
    role: str        # "single", "head" or "worker"
    container: str
    argv: list[str]  # the full docker argv; shlex.split(command) == argv
    command: str     # what runs in the node's shell
    vllm_at: int = field(default=0, repr=False)  # index of the first argument after `vllm serve`

    @property
    def vllm_argv(self) -> list[str]:
        return self.argv[self.vllm_at:]


@dataclass(frozen=True)
class LaunchPlan:
    model: str
    served_model_name: str
    port: int
    image: str
    placement: tuple[str, ...]
    tensor_parallel: int
    pipeline_parallel: int
    commands: list[NodeCommand]
    endpoint: str  # base URL of the OpenAI API, on the head node's address

    def command_for(self, node: str) -> NodeCommand:
        for command in self.commands:
            if command.node == node:
                return command
        raise NotFound(f"node {node!r} is not in placement {'+'.join(self.placement)}", field="node")

    def vllm_argv(self, node: str | None = None) -> list[str]:
        """The arguments after `vllm serve` on `node` (default: the head), model repo first."""
        return (self.commands[0] if node is None else self.command_for(node)).vllm_argv

    def to_dict(self) -> dict:
        return {"model": self.model, "served_model_name": self.served_model_name, "port": self.port,
                "image": self.image, "placement": list(self.placement), "endpoint": self.endpoint,
                "tensor_parallel": self.tensor_parallel, "pipeline_parallel": self.pipeline_parallel,
                "commands": [{"node": c.node, "role": c.role, "container": c.container, "argv": list(c.argv),
                              "command": c.command} for c in self.commands]}


def build_launch_command(model: ModelEntry, placement: Placement | Sequence[NodeConfig],
                         overrides: LaunchOverrides | None = None) -> LaunchPlan:
    """Per node, the docker command that starts `model` there. Nothing runs; nothing is read from nodes."""
    placement = placement if isinstance(placement, Placement) else Placement(tuple(placement))
    overrides = overrides or LaunchOverrides()
    # The entry was validated when it was built; re-check what names the command, in case it was constructed by hand.
    shellsafe.validate_model_name(model.name, field="model name")
    shellsafe.validate_hf_repo(model.hf_repo, field="hf_repo")
    count = len(placement)
    if not model.nodes.min <= count <= model.nodes.max:
        need = str(model.nodes.min) if model.nodes.min == model.nodes.max else f"{model.nodes.min}-{model.nodes.max}"
        raise InvalidInput(f"model {model.name!r} runs on {need} node(s) (nodes.min {model.nodes.min}, nodes.max "
                           f"{model.nodes.max}), but placement {placement.label!r} has {count}", field="placement")
    pp = model.pipeline_parallel
    if count % pp:
        raise InvalidInput(f"pipeline_parallel {pp} of model {model.name!r} does not divide the {count} node(s) of "
                           f"placement {placement.label!r}", field="placement")
    tp = model.tensor_parallel or count // pp
    image = shellsafe.validate_image(overrides.image or model.image, field="image")
    port = shellsafe.validate_port(overrides.port or model.port, field="port")
    fabric = [_fabric(node) for node in placement.nodes] if count > 1 else []

    commands = []
    for rank, node in enumerate(placement.nodes):
        role = "single" if count == 1 else ("head" if rank == 0 else "worker")
        container = container_name(model.name, role)
        docker = ["docker", "run", "-d", "--name", container,
                  "--label", f"{LABEL_PREFIX}model={model.name}", "--label", f"{LABEL_PREFIX}role={role}",
                  "--label", f"{LABEL_PREFIX}placement={placement.label}", "--label", f"{LABEL_PREFIX}port={port}",
                  "--label", f"{LABEL_PREFIX}served-name={model.served_model_name}",
                  *_DOCKER_RUN_FLAGS, "-v", HF_CACHE_MOUNT, "-e", "HF_TOKEN"]
        mount_at = docker.index(HF_CACHE_MOUNT)
        env = {**(_fabric_env(fabric[rank]) if fabric else {}), **model.env, **overrides.env}
        for name, value in env.items():
            docker += ["-e", f"{shellsafe.validate_env_name(name)}={shellsafe.validate_env_value(value)}"]
        docker += [image, "vllm", "serve"]
        serve = _serve_args(model, overrides, port, tp, pp)
        if fabric:
            serve += ["--nnodes", str(count), "--node-rank", str(rank), "--master-addr", fabric[0][0],
                      "--master-port", str(MASTER_PORT), "--distributed-executor-backend", "mp"]
            if rank:
                serve.append("--headless")
        serve += [*model.vllm.extra_args, *overrides.extra_args]
        argv = docker + serve
        commands.append(NodeCommand(node=node.name, role=role, container=container, argv=argv,
                                    command=_join(argv, home_at=mount_at), vllm_at=len(docker)))
    return LaunchPlan(model=model.name, served_model_name=model.served_model_name, port=port, image=image,
                      placement=placement.names, tensor_parallel=tp, pipeline_parallel=pp, commands=commands,
                      endpoint=endpoint_url(placement.head, port))


def _serve_args(model: ModelEntry, overrides: LaunchOverrides, port: int, tp: int, pp: int) -> list[str]:
    v = model.vllm
    gpu = overrides.gpu_memory_utilization or v.gpu_memory_utilization
    max_len = overrides.max_model_len or v.max_model_len
    kv_cache = overrides.kv_cache_dtype or v.kv_cache_dtype
    load_format = overrides.load_format or v.load_format
    args = [model.hf_repo]
    if model.revision:
        args += ["--revision", model.revision]
    args += ["--host", "0.0.0.0", "--port", str(port), "--served-model-name", model.served_model_name,
             "--gpu-memory-utilization", repr(float(gpu))]
    if max_len is not None:
        args += ["--max-model-len", str(max_len)]
    if kv_cache:
        args += ["--kv-cache-dtype", kv_cache]
    if v.quantization:
        args += ["--quantization", v.quantization]
    if v.enable_prefix_caching is not None:
        args.append("--enable-prefix-caching" if v.enable_prefix_caching else "--no-enable-prefix-caching")
    if load_format:
        args += ["--load-format", load_format]
    if v.tool_call_parser:
        args += ["--tool-call-parser", v.tool_call_parser, "--enable-auto-tool-choice"]
    if v.reasoning_parser:
        args += ["--reasoning-parser", v.reasoning_parser]
    return args + ["--tensor-parallel-size", str(tp), "--pipeline-parallel-size", str(pp)]


def _fabric(node: NodeConfig) -> tuple[str, str, str]:
    """(fabric address, interface, RDMA devices) of a node, validated: they go into the command."""
    if node.is_local and not node.fabric_ip:
        raise InvalidInput(f"node {node.name} runs on this machine without a fabric address; set "
                           f"{node.name.upper()}_FABRIC_IP to its ConnectX-7 address for a multi-node launch",
                           field="placement")
    address = shellsafe.validate_hostname(node.fabric_address, field=f"{node.name} fabric address")
    iface = shellsafe.validate_interface_name(node.fabric_iface, field=f"{node.name} fabric interface")
    for device in node.rdma_devices.split(","):
        shellsafe.validate_interface_name(device, field=f"{node.name} RDMA device")
    return address, iface, node.rdma_devices


def _fabric_env(fabric: tuple[str, str, str]) -> dict[str, str]:
    address, iface, rdma = fabric
    return {"VLLM_HOST_IP": address, "NCCL_SOCKET_IFNAME": iface, "GLOO_SOCKET_IFNAME": iface,
            "TP_SOCKET_IFNAME": iface, "UCX_NET_DEVICES": iface, "OMPI_MCA_btl_tcp_if_include": iface,
            "NCCL_IB_DISABLE": "0", "NCCL_IB_HCA": rdma, "RAY_memory_monitor_refresh_ms": "0"}


def _join(argv: list[str], *, home_at: int) -> str:
    """quote_args, except the cache mount, whose leading $HOME the node's shell must expand."""
    parts = [shellsafe.quote_arg(arg) for arg in argv]
    if not argv[home_at].startswith("$HOME/"):
        raise ValueError(f"argument {home_at} is not the $HOME-relative cache mount")
    parts[home_at] = '"$HOME"/' + shellsafe.quote_arg(argv[home_at][len("$HOME/"):])
    return " ".join(parts)


def endpoint_url(node: NodeConfig, port: int) -> str:
    """Where the app reaches a model on `node`: vLLM binds 0.0.0.0, so the node's own host."""
    host = "127.0.0.1" if node.is_local else node.host
    return f"http://{f'[{host}]' if ':' in host else host}:{int(port)}"
