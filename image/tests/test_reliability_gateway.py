"""Reliability of the LLM gateway as its own process: hundreds of streams for a minute with flat
memory, and model servers killed mid-stream. Every part is a real process on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import IMAGE_DIR, UvicornProcess, free_port, wait_until

pytestmark = pytest.mark.integration  # real processes: after the unit tests
TESTS_DIR = Path(__file__).resolve().parent
LOAD_SECONDS = float(os.environ.get("RELIABILITY_LOAD_SECONDS", "60"))
STREAMS = 256
TOKENS = 8


class Upstream:
    """tests/raw_upstream.py in its own process."""

    def __init__(self, tokens: int, pace_s: float, served: str = "load-model") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, str(TESTS_DIR / "raw_upstream.py"), str(self.port), served,
                                      str(tokens), str(pace_s)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)


class Gateway(UvicornProcess):
    """spark-control (tests/gateway_process.py) with READY replicas pointing at the upstreams."""

    name = "gateway"
    health_path = "/api/health"

    def __init__(self, tmp_path: Path, upstreams: dict[str, list[str]]) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK", "SSH_"))}
        env.update({"PYTHONPATH": f"{TESTS_DIR}:{IMAGE_DIR}", "DATA_DIR": str(tmp_path / "data"),
                    "CONNECTIVITY_INTERVAL_S": "3600", "GATEWAY_UPSTREAMS": json.dumps(upstreams)})
        super().__init__(sys.executable, "gateway_process:create", env, tmp_path / "gateway.log", "--factory",
                         "--no-access-log", "--backlog", "2048")

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) / 1024


@pytest.fixture
def processes():
    started: list = []
    yield started
    for p in started:
        if isinstance(p, Upstream):
            if p.proc.poll() is None:
                p.kill()
        else:
            p.stop()


def chat_body(stream: bool) -> dict:
    return {"model": "load-model", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}


async def read_stream(client: httpx.AsyncClient, url: str) -> tuple[list[str], list[dict]]:
    """(tokens, error events) of one streamed chat completion; raises if it does not end in [DONE]."""
    tokens, errors, done = [], [], False
    async with client.stream("POST", f"{url}/v1/chat/completions", json=chat_body(True)) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                continue
            event = json.loads(line[6:])
            if "error" in event:
                errors.append(event["error"])
            else:
                tokens.append(event["choices"][0]["delta"].get("content", ""))
    if not done and not errors:
        raise AssertionError(f"stream ended without [DONE] after {len(tokens)} tokens")
    return tokens, errors


class RawStreamClient:
    """One keep-alive HTTP/1.1 connection on asyncio streams: httpx's pool spends most of a
    core serving hundreds of concurrent streams, so a load test driving it measures httpx."""

    def __init__(self, port: int, path: str = "/v1/chat/completions", body: dict | None = None) -> None:
        self.port = port
        self.path = path.encode()
        self.body = json.dumps(body or chat_body(True)).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def stream(self) -> tuple[list[str], list[dict]]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(b"POST %s HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json"
                          b"\r\ncontent-length: %d\r\n\r\n%s" % (self.path, len(self.body), self.body))
        head = await self.reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"chunked" in head.lower(), head
        text = b""
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
            data = await self.reader.readexactly(size + 2)
            if size == 0:
                break
            text += data[:-2]
        tokens, errors, done = [], [], False
        for line in text.decode().splitlines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                event = json.loads(line[6:])
                (errors.append(event["error"]) if "error" in event
                 else tokens.append(event["choices"][0]["delta"].get("content", "")))
        assert done or errors, f"stream ended without [DONE] after {len(tokens)} tokens"
        return tokens, errors

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# A conversation with personal data: through the redaction gateway, every request is detected
# (names by NER), pseudonymized into the map DB and restored on the way back.
PII_CHAT = {"model": "load-model", "stream": True, "messages": [
    {"role": "system", "content": "You help Ada Lovelace with her mail."},
    {"role": "user", "content": "Write to charles.babbage@example.com and call +44 20 7946 0958 for Ada Lovelace."}]}


@pytest.mark.parametrize("path, body", [("/v1/chat/completions", None), ("/redact/v1/chat/completions", PII_CHAT)],
                         ids=["llm-proxy", "redaction-gateway"])
def test_256_streams_for_a_minute_no_error_and_flat_memory(tmp_path, processes, path, body):
    upstream = Upstream(TOKENS, pace_s=0.1)
    processes.append(upstream)
    gateway = Gateway(tmp_path, {"load-model": [upstream.url]}).wait_ready()
    processes.append(gateway)
    failures: list[str] = []
    completed = 0
    memory: list[tuple[float, float]] = []

    async def client_loop(ends_at: float) -> None:
        nonlocal completed
        client = RawStreamClient(gateway.port, path, body)
        try:
            while time.monotonic() < ends_at:
                try:
                    tokens, errors = await asyncio.wait_for(client.stream(), 30)
                    if errors or len(tokens) != TOKENS:
                        failures.append(f"{len(tokens)} tokens, errors {errors}")
                    else:
                        completed += 1
                except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
                    failures.append(f"{type(exc).__name__}: {exc}")
                    client.close()
                    client = RawStreamClient(gateway.port, path, body)
        finally:
            client.close()

    async def sample_memory(started: float, ends_at: float) -> None:
        while time.monotonic() < ends_at:
            memory.append((time.monotonic() - started, gateway.rss_mb()))
            await asyncio.sleep(1)

    async def run() -> float:
        started = time.monotonic()
        ends_at = started + LOAD_SECONDS
        await asyncio.gather(sample_memory(started, ends_at), *(client_loop(ends_at) for _ in range(STREAMS)))
        return time.monotonic() - started

    elapsed = asyncio.run(run())
    warm = [mb for t, mb in memory if t >= LOAD_SECONDS / 3]
    growth = max(warm) - min(warm)
    print(f"\n{path}: {STREAMS} concurrent streams for {elapsed:.0f} s: {completed} streams completed "
          f"({completed * TOKENS} tokens, {completed / elapsed:.0f} streams/s), {len(failures)} failed; "
          f"gateway RSS {memory[0][1]:.0f} MB at start, {min(warm):.0f}-{max(warm):.0f} MB after warm-up "
          f"(growth {growth:.1f} MB)")
    assert not failures, failures[:5]
    assert completed >= STREAMS * LOAD_SECONDS / 4, "far fewer streams than 256 clients at 0.8 s each would make"
    assert growth < 25, f"gateway memory grew by {growth:.1f} MB under steady load: {memory}"


def test_a_model_server_killed_mid_stream_then_the_next_request_goes_to_the_replica(tmp_path, processes):
    first, second = Upstream(tokens=40, pace_s=0.05), Upstream(tokens=40, pace_s=0.0)
    processes += [first, second]
    gateway = Gateway(tmp_path, {"load-model": [first.url, second.url]}).wait_ready()
    processes.append(gateway)

    async def scenario():
        async with httpx.AsyncClient(timeout=30) as client:
            # The first request goes to the first replica: kill its server half way through.
            streaming = asyncio.create_task(read_stream(client, gateway.url))
            await asyncio.sleep(1.0)
            first.kill()
            tokens, errors = await asyncio.wait_for(streaming, 10)
            answers = [await read_stream(client, gateway.url) for _ in range(4)]
            return tokens, errors, answers

    tokens, errors, answers = asyncio.run(scenario())
    assert 0 < len(tokens) < 40, "the stream broke midway"
    assert len(errors) == 1 and errors[0]["source"] == "upstream" and "broke off" in errors[0]["message"]
    assert [len(t) for t, e in answers] == [40] * 4 and not any(e for _, e in answers)
    metrics = httpx.get(f"{gateway.url}/metrics").text
    assert 'spark_control_upstream_retries_total{model="load-model",upstream="%s"}' % first.url in metrics

    second.kill()
    gone = httpx.post(f"{gateway.url}/v1/chat/completions", json=chat_body(False), timeout=30)
    assert gone.status_code == 502 and "every replica tried" in gone.json()["error"]["message"]
    assert gateway.proc.poll() is None, "the gateway itself keeps running"
    wait_until(lambda: httpx.get(f"{gateway.url}/api/health").status_code == 200, 5, message="gateway healthy")
