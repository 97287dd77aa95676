"""What does the gateway cost? spark-control vs LiteLLM's proxy vs no gateway, same upstream, one run.

    cd image && .venv/bin/python ../bench/proxy_overhead.py [--quick] [--json OUT]

Every process is started here, on loopback, and stopped in a `finally`:

  - two upstreams (raw asyncio HTTP/1.1 servers, OpenAI chat-completions shaped): `fast` answers
    32 tokens at once (non-stream) or as 32 SSE chunks written back to back; `paced` waits 20 ms
    before each token (a real model's pace: the non-streamed answer comes after 640 ms);
  - spark-control: `create_app()` under uvicorn in its own process, as `uvicorn app.server:app`
    runs it (same defaults: access log on), with two READY deployments pointing at the upstreams
    (registered after start-up, the way the lifecycle would after a launch);
  - LiteLLM's proxy (`litellm --config ... --num_workers 1`), installed by this script in its
    own venv (bench/.venv-litellm, git-ignored) and run offline
    (LITELLM_LOCAL_MODEL_COST_MAP=True, LITELLM_MASTER_KEY);
  - a load generator per cell (its own process: a raw asyncio HTTP/1.1 client, closed loop,
    one keep-alive connection per concurrent client).

With two cores, each gateway is pinned to CPU 1 and the upstreams and the load generator to
CPU 0. A cell runs its clients for a fixed time, then lets the requests in flight finish.
Columns:
  req/s          the sum over clients of (requests it completed / time until its last one
                 ended): a closed loop's steady rate, free of the end-of-run quantisation that
                 paced clients finishing in lockstep would cause
  p50/p99, TTFT  per request, in the load generator; TTFT = first body chunk of a stream
  gw CPU ms/req  the gateway process tree's CPU time over the cell / completed requests, from
                 the scheduler's nanosecond count (/proc/<pid>/task/*/schedstat); utime+stime
                 of /proc/<pid>/stat is tick-sampled on this kernel and kept as a cross-check
                 in --json (gw_stat_cpu_ms)
  upstream CPU   the upstreams' own CPU per request: the least a process that handles the same
                 bytes on this machine can cost (a floor, useful at low load)
  gw core %      gateway CPU / wall time (100 = its core was saturated)
  gw runq %      time the gateway was runnable but waiting for its CPU (other work on a shared
                 machine): when it is high, latency and req/s say more about the machine
  core0 %        upstreams + load generator CPU / wall time: near 100, the generator side, not
                 the gateway, set the pace
Idle CPU of each gateway (timers, housekeeping) is measured first and reported; the verdicts
also give the CPU ratio net of it, since at concurrency 1 on the paced upstream a request
lasts 640 ms and idle time is a visible share. --sc-python runs spark-control under another
interpreter (e.g. one with uvloop and httptools), --sc-image-dir another copy of its code.
Loopback only; every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
IMAGE_DIR = BENCH_DIR.parent / "image"
LITELLM_VENV = BENCH_DIR / ".venv-litellm"
# The newest litellm[proxy] whose proxy extras install from PyPI here (1.108.1 and later pin
# litellm-proxy-extras builds that are not published, 1.110 needs `litellm-proxy`).
LITELLM_SPEC = "litellm[proxy]==1.108.0"
LITELLM_KEY = "sk-bench-proxy-overhead"

TOKENS = 32
PACE_S = 0.020
FAST_MODEL = "gpt-oss-20b"       # catalog names: clients ask for them, the upstream serves them
PACED_MODEL = "qwen3-30b-a3b"
GATEWAY_CPU = 1                  # gateways get CPU 1; upstreams and the load generator CPU 0
LOADGEN_CPU = 0
REQUEST_TIMEOUT_S = 60.0         # a request slower than this is an error, and the cell ends anyway
CONCURRENCIES = (1, 16, 64, 256)
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------
# Upstream: a small, fast OpenAI-shaped server (asyncio.Protocol, no framework).

class _UpstreamData:
    def __init__(self, served: str) -> None:
        words = [f"tok{i} " for i in range(TOKENS)]
        chunks = []
        for i, word in enumerate(words):
            delta = {"role": "assistant", "content": word} if i == 0 else {"content": word}
            event = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
                     "model": served, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                   "finish_reason": "stop" if i == TOKENS - 1 else None}]}
            chunks.append(_http_chunk(b"data: " + json.dumps(event).encode() + b"\n\n"))
        chunks[-1] += _http_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
        self.stream_chunks = chunks
        self.stream_head = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
                            b"transfer-encoding: chunked\r\n\r\n")
        body = json.dumps({"id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000,
                           "model": served, "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                                                         "message": {"role": "assistant",
                                                                     "content": "".join(words)}}],
                           "usage": {"prompt_tokens": 12, "completion_tokens": TOKENS,
                                     "total_tokens": 12 + TOKENS}}).encode()
        self.plain = _http_response(body)
        self.models = _http_response(json.dumps({"object": "list", "data": [
            {"id": served, "object": "model", "created": 1700000000, "owned_by": "bench"}]}).encode())
        self.bad = _http_response(b'{"error": {"message": "bad request", "type": "invalid_request_error"}}',
                                  b"400 Bad Request")


def _http_chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _http_response(body: bytes, status: bytes = b"200 OK") -> bytes:
    return (b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
            % (status, len(body))) + body


class _UpstreamProtocol(asyncio.Protocol):
    def __init__(self, data: _UpstreamData, pace_s: float) -> None:
        self.data = data
        self.pace_s = pace_s
        self.buf = b""
        self.busy = False
        self.closed = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc) -> None:
        self.closed = True

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._serve()

    def _serve(self) -> None:
        while not self.busy and not self.closed:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            total = end + 4 + length
            if len(self.buf) < total:
                return
            body, self.buf = self.buf[end + 4:total], self.buf[total:]
            if not head.startswith(b"POST "):
                self.transport.write(self.data.models)
                continue
            try:
                stream = json.loads(body).get("stream") is True
            except (ValueError, AttributeError):
                self.transport.write(self.data.bad)
                continue
            if self.pace_s:
                self.busy = True
                asyncio.get_running_loop().create_task(self._paced(stream))
            elif stream:
                write = self.transport.write
                write(self.data.stream_head)
                for chunk in self.data.stream_chunks:   # 32 writes: 32 chunks, no delay
                    write(chunk)
            else:
                self.transport.write(self.data.plain)

    async def _paced(self, stream: bool) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            if stream:
                self.transport.write(self.data.stream_head)
                for i, chunk in enumerate(self.data.stream_chunks):
                    await asyncio.sleep(max(0.0, start + (i + 1) * self.pace_s - loop.time()))
                    if self.closed:
                        return
                    self.transport.write(chunk)
            else:
                await asyncio.sleep(TOKENS * self.pace_s)
                if self.closed:
                    return
                self.transport.write(self.data.plain)
        finally:
            self.busy = False
        self._serve()


def _ready(path: str) -> None:
    Path(path).write_text("ready\n")


def run_upstream(port: int, served: str, pace_s: float, ready_file: str) -> None:
    async def main() -> None:
        data = _UpstreamData(served)
        server = await asyncio.get_running_loop().create_server(
            lambda: _UpstreamProtocol(data, pace_s), "127.0.0.1", port, backlog=1024, reuse_address=True)
        _ready(ready_file)
        async with server:
            await server.serve_forever()
    asyncio.run(main())


# --------------------------------------------------------------------------------------------
# spark-control, as `uvicorn app.server:app` runs it, with two READY deployments.

def run_spark_control(port: int, data_dir: str, upstreams: dict[str, str], ready_file: str,
                      image_dir: str | None = None) -> None:
    sys.path.insert(0, image_dir or str(IMAGE_DIR))
    import uvicorn

    from app.server import create_app
    from app.settings import Settings
    from app.swap import Deployment, State

    environ = {"DATA_DIR": data_dir, "CONNECTIVITY_INTERVAL_S": "3600"}   # no nodes: nothing to probe
    app = create_app(Settings.from_env(environ=environ))
    # uvicorn's own defaults, as with `uvicorn app.server:app --host 127.0.0.1 --port P` (access log on).
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, backlog=2048))

    async def main() -> None:
        serving = asyncio.create_task(server.serve())
        while not server.started:
            if serving.done():
                serving.result()
                raise SystemExit("spark-control did not start")
            await asyncio.sleep(0.02)
        for model, url in upstreams.items():
            app.state.lifecycle.register(Deployment(
                model=model, served_name=model, nodes=("spark1",), endpoint=url, containers={},
                capabilities=("chat", "completions"), state=State.READY))
        loop_name = type(asyncio.get_running_loop()).__module__.split(".")[0]
        print(f"spark-control: event loop {loop_name}, HTTP protocol {config.http_protocol_class.__name__}",
              flush=True)
        _ready(ready_file)
        await serving

    # The event loop uvicorn itself would pick (uvloop when installed), as `uvicorn app.server:app` does.
    config = server.config
    config.load()
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(main())


# --------------------------------------------------------------------------------------------
# Load generator: raw HTTP/1.1 over asyncio, one keep-alive connection per client.

class _Client(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.fut: asyncio.Future | None = None
        self.lost = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc) -> None:
        self.lost = True
        if self.fut is not None and not self.fut.done():
            self.fut.set_exception(ConnectionError("connection closed mid-response"))

    def send(self, request: bytes) -> asyncio.Future:
        self.buf = b""
        self.state = 0             # 0 head, 1 body by length, 2 chunk size, 3 chunk data, 4 trailer
        self.status = 0
        self.remaining = 0
        self.body = []
        self.first_chunk_at = 0.0
        self.fut = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.fut

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        buf = self.buf + data
        while True:
            if self.state == 0:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                head = buf[:end].split(b"\r\n")
                buf = buf[end + 4:]
                self.status = int(head[0].split(b" ", 2)[1])
                chunked, length = False, 0
                for line in head[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"transfer-encoding" and b"chunked" in value.lower():
                        chunked = True
                if chunked:
                    self.state = 2
                else:
                    self.state, self.remaining = 1, length
            elif self.state == 1:
                if len(buf) < self.remaining:
                    break
                self.body.append(buf[:self.remaining])
                buf = buf[self.remaining:]
                self._done(now)
                break
            elif self.state == 2:
                end = buf.find(b"\r\n")
                if end < 0:
                    break
                size = int(buf[:end].split(b";")[0], 16)
                buf = buf[end + 2:]
                if size == 0:
                    self.state = 4
                else:
                    self.state, self.remaining = 3, size
            elif self.state == 3:
                if len(buf) < self.remaining + 2:
                    break
                if not self.first_chunk_at:
                    self.first_chunk_at = now
                self.body.append(buf[:self.remaining])
                buf = buf[self.remaining + 2:]
                self.state = 2
            else:  # trailers (none expected), then the final CRLF
                end = buf.find(b"\r\n")
                if end < 0:
                    break
                line, buf = buf[:end], buf[end + 2:]
                if not line:
                    self._done(now)
                    break
        self.buf = buf

    def _done(self, now: float) -> None:
        if self.fut is not None and not self.fut.done():
            self.fut.set_result((self.status, b"".join(self.body), self.first_chunk_at, now))


def _request_bytes(port: int, model: str, stream: bool, key: str | None) -> bytes:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Count to 32, one word each."}],
                       "max_tokens": TOKENS, "stream": stream}).encode()
    auth = b"authorization: Bearer %s\r\n" % key.encode() if key else b""
    return (b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: application/json\r\n"
            b"accept: */*\r\n%scontent-length: %d\r\n\r\n" % (port, auth, len(body))) + body


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


def _valid(status: int, body: bytes, stream: bool) -> bool:
    if status != 200 or f"tok{TOKENS - 1}".encode() not in body:
        return False
    return not stream or (b"[DONE]" in body and body.count(b"data: ") >= TOKENS)


def run_loadgen(spec: dict) -> None:
    """Reads `go` on stdin after the warm-up, prints one JSON result line."""
    port, stream, concurrency = spec["port"], spec["stream"], spec["concurrency"]
    request = _request_bytes(port, spec["model"], stream, spec.get("key"))

    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def connect() -> _Client:
            _, client = await loop.create_connection(_Client, "127.0.0.1", port)
            return client

        clients = list(await asyncio.gather(*(connect() for _ in range(concurrency))))
        latencies: list[float] = []
        ttfts: list[float] = []
        errors: list[str] = []
        go = asyncio.Event()
        state = {"deadline": 0.0, "start": 0.0, "last_end": 0.0, "warmed": 0}

        done_by = [0] * concurrency          # per client: requests completed, last completion
        last_by = [0.0] * concurrency

        async def one(i: int, record: bool) -> None:
            client = clients[i]
            if client.lost:
                client = clients[i] = await connect()
            started = time.perf_counter()
            try:
                status, body, first, ended = await client.send(request)
            except ConnectionError as exc:
                if record:
                    errors.append(str(exc))
                return
            if not record:
                return
            if not _valid(status, body, stream):
                errors.append(f"HTTP {status}: {body[:200]!r}")
                return
            latencies.append(ended - started)
            if stream:
                ttfts.append(first - started)
            state["last_end"] = max(state["last_end"], ended)
            done_by[i] += 1
            last_by[i] = ended

        async def worker(i: int) -> None:
            for _ in range(spec["warmup_per_client"]):
                await one(i, record=False)
            state["warmed"] += 1
            await go.wait()
            while time.perf_counter() < state["deadline"]:
                await one(i, record=True)

        workers = [asyncio.create_task(worker(i)) for i in range(concurrency)]
        warm_deadline = time.perf_counter() + REQUEST_TIMEOUT_S * 2
        while state["warmed"] < concurrency and time.perf_counter() < warm_deadline:
            await asyncio.sleep(0.02)
        print(json.dumps({"ready": True}), flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        cpu0 = time.process_time()
        state["start"] = time.perf_counter()
        state["deadline"] = state["start"] + spec["duration_s"]
        go.set()
        done, pending = await asyncio.wait(workers, timeout=spec["duration_s"] + REQUEST_TIMEOUT_S)
        for w in pending:
            w.cancel()
            errors.append("timed out")
        wall = (state["last_end"] or time.perf_counter()) - state["start"]
        # Each client's own rate (its requests / the time until its last one ended), summed: a
        # steady closed loop's throughput, without the quantisation of "everyone's last request"
        # (all clients of a paced cell finish in lockstep, ~640 ms apart).
        rate = sum(n / (last - state["start"]) for n, last in zip(done_by, last_by) if n)
        latencies.sort()
        ttfts.sort()
        print(json.dumps({
            "n": len(latencies), "errors": len(errors), "error_sample": errors[:3], "wall_s": wall,
            "rps": rate,
            "p50_ms": _ms(_percentile(latencies, 0.50)), "p99_ms": _ms(_percentile(latencies, 0.99)),
            "ttft_p50_ms": _ms(_percentile(ttfts, 0.50)), "ttft_p99_ms": _ms(_percentile(ttfts, 0.99)),
            "loadgen_cpu_s": time.process_time() - cpu0}), flush=True)
        for c in clients:
            c.transport.close()

    asyncio.run(main())


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


# --------------------------------------------------------------------------------------------
# The orchestrator.

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pinned(cpu: int):
    cpus = {cpu} if cpu in os.sched_getaffinity(0) else None
    return (lambda: os.sched_setaffinity(0, cpus)) if cpus else None


def _tree(pid: int) -> list[int]:
    """pid and every descendant (LiteLLM may fork workers)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                parents.setdefault(int(fields[1]), []).append(int(entry))
            except (OSError, IndexError):
                continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, ()))
    return out


def _sched(pids: list[int]) -> tuple[float, float]:
    """(CPU seconds, seconds spent runnable but waiting for a CPU) of these processes' threads."""
    run = wait = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                    fields = f.read().split()
                run += int(fields[0])
                wait += int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    return run / 1e9, wait / 1e9


def _cpu_s(pids: list[int]) -> float:
    """CPU seconds used so far by these processes (all their threads), from the scheduler's own
    nanosecond count (/proc/<pid>/task/<tid>/schedstat, first field). /proc/<pid>/stat's
    utime+stime are sampled at the timer tick here (CONFIG_TICK_CPU_ACCOUNTING, HZ=250): exact
    enough for a busy process, but a gateway that wakes briefly every 20 ms (a paced stream)
    can be charged several times its real use, or nothing. _stat_cpu_s is kept as a cross-check."""
    return _sched(pids)[0]


def _stat_cpu_s(pids: list[int]) -> float:
    """utime+stime from /proc/<pid>/stat (clock ticks; tick-sampled, see _cpu_s)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError):
            continue
    return total / CLK_TCK


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.procs: list[subprocess.Popen] = []
        self.workdir = Path(tempfile.mkdtemp(prefix="proxy-overhead-"))
        self.script = str(Path(__file__).resolve())
        self.idle: dict[str, float] = {}

    # -- processes --------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], cpu: int | None, env: dict | None = None,
               ready_file: bool = True, cwd: Path | None = None) -> subprocess.Popen:
        """Output goes to a log file (a pipe nobody reads would block the process once full)."""
        ready = self.workdir / f"{name}.ready"
        if ready_file:
            argv = [*argv, "--ready-file", str(ready)]
        with open(self.workdir / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd,
                                    env=env, preexec_fn=_pinned(cpu) if cpu is not None and self.args.pin else None)
        self.procs.append(proc)
        deadline = time.monotonic() + 60
        while ready_file and not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{name} did not start; see {self.workdir / (name + '.log')}")
            time.sleep(0.02)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def ensure_litellm(self) -> Path:
        litellm = LITELLM_VENV / "bin" / "litellm"
        marker = LITELLM_VENV / ".installed"
        if litellm.exists() and marker.exists() and marker.read_text().strip() == LITELLM_SPEC:
            return litellm
        print(f"installing {LITELLM_SPEC} into {LITELLM_VENV} (once) ...", flush=True)
        started = time.monotonic()
        if not (LITELLM_VENV / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                        LITELLM_SPEC], check=True)
        marker.write_text(LITELLM_SPEC + "\n")
        print(f"  installed in {time.monotonic() - started:.0f} s", flush=True)
        return litellm

    def _wait_http(self, port: int, path: str, timeout_s: float, proc: subprocess.Popen, name: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited; see {self.workdir / (name + '.log')}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"GET %s HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n" % path.encode())
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                pass
            time.sleep(0.25)
        raise SystemExit(f"{name} not ready after {timeout_s:.0f} s; see {self.workdir / (name + '.log')}")

    def start(self) -> dict[str, dict]:
        py = sys.executable
        up_fast, up_paced = _free_port(), _free_port()
        self._spawn("upstream-fast", [py, self.script, "--role", "upstream", "--port", str(up_fast),
                                      "--served", FAST_MODEL, "--pace-ms", "0"], LOADGEN_CPU)
        self._spawn("upstream-paced", [py, self.script, "--role", "upstream", "--port", str(up_paced),
                                       "--served", PACED_MODEL, "--pace-ms", str(PACE_S * 1000)], LOADGEN_CPU)
        self.upstream_pids = [p.pid for p in self.procs]
        urls = {FAST_MODEL: f"http://127.0.0.1:{up_fast}", PACED_MODEL: f"http://127.0.0.1:{up_paced}"}
        targets = {"direct": {"ports": {FAST_MODEL: up_fast, PACED_MODEL: up_paced}, "pids": None, "key": None}}

        sc_port = _free_port()
        (self.workdir / "sc-data").mkdir()
        proc = self._spawn("spark-control", [self.args.sc_python or py, self.script, "--role", "spark-control",
                                             "--port", str(sc_port), "--data-dir", str(self.workdir / "sc-data"),
                                             "--upstreams", json.dumps(urls),
                                             *(["--sc-image-dir", self.args.sc_image_dir] if self.args.sc_image_dir
                                               else [])], GATEWAY_CPU, cwd=IMAGE_DIR)
        targets["spark-control"] = {"ports": {FAST_MODEL: sc_port, PACED_MODEL: sc_port}, "pids": proc.pid,
                                    "key": None}

        if not self.args.skip_litellm:
            litellm = self.ensure_litellm()
            ll_port = _free_port()
            config = {"model_list": [
                {"model_name": model, "litellm_params": {"model": f"openai/{model}", "api_base": f"{url}/v1",
                                                         "api_key": "none"}}
                for model, url in urls.items()],
                "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"}}
            (self.workdir / "litellm.yaml").write_text(json.dumps(config, indent=2))   # JSON is YAML
            env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_MASTER_KEY": LITELLM_KEY,
                   "LITELLM_TELEMETRY": "False"}
            started = time.monotonic()
            proc = self._spawn("litellm", [str(litellm), "--config", str(self.workdir / "litellm.yaml"),
                                           "--host", "127.0.0.1", "--port", str(ll_port), "--num_workers", "1"],
                               GATEWAY_CPU, env=env, ready_file=False, cwd=self.workdir)
            self._wait_http(ll_port, "/health/liveliness", 180, proc, "litellm")
            print(f"LiteLLM proxy up in {time.monotonic() - started:.1f} s", flush=True)
            targets["litellm"] = {"ports": {FAST_MODEL: ll_port, PACED_MODEL: ll_port}, "pids": proc.pid,
                                  "key": LITELLM_KEY}
        return targets

    # -- cells ------------------------------------------------------------------------------
    def cell(self, target: dict, model: str, stream: bool, concurrency: int, duration_s: float,
             warmup_per_client: int) -> dict:
        spec = {"port": target["ports"][model], "model": model, "stream": stream, "concurrency": concurrency,
                "duration_s": duration_s, "warmup_per_client": warmup_per_client, "key": target["key"]}
        gen = subprocess.Popen([sys.executable, self.script, "--role", "loadgen", "--spec", json.dumps(spec)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               preexec_fn=_pinned(LOADGEN_CPU) if self.args.pin else None)
        try:
            if not json.loads(gen.stdout.readline() or b"{}").get("ready"):
                raise SystemExit(f"load generator failed: {spec}")
            gw_pids = _tree(target["pids"]) if target["pids"] else []
            (gw0, wait0), up0, st0 = _sched(gw_pids), _cpu_s(self.upstream_pids), _stat_cpu_s(gw_pids)
            t0 = time.perf_counter()
            gen.stdin.write(b"go\n")
            gen.stdin.flush()
            result = json.loads(gen.stdout.readline())
            time.sleep(0.05)   # let the gateway finish its per-request bookkeeping
            elapsed = time.perf_counter() - t0
            (gw1, wait1), up1, st1 = _sched(gw_pids), _cpu_s(self.upstream_pids), _stat_cpu_s(gw_pids)
        finally:
            gen.stdin.close()
            gen.wait(timeout=30)
        n = result["n"] or 1
        result["gw_cpu_ms"] = (gw1 - gw0) * 1000 / n if target["pids"] else None
        result["gw_stat_cpu_ms"] = (st1 - st0) * 1000 / n if target["pids"] else None
        result["gw_core_pct"] = (gw1 - gw0) / elapsed * 100 if target["pids"] else None
        result["cell_s"] = elapsed
        # Time the gateway was ready to run but the CPU was busy with something else (on a shared
        # machine: other people's work): latency and throughput then say little about the gateway.
        result["gw_wait_pct"] = (wait1 - wait0) / elapsed * 100 if target["pids"] else None
        result["core0_pct"] = ((up1 - up0) + result["loadgen_cpu_s"]) / elapsed * 100
        # The upstream's own CPU per request: a 30-line asyncio server doing the least work
        # there is, so its figure is a floor for what a process relaying the same bytes can cost.
        result["up_cpu_ms"] = (up1 - up0) * 1000 / n
        return result

    def idle_cpu(self, targets: dict[str, dict], seconds: float = 5.0) -> dict[str, float]:
        """Each gateway's CPU ms per second with no traffic (timers, housekeeping)."""
        time.sleep(1.0)
        out = {}
        for name, target in targets.items():
            if target["pids"]:
                pids = _tree(target["pids"])
                before = _cpu_s(pids)
                time.sleep(seconds)
                out[name] = (_cpu_s(pids) - before) * 1000 / seconds
        return out

    def run(self) -> list[dict]:
        targets = self.start()
        self.idle = self.idle_cpu(targets)
        print("idle CPU, ms per second: " + ", ".join(f"{k} {v:.1f}" for k, v in self.idle.items()), flush=True)
        rows = []
        quick = self.args.quick
        concurrencies = self.args.concurrency or CONCURRENCIES
        plan = [(name, model, stream, c) for model in (FAST_MODEL, PACED_MODEL) for stream in (False, True)
                for c in concurrencies for name in targets]
        print(f"{len(plan)} cells; loadgen + upstreams on CPU {LOADGEN_CPU}, gateways on CPU {GATEWAY_CPU}"
              if self.args.pin else f"{len(plan)} cells, unpinned", flush=True)
        for name, model, stream, c in plan:
            paced = model == PACED_MODEL
            duration = (2.0 if quick else 8.0 if c == 1 else 4.0) if paced else (1.0 if quick else 2.5)
            warmup = 1 if paced or c >= 64 else max(1, 100 // c)
            result = self.cell(targets[name], model, stream, c, duration, warmup)
            row = {"upstream": "paced" if paced else "fast", "stream": stream, "concurrency": c, "target": name,
                   **result}
            rows.append(row)
            print(_row_line(row), flush=True)
        return rows


# --------------------------------------------------------------------------------------------
# Report.

_COLUMNS = ("upstream", "mode", "conc", "gateway", "requests", "req/s", "p50 ms", "p99 ms", "TTFT p50", "TTFT p99",
            "gw CPU ms/req", "upstream CPU ms/req", "gw core %", "gw runq %", "core0 %", "errors")


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _row_cells(row: dict) -> list[str]:
    return [row["upstream"], "stream" if row["stream"] else "plain", str(row["concurrency"]), row["target"],
            str(row["n"]), _fmt(row["rps"], 0 if row["rps"] >= 1000 else 1),
            _fmt(row["p50_ms"], 2), _fmt(row["p99_ms"], 2),
            _fmt(row["ttft_p50_ms"], 2), _fmt(row["ttft_p99_ms"], 2), _fmt(row["gw_cpu_ms"], 2),
            _fmt(row.get("up_cpu_ms"), 2),
            _fmt(row["gw_core_pct"], 0), _fmt(row.get("gw_wait_pct"), 0), _fmt(row["core0_pct"], 0),
            str(row["errors"])]


def _row_line(row: dict) -> str:
    return "  " + "  ".join(f"{k}={v}" for k, v in zip(_COLUMNS, _row_cells(row)))


def markdown_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    lines += ["| " + " | ".join(_row_cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def verdicts(rows: list[dict], idle: dict[str, float] | None = None) -> list[str]:
    def get(upstream, stream, c, target):
        return next((r for r in rows if r["upstream"] == upstream and r["stream"] == stream
                     and r["concurrency"] == c and r["target"] == target), None)

    out = []

    def net(r: dict, name: str) -> float:
        """CPU ms per request less what the gateway burns idle over the same time."""
        return r["gw_cpu_ms"] - (idle or {}).get(name, 0.0) * r.get("cell_s", 0.0) / max(1, r["n"])

    for label, cost in (("", lambda r, name: r["gw_cpu_ms"]), (" net of idle", net)):
        ratios = []
        for r in rows:
            if r["target"] != "spark-control" or not r["gw_cpu_ms"]:
                continue
            ll = get(r["upstream"], r["stream"], r["concurrency"], "litellm")
            if ll and ll["gw_cpu_ms"] and cost(r, "spark-control") > 0:
                ratios.append((cost(ll, "litellm") / cost(r, "spark-control"), r))
        if not ratios or (label and not idle):
            continue
        worst = min(x for x, _ in ratios)
        missed = [f"{r['upstream']} {'stream' if r['stream'] else 'plain'} c={r['concurrency']} ({x:.1f}x)"
                  for x, r in ratios if x < 10]
        out.append(f"CPU per request{label}, LiteLLM / spark-control: worst {worst:.1f}x, median "
                   f"{sorted(x for x, _ in ratios)[len(ratios) // 2]:.1f}x, {len(ratios) - len(missed)} of "
                   f"{len(ratios)} cells >= 10x -> target: "
                   + ("MET" if not missed else "NOT MET in " + ", ".join(missed)))
    for stream in (False, True):
        d, s = get("fast", stream, 1, "direct"), get("fast", stream, 1, "spark-control")
        if d and s:
            key = "ttft_p50_ms" if stream else "p50_ms"
            added = s[key] - d[key]
            out.append(f"added latency at concurrency 1 ({'TTFT p50, stream' if stream else 'p50, plain'}): "
                       f"{added:.2f} ms -> target < 1 ms: {'MET' if added < 1 else 'NOT MET'}"
                       + (f" (whole stream p50 +{s['p50_ms'] - d['p50_ms']:.2f} ms)" if stream else ""))
    s, ll = get("paced", True, 1, "spark-control"), get("paced", True, 1, "litellm")
    if s and s.get("up_cpu_ms") is not None:
        out.append(f"paced stream, concurrency 1, CPU ms per stream: spark-control {s['gw_cpu_ms']:.1f}, "
                   + (f"LiteLLM {ll['gw_cpu_ms']:.1f}, " if ll else "")
                   + f"the bare upstream itself {s['up_cpu_ms']:.1f} (33 wake-ups a stream: a floor here for "
                     "any process that handles each chunk as it comes)")
    d, s = get("paced", True, 64, "direct"), get("paced", True, 64, "spark-control")
    if d and s and d["rps"]:
        share = s["rps"] / d["rps"] * 100
        out.append(f"paced upstream, 64 streams: {s['rps']:.1f} vs {d['rps']:.1f} streams/s direct = {share:.1f}% "
                   f"-> target >= 98%: {'MET' if share >= 98 else 'NOT MET'}")
    return out


def machine() -> str:
    model = "unknown CPU"
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{os.cpu_count()} x {model}, Linux {platform.release()}, Python {platform.python_version()}")


def versions(python: str | None) -> str:
    """What spark-control ran on: its interpreter's packages (it may be another venv's)."""
    code = ("from importlib.metadata import version\n"
            "def v(p):\n"
            "    try: return f'{p} {version(p)}'\n"
            "    except Exception: return f'no {p}'\n"
            "print(', '.join(v(p) for p in ('fastapi', 'starlette', 'uvicorn', 'h11', 'uvloop', 'httptools')))")
    out = subprocess.run([python or sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return "spark-control: " + (out.stdout.strip() or "unknown versions")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", default="main", choices=("main", "upstream", "spark-control", "loadgen"))
    parser.add_argument("--port", type=int)
    parser.add_argument("--served")
    parser.add_argument("--pace-ms", type=float, default=0.0)
    parser.add_argument("--data-dir")
    parser.add_argument("--upstreams")
    parser.add_argument("--spec")
    parser.add_argument("--ready-file")
    parser.add_argument("--quick", action="store_true", help="shorter cells (a smoke run)")
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin processes to CPUs")
    parser.add_argument("--concurrency", type=int, action="append", help="only these (repeatable)")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--sc-image-dir", help="import spark-control's `app` from this directory instead of "
                                               "image/ (to measure another version of the gateway)")
    parser.add_argument("--sc-python", help="run spark-control under this interpreter (e.g. a venv that also "
                                            "has uvloop and httptools); default: this one")
    args = parser.parse_args()
    if args.role == "upstream":
        return run_upstream(args.port, args.served, args.pace_ms / 1000, args.ready_file)
    if args.role == "spark-control":
        return run_spark_control(args.port, args.data_dir, json.loads(args.upstreams), args.ready_file,
                                 args.sc_image_dir)
    if args.role == "loadgen":
        return run_loadgen(json.loads(args.spec))
    if len(os.sched_getaffinity(0)) < 2:
        args.pin = False

    started = time.monotonic()
    load_before = open("/proc/loadavg").read().split()[:3]
    bench = Bench(args)
    try:
        rows = bench.run()
    finally:
        bench.stop_all()
    print()
    print(f"machine: {machine()}")
    print(versions(args.sc_python) + f"; LiteLLM: {LITELLM_SPEC if not args.skip_litellm else 'skipped'}")
    try:
        print(next(line.strip() for line in (bench.workdir / "spark-control.log").read_text().splitlines()
                   if "event loop" in line))
    except (OSError, StopIteration):
        pass
    print(f"load average before / after the run: {' '.join(load_before)} / "
          f"{' '.join(open('/proc/loadavg').read().split()[:3])} (other work on the machine shows here)")
    print(f"{TOKENS}-token answers; paced = {PACE_S * 1000:.0f} ms per token; "
          f"{'pinned: gateway CPU 1, upstreams + load generator CPU 0' if args.pin else 'unpinned'}")
    print()
    print(markdown_table(rows))
    print()
    print("idle CPU, ms per second: " + ", ".join(f"{k} {v:.1f}" for k, v in bench.idle.items()))
    for line in verdicts(rows, bench.idle):
        print(line)
    print(f"\nwhole run: {time.monotonic() - started:.0f} s; logs in {bench.workdir}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "idle_cpu_ms_per_s": bench.idle,
                                               "rows": rows}, indent=1))
    else:
        shutil.rmtree(bench.workdir / "sc-data", ignore_errors=True)


if __name__ == "__main__":
    main()
