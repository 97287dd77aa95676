"""app/validate.py: the vLLM pre-flight on a built `docker run ... vllm serve ...` command.

Commands are built here by hand, the way a launch is quoted (shlex.quote per argument, the
Hugging Face mount as "$HOME"/...), so these tests do not depend on how models.py builds
them. Every refusal asserts its exact message.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from app.errors import InvalidInput
from app.validate import (
    NODE_FACTS_COMMAND,
    NODE_FACTS_SCRIPT,
    NodeFacts,
    check_launch,
    load_vllm_flags,
    normalize_image,
    parse_launch_command,
    parse_listening_ports,
    parse_node_facts,
    raise_for_problems,
)

FIXTURES = Path(__file__).parent / "fixtures" / "gb10"
V = load_vllm_flags().version
IMAGE = "nvcr.io/nvidia/vllm:25.09-py3"
HF_MOUNT = "$HOME/.cache/huggingface:/root/.cache/huggingface"
GIB = 2**30
FABRIC = {"spark1": "192.168.100.10", "spark2": "192.168.100.11"}


def command(serve_args: list[str], *, name: str = "spark-control-qwen3-8b", image: str = IMAGE,
            env: dict[str, str] | None = None, docker: tuple[str, ...] = ()) -> str:
    """A launch command quoted like a real one: every argument shlex.quote'd, $HOME left to the node."""
    argv = ["docker", "run", "-d", "--name", name, "--label", "spark-control.model=qwen3-8b",
            "--label", "spark-control.port=8000", "--gpus", "all", "--ipc=host", "--network", "host",
            "--shm-size", "16g", "--ulimit", "memlock=-1", "--ulimit", "stack=67108864",
            "-v", HF_MOUNT, "-e", "HF_TOKEN"]
    for key, value in (env or {}).items():
        argv += ["-e", f"{key}={value}"]
    argv += [*docker, image, "vllm", "serve", *serve_args]
    parts = [shlex.quote(arg) for arg in argv]
    parts[argv.index(HF_MOUNT)] = '"$HOME"/' + shlex.quote(HF_MOUNT[len("$HOME/"):])
    return " ".join(parts)


def serve_args(model: str = "Qwen/Qwen3-8B", **changes: str | None) -> list[str]:
    """vllm serve arguments of a typical one-node launch; changes={"max_model_len": "4096"} or None to drop."""
    flags: dict[str, str | None] = {
        "host": "0.0.0.0", "port": "8000", "served_model_name": "qwen3-8b", "gpu_memory_utilization": "0.8",
        "max_model_len": "32768", "kv_cache_dtype": "fp8", "enable_prefix_caching": "", "load_format":
        "fastsafetensors", "tool_call_parser": "hermes", "enable_auto_tool_choice": "", "reasoning_parser": "qwen3",
        "tensor_parallel_size": "1", "pipeline_parallel_size": "1"}
    flags.update(changes)
    args = [model]
    for key, value in flags.items():
        if value is None:
            continue
        args.append("--" + key.replace("_", "-"))
        if value != "":
            args.append(value)
    return args


def one_node(*extra: str, **changes: str | None) -> list[tuple[str, str]]:
    return [("spark1", command(serve_args(**changes) + list(extra)))]


def two_node_args(rank: int, model: str = "Qwen/Qwen3-235B-A22B-GPTQ-Int4", **changes: str | None) -> list[str]:
    base = {"served_model_name": "qwen3-235b", "gpu_memory_utilization": "0.85", "max_model_len": "32768",
            "tool_call_parser": None, "enable_auto_tool_choice": None, "reasoning_parser": None,
            "tensor_parallel_size": "2", "pipeline_parallel_size": "1", "nnodes": "2", "node_rank": str(rank),
            "master_addr": FABRIC["spark1"], "master_port": "29501", "distributed_executor_backend": "mp"}
    base.update(changes)
    args = serve_args(model, **base)
    return args + (["--headless"] if rank else [])


def fabric_env(node: str) -> dict[str, str]:
    return {"VLLM_HOST_IP": FABRIC[node], "NCCL_SOCKET_IFNAME": "enp1s0f1np1", "GLOO_SOCKET_IFNAME": "enp1s0f1np1",
            "NCCL_IB_DISABLE": "0", "NCCL_IB_HCA": "rocep1s0f1,roceP2p1s0f1"}


def two_node(head: list[str] | None = None, worker: list[str] | None = None) -> list[tuple[str, str]]:
    return [("spark1", command(head or two_node_args(0), name="spark-control-qwen3-235b", env=fabric_env("spark1"))),
            ("spark2", command(worker or two_node_args(1), name="spark-control-qwen3-235b-worker",
                               env=fabric_env("spark2")))]


def idle_facts(**changes) -> NodeFacts:
    """A Spark at idle: the MemAvailable a real GB10 reports (tests/fixtures/gb10/README.md)."""
    facts = NodeFacts(mem_available_bytes=118566368 * 1024, mem_total_bytes=127600748 * 1024,
                      listening_ports={22, 9999}, listeners=[("0.0.0.0", 22), ("[::]", 22), ("0.0.0.0", 9999)],
                      images_present={IMAGE, "ghcr.io/open-webui/open-webui:main"}, can_pull=True)
    for key, value in changes.items():
        setattr(facts, key, value)
    return facts


def problems(verdict) -> list[str]:
    return [p.message for p in verdict.problems]


def warnings(verdict) -> list[str]:
    return [w.message for w in verdict.warnings]


# ---------------------------------------------------------------- the flag table


def test_flag_table_is_a_real_vllm_release_with_the_flags_spark_control_uses():
    table = load_vllm_flags()
    data = json.loads((Path(__file__).parent.parent / "app" / "vllm_args.json").read_text())
    assert data["vllm_version"] == table.version == "0.11.2"
    assert "vllm-0.11.2" in data["source"] and "sha256" in data["source"]
    expected = {
        "--port": True, "--host": True, "--served-model-name": True, "--tensor-parallel-size": True, "-tp": True,
        "--pipeline-parallel-size": True, "-pp": True, "--gpu-memory-utilization": True, "--max-model-len": True,
        "--kv-cache-dtype": True, "--quantization": True, "-q": True, "--load-format": True,
        "--tool-call-parser": True, "--enable-auto-tool-choice": False, "--reasoning-parser": True,
        "--revision": True, "--task": True, "--runner": True, "--trust-remote-code": False,
        "--no-trust-remote-code": False, "--distributed-executor-backend": True, "--enable-prefix-caching": False,
        "--no-enable-prefix-caching": False, "--nnodes": True, "-n": True, "--node-rank": True, "-r": True,
        "--master-addr": True, "--master-port": True, "--headless": False, "--data-parallel-size": True,
        "--data-parallel-address": True, "--data-parallel-rpc-port": True, "--data-parallel-start-rank": True,
        "--enforce-eager": False, "--max-num-seqs": True, "--max-num-batched-tokens": True, "--dtype": True,
    }
    assert {flag: table.flags[flag].takes_value for flag in expected} == expected
    assert table.flags["-tp"].canonical == "--tensor-parallel-size"
    assert table.flags["--no-enable-prefix-caching"].canonical == "--enable-prefix-caching"
    assert table.flags["--enable-prefix-caching"].negatable and not table.flags["--headless"].negatable
    assert table.flags["--served-model-name"].nargs == "+"
    assert table.default("--port") == 8000 and table.default("--gpu-memory-utilization") == 0.9
    for not_a_flag in ("--max-model-length", "--no-headless", "--nodes", "--tp"):
        assert not_a_flag not in table.flags
    for name, spec in table.flags.items():  # every --no-x is the negation of a negatable --x
        if spec.negation:
            assert name == "--no-" + spec.canonical[2:] and table.flags[spec.canonical].negatable


# ---------------------------------------------------------------- parse_launch_command


def test_parse_a_real_one_node_command():
    text = command(serve_args())
    assert '"$HOME"/.cache/huggingface' in text
    parsed = parse_launch_command(text)
    assert parsed.image == IMAGE
    assert parsed.model == "Qwen/Qwen3-8B"
    assert parsed.container_name == "spark-control-qwen3-8b"
    assert parsed.env == {"HF_TOKEN": None}
    assert parsed.docker_values("--volume") == [HF_MOUNT]
    assert parsed.docker_values("--ulimit") == ["memlock=-1", "stack=67108864"]
    assert parsed.docker_value("--ipc") == "host" and ("--detach", None) in parsed.docker_options
    assert parsed.container_command[:3] == ("vllm", "serve", "Qwen/Qwen3-8B")
    assert parsed.flags == {
        "--host": "0.0.0.0", "--port": "8000", "--served-model-name": ["qwen3-8b"],
        "--gpu-memory-utilization": "0.8", "--max-model-len": "32768", "--kv-cache-dtype": "fp8",
        "--enable-prefix-caching": True, "--load-format": "fastsafetensors", "--tool-call-parser": "hermes",
        "--enable-auto-tool-choice": True, "--reasoning-parser": "qwen3", "--tensor-parallel-size": "1",
        "--pipeline-parallel-size": "1"}
    assert parsed.problems == () and parsed.warnings == ()


def test_parse_handles_every_spelling_vllm_accepts():
    parsed = parse_launch_command(command([
        "--port=8001", "Qwen/Qwen3-8B", "--max_model_len", "32k", "-tp", "1", "-pp=1", "--no-enable-prefix-caching",
        "--served-model-name", "qwen", "qwen3", "--middleware", "a.b", "--middleware", "c.d", "-O3",
        "--compilation-config.cudagraph_mode", "FULL", "--seed", "-1", "--hf-token", "--trust-remote-code"]))
    assert parsed.model == "Qwen/Qwen3-8B"
    assert parsed.flags == {
        "--port": "8001", "--max-model-len": "32k", "--tensor-parallel-size": "1", "--pipeline-parallel-size": "1",
        "--enable-prefix-caching": False, "--served-model-name": ["qwen", "qwen3"],
        "--middleware": ["a.b", "c.d"], "--compilation-config": {"mode": "3", "cudagraph_mode": "FULL"},
        "--seed": "-1", "--hf-token": True, "--trust-remote-code": True}
    assert [use.written for use in parsed.uses][:3] == ["--port=8001", "--max_model_len", "-tp"]


def test_values_with_spaces_or_leading_dashes_stay_values():
    parsed = parse_launch_command(command(serve_args() + [
        "--seed", "-1", "--chat-template-content-format", "openai", "--override-generation-config",
        '{"stop": ["-- end"]}', "--served-model-name=my model", "--tool-call-parser", "--x y"]))
    assert parsed.flags["--seed"] == "-1"
    assert parsed.flags["--override-generation-config"] == '{"stop": ["-- end"]}'
    assert parsed.flags["--served-model-name"] == ["my model"]  # the last of the two wins
    assert parsed.flags["--tool-call-parser"] == "--x y"  # argparse: a dash word with a space is a value


def test_hostile_values_survive_quoting_as_single_literal_arguments(tmp_path):
    canary = tmp_path / "pwned"
    hostile_name = f"x'; touch {canary}; echo '"
    hostile_env = f"$(touch {canary})`touch {canary}`\"'\\ \n"[:-1]
    hostile_arg = '{"max_tokens": 5, "stop": ["; rm -rf /", "$(id)"]}'
    text = command(serve_args(served_model_name=hostile_name, override_generation_config=hostile_arg),
                   env={"NOTE": hostile_env})
    parsed = parse_launch_command(text)
    assert parsed.flags["--served-model-name"] == [hostile_name]
    assert parsed.flags["--override-generation-config"] == hostile_arg
    assert parsed.env["NOTE"] == hostile_env
    assert parsed.argv == tuple(shlex.split(text))
    # The node's shell reads the same argv as the pre-flight (only $HOME expands) and runs nothing.
    shown = subprocess.run(["/bin/sh", "-c", text.replace("docker", "printf '%s\\0'", 1)], capture_output=True,
                           env={"HOME": "/home/spark", "PATH": os.environ["PATH"]}, check=True).stdout
    expected = [arg.replace("$HOME", "/home/spark") for arg in parsed.argv[1:]]
    assert shown.decode().split("\0")[:-1] == expected
    assert not canary.exists()


@pytest.mark.parametrize("docker_part, image, options", [
    ("docker run -dit --rm=false -p8000:8000 -eA=1 -e B=2 --net=host", "img:1",
     [("--detach", None), ("--interactive", None), ("--tty", None), ("--rm", "false"), ("--publish", "8000:8000"),
      ("--env", "A=1"), ("--env", "B=2"), ("--network", "host")]),
    ("docker container run --gpus=all -v/a:/b --", "img:1",
     [("--gpus", "all"), ("--volume", "/a:/b")]),
    ("/usr/bin/docker --context spark run --runtime nvidia --entrypoint vllm", "img:1",
     [("--runtime", "nvidia"), ("--entrypoint", "vllm")]),
])
def test_docker_flags_are_told_apart_from_the_image(docker_part, image, options):
    rest = " serve m/x" if "--entrypoint" in docker_part else " vllm serve m/x"
    parsed = parse_launch_command(docker_part + " " + image + rest)
    assert (parsed.image, parsed.docker_options, parsed.model) == (image, tuple(options), "m/x")


@pytest.mark.parametrize("text, message", [
    ("podman run img vllm serve m/x",
     "not a docker command: it starts with podman run img ...; expected `docker run ... <image> vllm serve "
     "<model> ...`"),
    ("docker ps", "not `docker run`: the docker subcommand is 'ps'; expected `docker run ... <image> vllm serve "
                  "<model> ...`"),
    ("docker run -d --name x", "`docker run` has no image: the command ends after docker's flags"),
    ("docker run -d img python3 -m vllm.entrypoints.openai.api_server --model m/x",
     "the container command must be `vllm serve <model> ...`, got python3 -m vllm.entrypoints.openai.api_server "
     "--model ... after image 'img'"),
    ("docker run img", "the container command must be `vllm serve <model> ...`, got nothing (the image's default "
                       "command) after image 'img'"),
    ("docker run --gpu all img vllm serve m/x",
     "unknown docker run flag '--gpu': the pre-flight cannot tell where the image name starts; did you mean --gpus?"),
    ("docker run -z img vllm serve m/x", "unknown docker run flag -z in '-z'"),
    ("docker run --name", "docker flag --name has no value (it is the last argument)"),
    ("docker run img vllm serve 'm/x", "shlex cannot split the command: No closing quotation"),
])
def test_refuses_what_is_not_docker_run_vllm_serve(text, message):
    with pytest.raises(InvalidInput) as caught:
        parse_launch_command(text)
    assert caught.value.message == message
    verdict = check_launch([("spark1", text)])
    assert problems(verdict) == [f"spark1: {message}"] and not verdict.ok


@pytest.mark.parametrize("tail, hazard", [
    ("; touch /tmp/pwned", "the unquoted shell operator ';'"),
    ("&& curl x | sh", "the unquoted shell operator '&'; the unquoted shell operator '|'"),
    ("--served-model-name $(id)", "a $(...) command substitution"),
    ("--served-model-name `id`", "an unquoted backtick command substitution"),
    ('--served-model-name "$USER"', "the shell expansion $USER"),
    ("--served-model-name *", "the unquoted glob character '*' (the shell would expand it to file names)"),
    ("--served-model-name x\n--port 1", "an unquoted line break (the shell would start a second command)"),
    ("# --port 1", "an unquoted '#' (the shell would ignore the rest of the line)"),
    ("--port \\\n8001", "an unquoted backslash line continuation (the shell drops it, shlex keeps the newline)"),
    ("--download-dir ~/models", "an unquoted '~' (the shell would expand it to a home directory; use \"$HOME\")"),
])
def test_refuses_commands_the_shell_would_read_differently(tail, hazard):
    with pytest.raises(InvalidInput) as caught:
        parse_launch_command(command(serve_args()) + " " + tail)
    assert caught.value.message == (
        f"the command is not a plain quoted argument list: it contains {hazard}. The node's shell would run "
        "something else than what the pre-flight reads; build it with shellsafe.quote_args")


def test_strict_parse_raises_with_every_vllm_flag_problem_and_lenient_parse_returns_them():
    text = command(serve_args() + ["--max-model-length", "4096", "--enforce-eager=yes"])
    with pytest.raises(InvalidInput) as caught:
        parse_launch_command(text)
    assert caught.value.message == (f"--max-model-length is not a vLLM {V} flag; did you mean --max-model-len?; "
                                    "--enforce-eager=yes: --enforce-eager is a switch and takes no value")
    assert len(parse_launch_command(text, strict=False).problems) == 2


# ---------------------------------------------------------------- check 1: syntax


def test_a_typical_one_node_launch_passes_every_check():
    verdict = check_launch(one_node(), model_size_gb=16.4, node_facts={"spark1": idle_facts()})
    assert (verdict.ok, problems(verdict), warnings(verdict)) == (True, [], [])
    assert verdict.checked == ["syntax", "topology", "memory", "node facts"]
    body = verdict.to_dict()
    assert json.loads(json.dumps(body)) == body
    assert body["nodes"]["spark1"] == {"image": IMAGE, "model": "Qwen/Qwen3-8B", "container": "spark-control-qwen3-8b",
                                       "port": 8000, "headless": False, "tensor_parallel_size": 1,
                                       "pipeline_parallel_size": 1, "gpu_memory_utilization": 0.8}
    raise_for_problems(verdict)  # does not raise


@pytest.mark.parametrize("extra, changes, message", [
    (["--max-model-length", "4096"], {}, f"--max-model-length is not a vLLM {V} flag; did you mean --max-model-len?"),
    (["--enable-prefix-cache"], {}, f"--enable-prefix-cache is not a vLLM {V} flag; did you mean "
                                    "--enable-prefix-caching?"),
    (["--no-headless"], {}, f"--no-headless is not a vLLM {V} flag: --headless cannot be negated "
                            "(--headless is off unless given)"),
    (["--enable-p"], {}, f"--enable-p is ambiguous in vLLM {V}: it could be --enable-prefix-caching, "
                         "--enable-prompt-embeds, --enable-prompt-tokens-details"),
    (["--port"], {"port": None}, "--port needs a value (it is the last argument)"),
    (["--max-model-len", "--port", "8000"], {"max_model_len": None},
     "--max-model-len needs a value (it is followed by --port)"),
    ([], {"max_model_len": "lots"}, "--max-model-len lots: --max-model-len takes a whole number such as 32768, "
                                    "32k or 32K"),
    ([], {"max_model_len": "1.5K"}, "--max-model-len 1.5K: --max-model-len takes a whole number such as 32768, "
                                    "32k or 32K"),
    ([], {"tensor_parallel_size": "two"}, "--tensor-parallel-size two: --tensor-parallel-size takes a whole number"),
    ([], {"gpu_memory_utilization": "high"}, "--gpu-memory-utilization high: --gpu-memory-utilization takes a number"),
    ([], {"gpu_memory_utilization": "1.5"}, "--gpu-memory-utilization 1.5: --gpu-memory-utilization must be in "
                                            "(0, 1], e.g. 0.8"),
    ([], {"gpu_memory_utilization": "0"}, "--gpu-memory-utilization 0: --gpu-memory-utilization must be in (0, 1], "
                                          "e.g. 0.8"),
    ([], {"gpu_memory_utilization": "nan"}, "--gpu-memory-utilization nan: --gpu-memory-utilization must be a "
                                            "finite number"),
    ([], {"max_model_len": "0"}, "--max-model-len 0: --max-model-len must be a positive number of tokens, e.g. "
                                 "32768 or 32k"),
    ([], {"tensor_parallel_size": "0"}, "--tensor-parallel-size 0: --tensor-parallel-size must be at least 1"),
    ([], {"port": "70000"}, "--port 70000: --port must be a TCP port from 1 to 65535"),
    ([], {"kv_cache_dtype": "fp4"}, "--kv-cache-dtype fp4: --kv-cache-dtype must be one of auto, bfloat16, fp8, "
                                    "fp8_ds_mla, fp8_e4m3, fp8_e5m2, fp8_inc"),
    (["--enforce-eager=true"], {}, "--enforce-eager=true: --enforce-eager is a switch and takes no value"),
    (["extra"], {}, "unexpected argument 'extra': vllm serve takes one model ('Qwen/Qwen3-8B') and flags; is a flag "
                    "missing before it, or does a flag take no value?"),
    (["--help"], {}, "--help: vllm serve would print its help and exit instead of serving"),
    (["--model", "Qwen/Qwen3-4B"], {}, "the model is given twice ('Qwen/Qwen3-8B' and 'Qwen/Qwen3-4B' from --model)"),
])
def test_each_flag_problem_is_refused_with_a_precise_message(extra, changes, message):
    verdict = check_launch(one_node(*extra, **changes))
    assert problems(verdict) == [f"spark1: {message}"]
    assert verdict.problems[0].check == "syntax" and verdict.problems[0].node == "spark1"
    assert verdict.checked == ["syntax"]  # later checks wait until the command reads right


def test_a_model_swallowed_by_a_list_flag_is_explained():
    args = ["--served-model-name", "qwen3-8b", "Qwen/Qwen3-8B", "--port", "8000"]
    verdict = check_launch([("spark1", command(args))])
    assert problems(verdict) == [
        "spark1: no model: `vllm serve` has no model argument and would serve its default Qwen/Qwen3-0.6B "
        "(--served-model-name takes every value up to the next flag, so it swallowed Qwen/Qwen3-8B; put the model "
        "first)"]


def test_accepted_but_doubtful_spellings_are_warnings():
    verdict = check_launch(one_node("--max-num-seq", "64", "--task", "generate", "--port", "8001",
                                    "--disable-log-requests"))
    assert verdict.ok
    assert warnings(verdict) == [
        f"spark1: --max-num-seq is an abbreviation that vLLM {V} reads as --max-num-seqs; write the full name",
        f"spark1: --task is deprecated in vLLM {V}",
        f"spark1: --disable-log-requests is deprecated in vLLM {V}",
        "spark1: --port is given 2 times (--port '8000', --port '8001'); vLLM uses the last one"]
    assert verdict.parsed["spark1"].flags["--port"] == "8001"


def test_a_container_without_gpus_is_warned_about():
    text = command(serve_args()).replace(" --gpus all", "")
    verdict = check_launch([("spark1", text)])
    assert verdict.ok and warnings(verdict) == [
        "spark1: docker run has no --gpus (nor --runtime nvidia): the container may see no GPU"]


# ---------------------------------------------------------------- check 2: topology


def test_tensor_parallel_larger_than_the_placement_is_refused():
    verdict = check_launch(one_node(tensor_parallel_size="2"))
    assert problems(verdict) == [
        "--tensor-parallel-size 2 x --pipeline-parallel-size 1 = 2 GPUs, but placement spark1 has 1 GPU "
        "(1 node x 1 GPU); use --tensor-parallel-size 1 --pipeline-parallel-size 1, or place it on 2 nodes"]
    assert verdict.problems[0].check == "topology" and verdict.problems[0].node is None


def test_two_nodes_with_one_gpu_of_parallelism_are_refused():
    head, worker = two_node_args(0, tensor_parallel_size="1"), two_node_args(1, tensor_parallel_size="1")
    verdict = check_launch(two_node(head, worker))
    assert problems(verdict) == [
        "--tensor-parallel-size 1 x --pipeline-parallel-size 1 = 1 GPUs, but placement spark1+spark2 has 2 GPUs "
        "(2 nodes x 1 GPU); use --tensor-parallel-size 2 --pipeline-parallel-size 1 or --tensor-parallel-size 1 "
        "--pipeline-parallel-size 2, or place it on 1 nodes"]


def test_a_typical_two_node_launch_passes():
    facts = {"spark1": idle_facts(), "spark2": idle_facts()}
    verdict = check_launch(two_node(), model_size_gb=125.0, node_facts=facts)
    assert (verdict.ok, problems(verdict), warnings(verdict)) == (True, [], [])
    assert verdict.parsed["spark2"].headless and verdict.parsed["spark2"].env["VLLM_HOST_IP"] == FABRIC["spark2"]
    # pipeline parallel across the two nodes is just as valid
    pp = [two_node_args(r, tensor_parallel_size="1", pipeline_parallel_size="2") for r in (0, 1)]
    assert check_launch(two_node(*pp), model_size_gb=125.0).ok


@pytest.mark.parametrize("head_changes, worker_changes, worker_extra, expected", [
    ({"nnodes": "3"}, {"nnodes": "3"}, [],
     ["spark1: --nnodes 3 but the placement (spark1+spark2) has 2 nodes; use --nnodes 2",
      "spark2: --nnodes 3 but the placement (spark1+spark2) has 2 nodes; use --nnodes 2"]),
    ({}, {"nnodes": None}, [],
     ["spark2: --nnodes 1 differs from spark1's --nnodes 2; every node must agree",
      "spark2: no --nnodes: a 2-node launch needs --nnodes 2 on every node"]),
    ({}, {"node_rank": "0"}, [],
     ["spark2: --node-rank 0 is also spark1's; ranks must be 0..1, each once",
      "spark2: --node-rank 0 with --headless: the rank-0 node serves the API and must not be headless"]),
    ({}, {"node_rank": None}, [],
     ["spark2: no --node-rank: vLLM would take rank 0, the same as spark1; use --node-rank 1",
      "spark2: --node-rank 0 is also spark1's; ranks must be 0..1, each once",
      "spark2: --node-rank 0 with --headless: the rank-0 node serves the API and must not be headless"]),
    ({}, {"node_rank": "5"}, [], ["spark2: --node-rank 5 is outside 0..1 for 2 nodes"]),
    ({}, {"master_addr": "192.168.100.99"}, [],
     ["spark2: --master-addr 192.168.100.99 differs from spark1's --master-addr 192.168.100.10; every node must "
      "agree"]),
    ({"master_addr": None}, {"master_addr": None}, [],
     ["spark1: no --master-addr: vLLM would use its default 127.0.0.1, which the other nodes cannot reach; use the "
      "rank-0 node's fabric address",
      "spark2: no --master-addr: vLLM would use its default 127.0.0.1, which the other nodes cannot reach; use the "
      "rank-0 node's fabric address"]),
    ({}, {"master_port": "29600"}, [],
     ["spark2: --master-port 29600 differs from spark1's --master-port 29501; every node must agree"]),
    ({}, {"tensor_parallel_size": "1", "pipeline_parallel_size": "2"}, [],
     ["spark2: --tensor-parallel-size 1 differs from spark1's --tensor-parallel-size 2; every node must agree",
      "spark2: --pipeline-parallel-size 2 differs from spark1's --pipeline-parallel-size 1; every node must agree"]),
])
def test_multi_node_layout_problems_name_the_node_and_the_flag(head_changes, worker_changes, worker_extra,
                                                                expected):
    verdict = check_launch(two_node(two_node_args(0, **head_changes), two_node_args(1, **worker_changes)))
    assert problems(verdict) == expected
    assert {p.check for p in verdict.problems} == {"topology"}


def test_a_worker_without_headless_and_a_different_model_are_refused():
    worker = two_node_args(1, model="Qwen/Qwen3-32B")[:-1]  # drop --headless
    verdict = check_launch(two_node(worker=worker))
    assert problems(verdict) == [
        "spark2: serves model 'Qwen/Qwen3-32B' but spark1 serves 'Qwen/Qwen3-235B-A22B-GPTQ-Int4'; every node of a "
        "launch must serve the same model",
        "spark2: --node-rank 1 without --headless: every worker node needs --headless (only rank 0 serves the API)"]


def test_nodes_on_different_images_are_refused():
    commands = two_node()
    commands[1] = ("spark2", commands[1][1].replace(IMAGE, "nvcr.io/nvidia/vllm:25.11-py3"))
    assert problems(check_launch(commands)) == [
        "spark2: runs image nvcr.io/nvidia/vllm:25.11-py3 but spark1 runs nvcr.io/nvidia/vllm:25.09-py3; mixed vLLM "
        "versions cannot form one engine"]


def test_single_node_with_multi_node_flags_is_refused():
    verdict = check_launch(one_node("--nnodes", "2", "--headless"))
    assert problems(verdict) == [
        "spark1: --nnodes 2 but the placement has 1 node; drop --nnodes or place the model on 2 nodes",
        "spark1: --headless on a single node: nothing would serve the API"]


def test_the_same_node_twice_is_refused():
    verdict = check_launch(two_node()[:1] * 2)
    assert "spark1: appears more than once in the placement" in problems(verdict)


# ---------------------------------------------------------------- check 3: memory


def test_weights_larger_than_the_memory_budget_are_refused_with_the_figures():
    verdict = check_launch(one_node(), model_size_gb=240.0)
    assert problems(verdict) == [
        "the weights need 240.0 GB but --gpu-memory-utilization 0.8 x 121.0 GB usable x 1 node = 96.8 GB; "
        "place it on 3 nodes"]
    assert verdict.problems[0].check == "memory"
    verdict = check_launch(one_node(), model_size_gb=200.0)
    assert problems(verdict) == [
        "the weights need 200.0 GB but --gpu-memory-utilization 0.8 x 121.0 GB usable x 1 node = 96.8 GB; "
        "place it on 3 nodes or on 2 nodes with --gpu-memory-utilization 0.83"]


def test_weights_that_fit_with_a_higher_utilization_say_so():
    verdict = check_launch(one_node(), model_size_gb=100.0)
    assert problems(verdict) == [
        "the weights need 100.0 GB but --gpu-memory-utilization 0.8 x 121.0 GB usable x 1 node = 96.8 GB; "
        "raise --gpu-memory-utilization to at least 0.83 or place it on 2 nodes"]


def test_two_nodes_add_their_memory_and_a_tight_fit_is_a_warning():
    assert check_launch(two_node(), model_size_gb=200.0).ok  # 0.85 x 121 x 2 = 205.7
    verdict = check_launch(one_node(), model_size_gb=95.5)
    assert verdict.ok and warnings(verdict) == [
        "the weights (95.5 GB) leave only 1.3 GB per node for the KV cache within --gpu-memory-utilization 0.8; "
        "vLLM may refuse to start ('No available memory for the cache blocks')"]


# ---------------------------------------------------------------- check 4: node facts


def test_memory_the_node_does_not_have_free_is_refused():
    busy = idle_facts(mem_available_bytes=int(60.2 * GIB), running_containers=["spark-control-gpt-oss-20b"])
    verdict = check_launch(one_node(), model_size_gb=16.4, node_facts={"spark1": busy})
    assert problems(verdict) == [
        "spark1: 60.2 GB available (MemAvailable), but --gpu-memory-utilization 0.8 x 121.0 GB = 96.8 GB plus 4.0 GB "
        "headroom = 100.8 GB is needed; lower --gpu-memory-utilization to at most 0.46, or free memory on spark1; "
        "running containers: spark-control-gpt-oss-20b"]
    # weights that would not fit the lowered utilization: only freeing memory helps
    verdict = check_launch(one_node(), model_size_gb=60.0, node_facts={"spark1": busy})
    assert problems(verdict)[0].endswith("is needed; free memory on spark1 (stop what runs there); running "
                                         "containers: spark-control-gpt-oss-20b")


def test_a_port_already_listening_is_refused_naming_what_holds_it():
    facts = idle_facts(listening_ports={22, 8000, 8001}, listeners=[("0.0.0.0", 8000), ("127.0.0.1", 8001)],
                       port_owners={8000: "container spark-control-qwen3-4b"})
    verdict = check_launch(one_node(), node_facts={"spark1": facts})
    assert problems(verdict) == ["spark1: --port 8000 is already listening (held by container "
                                 "spark-control-qwen3-4b); stop what holds it or use --port 8002"]
    assert verdict.problems[0].check == "port"
    # a listener on another specific address does not clash with --host <this address>
    assert check_launch(one_node(host="192.168.1.20"), node_facts={"spark1": idle_facts(
        listening_ports={8000}, listeners=[("127.0.0.1", 8000)])}).ok


def test_the_master_port_must_be_free_on_the_rank_0_node_only():
    taken = idle_facts(listening_ports={29501}, listeners=[("0.0.0.0", 29501)])
    verdict = check_launch(two_node(), node_facts={"spark1": taken, "spark2": idle_facts()})
    assert problems(verdict) == ["spark1: --master-port 29501 is already listening; stop what holds it or use "
                                 "--master-port 29502"]
    # the headless worker serves no API: a busy port 8000 there is no problem
    busy = idle_facts(listening_ports={8000, 29501}, listeners=[("0.0.0.0", 8000), ("0.0.0.0", 29501)])
    assert check_launch(two_node(), node_facts={"spark1": idle_facts(), "spark2": busy}).ok


def test_an_image_that_is_missing_and_cannot_be_pulled_is_refused():
    verdict = check_launch(one_node(), node_facts={"spark1": idle_facts(images_present=set(), can_pull=False)})
    assert problems(verdict) == [
        f"spark1: image {IMAGE} is not on the node and cannot be pulled there; pull or load it on spark1 first "
        f"(docker pull {IMAGE})"]
    verdict = check_launch(one_node(), node_facts={"spark1": idle_facts(images_present=set(), can_pull=None)})
    assert verdict.ok and warnings(verdict) == [
        f"spark1: image {IMAGE} is not on the node yet: docker will pull it before starting (several GB; the launch "
        "waits for it)"]


def test_a_running_container_with_the_same_name_is_refused():
    verdict = check_launch(one_node(), node_facts={"spark1": idle_facts(running_containers=["spark-control-qwen3-8b"])})
    assert problems(verdict) == ["spark1: a container named spark-control-qwen3-8b is already running; stop it "
                                 "first (docker stop spark-control-qwen3-8b) or swap to this model"]
    verdict = check_launch(one_node(), node_facts={"spark1": idle_facts(stopped_containers=["spark-control-qwen3-8b"])})
    assert verdict.ok and warnings(verdict) == [
        "spark1: a stopped container named spark-control-qwen3-8b exists: it must be removed (docker rm "
        "spark-control-qwen3-8b) before docker run can reuse the name"]


def test_missing_facts_are_warnings_not_silent_passes():
    facts = idle_facts(problems=["images unchecked: docker failed (exit 1): permission denied"], images_present=set())
    verdict = check_launch(two_node(), node_facts={"spark1": facts})
    assert verdict.ok
    assert warnings(verdict) == [
        "spark1: could not check everything: images unchecked: docker failed (exit 1): permission denied",
        "spark2: no facts were gathered for this node: memory, port and image were not checked there"]


def test_raise_for_problems_joins_every_message_into_one_400():
    verdict = check_launch(one_node("--max-model-length", "4096", gpu_memory_utilization="1.5"))
    with pytest.raises(InvalidInput) as caught:
        raise_for_problems(verdict)
    assert caught.value.status == 400 and caught.value.field == "preflight"
    assert caught.value.message == (
        f"pre-flight refused the launch (2 problems): spark1: --max-model-length is not a vLLM {V} flag; did you "
        "mean --max-model-len?; spark1: --gpu-memory-utilization 1.5: --gpu-memory-utilization must be in (0, 1], "
        "e.g. 0.8")


# ---------------------------------------------------------------- node facts: script and parser

SS_OUTPUT = """\
LISTEN 0      4096         0.0.0.0:8000       0.0.0.0:*    users:(("python3",pid=4242,fd=27))
LISTEN 0      128          0.0.0.0:22         0.0.0.0:*
LISTEN 0      4096   127.0.0.53%lo:53         0.0.0.0:*
LISTEN 0      4096            [::]:22            [::]:*
LISTEN 0      511                *:9999             *:*
LISTEN 0      4096    [fe80::1%enp1s0f1np1]:29501    [::]:*
"""

PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 81234 1 0000000000000000 100 0 0 10 0
   1: 0100007F:7531 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 81240 1 0000000000000000 100 0 0 10 0
   2: 0A64A8C0:0016 0B64A8C0:D431 01 00000000:00000000 02:000AFC6B 00000000     0        0 91234 4 0000000000000000 20 4 30 10 -1
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 81300 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:2382 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 81301 1 0000000000000000 100 0 0 10 0
"""


def facts_output(**bodies: tuple[str, int]) -> str:
    """What NODE_FACTS_COMMAND prints: one marked section per fact."""
    return "".join(f"@@spark-control:{name}@@\n{text}\n@@spark-control:rc={rc}@@\n" for name, (text, rc) in
                   bodies.items())


def test_parse_listening_ports_from_ss():
    listeners, owners, source = parse_listening_ports(SS_OUTPUT)
    assert source == "ss"
    assert listeners == [("0.0.0.0", 8000), ("0.0.0.0", 22), ("127.0.0.53", 53), ("::", 22), ("*", 9999),
                         ("fe80::1", 29501)]
    assert owners == {8000: "process python3 (pid 4242)"}


def test_parse_listening_ports_from_proc_net_tcp_keeps_only_listeners():
    listeners, owners, source = parse_listening_ports(PROC_NET_TCP)
    assert source == "/proc/net/tcp"
    assert listeners == [("0.0.0.0", 8000), ("127.0.0.1", 30001), ("::", 8080), ("127.0.0.1", 9090)]
    assert owners == {}


def test_parse_node_facts_from_captured_style_output():
    text = facts_output(
        meminfo=((FIXTURES / "meminfo.txt").read_text(), 0),
        ports=(SS_OUTPUT, 0),
        images=("nvcr.io/nvidia/vllm:25.09-py3\nvllm/vllm-openai:latest\n<none>:<none>\n", 0),
        containers=("spark-control-qwen3-8b|running|8000\nopen-webui|running|\nold-run|exited|8001\n", 0))
    facts = parse_node_facts(text)
    assert facts.mem_available_bytes == 118566368 * 1024 and facts.mem_total_bytes == 127600748 * 1024
    assert facts.listening_ports == {8000, 22, 53, 9999, 29501}
    assert facts.port_owners == {8000: "container spark-control-qwen3-8b"}  # the container beats the process
    assert facts.images_present == {"nvcr.io/nvidia/vllm:25.09-py3", "vllm/vllm-openai:latest"}
    assert facts.running_containers == ["spark-control-qwen3-8b", "open-webui"]
    assert facts.stopped_containers == ["old-run"]
    assert (facts.ports_source, facts.problems, facts.can_pull) == ("ss", [], None)
    assert json.loads(json.dumps(facts.to_dict()))["listening_ports"] == [22, 53, 8000, 9999, 29501]


def test_parse_node_facts_reports_what_it_could_not_gather():
    denied = ("permission denied while trying to connect to the Docker daemon socket at "
              "unix:///var/run/docker.sock: Get \"http://%2Fvar%2Frun%2Fdocker.sock/v1.47/images/json\": dial unix "
              "/var/run/docker.sock: connect: permission denied")
    text = facts_output(meminfo=("garbage", 0), ports=(PROC_NET_TCP, 0), images=(denied, 1),
                        containers=("sh: 1: docker: not found", 127))
    facts = parse_node_facts(text)
    assert facts.mem_available_bytes is None and facts.listening_ports == {8000, 30001, 8080, 9090}
    assert facts.problems == [
        "meminfo unchecked: no MemTotal or MemAvailable line in /proc/meminfo output",
        f"images unchecked: docker failed (exit 1): {denied} (add the SSH user to the 'docker' group)",
        "containers unchecked: docker not found on the node"]
    cut = parse_node_facts(facts_output(meminfo=((FIXTURES / "meminfo.txt").read_text(), 0))[:-25])
    assert cut.problems == ["meminfo unchecked: /proc/meminfo: output cut off before the command finished",
                            "ports unchecked: no output (the facts script did not reach this section)",
                            "images unchecked: no output (the facts script did not reach this section)",
                            "containers unchecked: no output (the facts script did not reach this section)"]
    assert parse_node_facts("Permission denied (publickey).").problems == [
        "no fact sections in the node's output: Permission denied (publickey)."]


def _listening_socket() -> tuple[socket.socket, int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    return server, server.getsockname()[1]


def test_the_facts_script_runs_under_bin_sh_on_this_machine():
    assert "{{.Repository}}:{{.Tag}}" in NODE_FACTS_SCRIPT and NODE_FACTS_COMMAND.startswith("sh -c '")
    server, port = _listening_socket()
    try:
        run = subprocess.run(["/bin/sh", "-c", NODE_FACTS_SCRIPT], capture_output=True, text=True, timeout=60)
        via_command = subprocess.run(NODE_FACTS_COMMAND, shell=True, capture_output=True, text=True, timeout=60)
    finally:
        server.close()
    assert run.returncode == 0 and run.stderr == ""
    facts = parse_node_facts(run.stdout)
    assert facts.mem_available_bytes and 0 < facts.mem_available_bytes <= facts.mem_total_bytes
    assert port in facts.listening_ports and ("127.0.0.1", port) in facts.listeners
    assert facts.ports_source == ("ss" if shutil.which("ss") else "/proc/net/tcp")
    assert not [p for p in facts.problems if not p.startswith(("images unchecked", "containers unchecked"))]
    assert port in parse_node_facts(via_command.stdout).listening_ports


def test_the_facts_script_falls_back_to_proc_net_tcp_without_ss(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("cat", "timeout"):  # no ss, no docker
        (bin_dir / tool).symlink_to(shutil.which(tool))
    server, port = _listening_socket()
    try:
        run = subprocess.run(["/bin/sh", "-c", NODE_FACTS_SCRIPT], capture_output=True, text=True, timeout=60,
                             env={"PATH": str(bin_dir)})
    finally:
        server.close()
    facts = parse_node_facts(run.stdout)
    assert facts.ports_source == "/proc/net/tcp"
    assert ("127.0.0.1", port) in facts.listeners
    assert facts.problems == ["images unchecked: docker not found on the node",
                              "containers unchecked: docker not found on the node"]


@pytest.mark.parametrize("reference, listed", [
    ("nvcr.io/nvidia/vllm:25.09-py3", "nvcr.io/nvidia/vllm:25.09-py3"),
    ("vllm/vllm-openai", "vllm/vllm-openai:latest"),
    ("docker.io/vllm/vllm-openai:v0.11.2", "vllm/vllm-openai:v0.11.2"),
    ("docker.io/library/ubuntu", "ubuntu:latest"),
    ("localhost:5000/vllm-node", "localhost:5000/vllm-node:latest"),
])
def test_normalize_image_matches_docker_images_output(reference, listed):
    assert normalize_image(reference) == listed
