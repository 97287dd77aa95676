"""Audio requests survive a replica that refuses connections, as chat requests do (app/upstream_retry.py),
and the services' health answers are cached briefly without ever hiding a service that went down.

First half: the real app in a thread with Whisper served by two vLLM stand-ins (real loopback HTTP
servers, one per node). Second half: the app as a user starts it against the simulated Sparks, with
two transcription services (tests/fixtures/counting_whisper.py, one per node) that count the health
probes and transcriptions they get."""

from __future__ import annotations

import base64
import concurrent.futures
import socket
import threading
import time
import zlib
from pathlib import Path

import httpx
import openai
import pytest

from app.services import _HEALTH_TTL_S
from conftest import free_port, sim_app, wait_until
from inthread_app import InThreadApp
from test_audio_proxy import AUDIO, TEXT, StandIn

pytestmark = pytest.mark.integration


def retries_counted(url: str, model: str | None = None) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("spark_control_upstream_retries_total{")
               and (model is None or f'model="{model}"' in line))


def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)


# --------------------------------------------------------------------------- vLLM Whisper replicas

@pytest.fixture
def whisper_replicas(tmp_path):
    first, second = StandIn("vllm").start(), StandIn("vllm").start()
    gateway = InThreadApp(tmp_path).start()
    for server, node in ((first, "spark1"), (second, "spark2")):
        gateway.add_deployment(server.base_url, name="whisper-large-v3-turbo",
                               served_name="openai/whisper-large-v3-turbo", capabilities=("audio",), node=node)
    yield gateway, first, second
    gateway.stop()
    first.stop()
    second.stop()


def test_replicas_take_turns_and_a_refused_one_is_skipped(whisper_replicas):
    gateway, first, second = whisper_replicas
    client = sdk(gateway.url)
    for _ in range(4):
        assert client.audio.transcriptions.create(file=AUDIO, model="whisper-1").text == TEXT
    assert (len(first.requests), len(second.requests)) == (2, 2)
    assert retries_counted(gateway.url) == 0

    second.stop()  # its port now refuses connections: what a crashed vLLM looks like
    answers = [client.audio.transcriptions.create(file=AUDIO, model="whisper-1", response_format="srt")
               for _ in range(6)]
    assert all(a.startswith("1\n00:00:00,000 --> 00:00:02,000\nHello Bob") for a in answers)
    assert len(first.requests) == 2 + 6
    # Every other request tried spark2 first; the whole file was sent again, to spark1.
    assert retries_counted(gateway.url, "whisper-large-v3-turbo") == 3
    assert {r["file_bytes"] for r in first.requests} == {len(AUDIO[1])}


class AcceptsThenDrops:
    """A port that accepts the connection, reads the request, then closes without an answer: the
    request reached a server, so resending it could run it twice. It must not be retried."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                if conn.recv(65536):
                    self.requests += 1

    def stop(self) -> None:
        self.sock.close()


def test_a_replica_that_takes_the_upload_and_drops_it_is_not_retried(tmp_path):
    dropper, good = AcceptsThenDrops(), StandIn("vllm").start()
    gateway = InThreadApp(tmp_path).start()
    try:
        for base, node in ((dropper.base_url, "spark1"), (good.base_url, "spark2")):
            gateway.add_deployment(base, name="whisper-large-v3-turbo", served_name="openai/whisper-large-v3-turbo",
                                   capabilities=("audio",), node=node)
        codes = [httpx.post(f"{gateway.url}/v1/audio/transcriptions", data={"model": "whisper-1"},
                            files={"file": AUDIO}, timeout=30).status_code for _ in range(2)]
        # Replicas take turns: one request went to the dropper and failed there (502), the other
        # was answered by the good replica; the dropped one was not sent again.
        assert sorted(codes) == [200, 502], codes
        assert dropper.requests >= 1 and len(good.requests) == 1
        assert retries_counted(gateway.url) == 0
    finally:
        gateway.stop()
        good.stop()
        dropper.stop()


def test_every_replica_refused_is_one_502_naming_them(whisper_replicas):
    gateway, first, second = whisper_replicas
    first.stop()
    second.stop()
    answer = httpx.post(f"{gateway.url}/v1/audio/transcriptions", data={"model": "whisper-1"},
                        files={"file": AUDIO}, timeout=30)
    assert answer.status_code == 502
    error = answer.json()["error"]
    assert (error["source"], error["code"]) == ("upstream", "upstream_unreachable")
    assert first.base_url in error["message"] and second.base_url in error["message"]
    assert "every replica tried" in error["message"] and "ConnectError" in error["message"]
    assert retries_counted(gateway.url) == 1   # the second refusal is the 502, not a retry


# --------------------------------------------------------------------------- services on the simulated Sparks

# Compressed: one service argument may be at most 4096 characters.
SCRIPT = base64.b64encode(zlib.compress((Path(__file__).parent / "fixtures" / "counting_whisper.py").read_bytes(),
                                        9)).decode()
SERVICES = {"count-a": "spark1", "count-b": "spark2"}   # count-a comes first in the catalog: it is asked first


def _args(name: str) -> str:
    return f'["python3", "-c", "import base64, zlib; exec(zlib.decompress(base64.b64decode(\'{SCRIPT}\')))", "{name}"]'


@pytest.fixture(scope="module")
def app(sim_cluster, tmp_path_factory):
    data = tmp_path_factory.mktemp("audio-retry")
    overrides = data / "services.yaml"
    overrides.write_text("services:\n" + "".join(
        f"  {name}: {{kind: transcription, image: python:3.11-slim, node: {node}, port: {free_port()}, "
        f"start_timeout_s: 30, args: {_args(name)}}}\n" for name, node in SERVICES.items()))
    try:
        with sim_app(sim_cluster, data, SERVICES_OVERRIDES=str(overrides)) as running:
            yield running
    finally:
        for node in sim_cluster.nodes:
            sim_cluster.ssh(node.name, "docker ps -aq | xargs -r docker rm -f")


def _states(app) -> dict[str, dict]:
    return {s["name"]: s for s in app.get("/api/services").json()["services"] if s["name"] in SERVICES}


@pytest.fixture
def urls(app) -> dict[str, str]:
    """Both services running and healthy (a test may have stopped or broken one): name -> base URL."""
    for state in _states(app).values():
        if state["url"]:
            try:
                httpx.post(f"{state['url']}/well", timeout=5)
            except httpx.HTTPError:
                pass   # closed by a test: restarted below
    for name, state in _states(app).items():
        if state["state"] != "running":
            answer = app.post(f"/api/services/{name}/restart", json={"node": SERVICES[name]}, timeout=60)
            assert answer.status_code == 202, answer.text
    states = wait_until(lambda: (s := _states(app)) and all(x["state"] == "running" for x in s.values()) and s,
                        40, message="both counting services running")
    time.sleep(_HEALTH_TTL_S + 0.2)   # every cached health answer of the previous test has expired
    return {name: state["url"] for name, state in states.items()}


def heard_by(app) -> str:
    return sdk(app.url).audio.transcriptions.create(file=AUDIO, model="whisper-1").text.removeprefix("heard by ")


def refuses(url: str) -> bool:
    try:
        httpx.get(f"{url}/counts", timeout=5)
    except httpx.ConnectError:
        return True
    except httpx.TransportError:   # accepted as the listener closed, then dropped: not refusing yet
        return False
    return False


def counts(url: str) -> dict[str, int]:
    return httpx.get(f"{url}/counts", timeout=5).json()


def test_a_burst_of_requests_costs_one_health_probe_per_service_per_window(app, urls):
    before = {name: counts(url) for name, url in urls.items()}
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:   # 8 at once: they share one probe in flight
        assert list(pool.map(lambda _: heard_by(app), range(8))) == ["count-a"] * 8
    assert [heard_by(app) for _ in range(12)] == ["count-a"] * 12
    elapsed = time.monotonic() - started
    after = {name: counts(url) for name, url in urls.items()}
    windows = int(elapsed // _HEALTH_TTL_S) + 1
    assert after["count-a"]["transcriptions"] - before["count-a"]["transcriptions"] == 20
    for name in SERVICES:  # count-b is a candidate too: probed, never asked
        probes = after[name]["health"] - before[name]["health"]
        assert 1 <= probes <= windows, f"{name}: {probes} health probes for 20 requests in {elapsed:.1f} s"
    assert after["count-b"]["transcriptions"] == before["count-b"]["transcriptions"]


def test_a_service_whose_health_fails_stops_being_chosen_within_the_window(app, urls):
    assert heard_by(app) == "count-a"   # its health answer is now cached
    httpx.post(f"{urls['count-a']}/sick", timeout=5)
    sick_at = time.monotonic()
    while heard_by(app) == "count-a":
        assert time.monotonic() - sick_at < _HEALTH_TTL_S + 1.5, "a service that fails its health check was " \
                                                                 "still chosen after the cache window"
        time.sleep(0.1)
    assert [heard_by(app) for _ in range(3)] == ["count-b"] * 3


def test_a_service_that_refuses_a_connect_is_skipped_at_once(app, urls):
    assert heard_by(app) == "count-a"   # both healthy, count-a's health cached
    before = retries_counted(app.url, "count-a")
    # Its server goes away while its container keeps running (docker ps still says running).
    httpx.post(f"{urls['count-a']}/close", timeout=5)
    wait_until(lambda: refuses(urls["count-a"]), 5, interval=0.05, message="count-a refusing connections")
    # Refused: retried on count-b, counted; the cached health answer of count-a is dropped...
    assert heard_by(app) == "count-b"
    assert retries_counted(app.url, "count-a") == before + 1
    # ...so the next requests do not try it again (its health is asked anew, and fails).
    assert [heard_by(app) for _ in range(4)] == ["count-b"] * 4
    assert retries_counted(app.url, "count-a") == before + 1


def test_a_service_stopped_from_spark_control_is_not_chosen_by_the_next_request(app, urls):
    assert heard_by(app) == "count-a"
    before = retries_counted(app.url)
    assert app.post("/api/services/count-a/stop", timeout=60).status_code == 200
    assert heard_by(app) == "count-b"
    assert retries_counted(app.url) == before   # not tried and refused: simply no longer offered
