"""POST /v1/audio/transcriptions through the real app (uvicorn in a thread), driven by the
unmodified openai SDK, against real loopback HTTP servers standing in for the services on the
Sparks: a faster-whisper-style transcription service (words + segments), a speaches-style
diarizer, and vLLM serving Whisper (segments only). They answer canned but realistic JSON of
a two-speaker exchange; the real engines are exercised by the sparksim audio tests."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import threading
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from fake_upstream import FakeUpstream
from inthread_app import InThreadApp

pytestmark = pytest.mark.integration

# "Hello Bob, how was the trip?" (SPEAKER_00) / "Great, thanks. The weather was fine." (SPEAKER_01) /
# "Glad to hear it." (SPEAKER_00). Whisper's second segment runs across the change back to SPEAKER_00.
WORDS = [(" Hello", 0.0, 0.4), (" Bob,", 0.45, 0.8), (" how", 0.9, 1.1), (" was", 1.1, 1.3), (" the", 1.3, 1.4),
         (" trip?", 1.45, 2.0), (" Great,", 3.5, 3.9), (" thanks.", 3.95, 4.4), (" The", 4.6, 4.7),
         (" weather", 4.7, 5.1), (" was", 5.1, 5.3), (" fine.", 5.3, 5.8), (" Glad", 6.3, 6.6),
         (" to", 6.6, 6.7), (" hear", 6.7, 6.9), (" it.", 6.9, 7.3)]
TEXT = "Hello Bob, how was the trip? Great, thanks. The weather was fine. Glad to hear it."
SEGMENTS = [(0.0, 2.0, " Hello Bob, how was the trip?"),
            (3.5, 7.3, " Great, thanks. The weather was fine. Glad to hear it.")]
TURNS = [(0.0, 2.2, "SPEAKER_00"), (3.4, 6.0, "SPEAKER_01"), (6.1, 7.5, "SPEAKER_00")]
EXPECTED = [("A", "Hello Bob, how was the trip?"), ("B", "Great, thanks. The weather was fine."),
            ("A", "Glad to hear it.")]


def wav_bytes(seconds: float = 0.5) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"\x00\x01" * int(16000 * seconds))
    return buffer.getvalue()


def verbose_answer(words: bool) -> dict:
    body = {"task": "transcribe", "language": "en", "duration": 7.5, "text": " " + TEXT,
            "segments": [{"id": i, "seek": 0, "start": s, "end": e, "text": t, "tokens": [50364, 2425],
                          "temperature": 0.0, "avg_logprob": -0.21, "compression_ratio": 1.1, "no_speech_prob": 0.01}
                         for i, (s, e, t) in enumerate(SEGMENTS)]}
    if words:
        body["words"] = [{"word": w, "start": s, "end": e, "probability": 0.93} for w, s, e in WORDS]
    return body


class StandIn(FakeUpstream):
    """One loopback HTTP service (FakeUpstream's server, serving the audio routes instead);
    `requests` records each multipart form it got (fields, file size, file name)."""

    def __init__(self, kind: str) -> None:
        super().__init__(served_name=kind)
        self.kind = kind
        self.fail_with: int | None = None
        self.arrived = threading.Event()
        self.wait_for: threading.Event | None = None   # answer only once this is set (concurrency check)
        self.plain_json_only = False                   # an older vLLM: no verbose_json
        routes = [Route("/health", lambda r: JSONResponse({}))]
        if kind == "diarization":
            routes.append(Route("/v1/audio/diarization", self._diarize, methods=["POST"]))
        else:
            routes.append(Route("/v1/audio/transcriptions", self._transcribe, methods=["POST"]))
        self._server.config.app = Starlette(routes=routes)  # read by uvicorn when the server starts

    async def _record(self, request: Request) -> dict:
        form = await request.form()
        upload = form["file"]
        fields = {k: form.getlist(k) for k in form.keys() if k != "file"}
        got = {"fields": fields, "file_bytes": len(await upload.read()), "filename": upload.filename}
        self.requests.append(got)
        self.arrived.set()
        if self.wait_for is not None:
            await asyncio.to_thread(self.wait_for.wait, 10)
        return got

    def _failure(self) -> JSONResponse | None:
        if self.fail_with is None:
            return None
        return JSONResponse({"detail": "CUDA out of memory"} if self.fail_with >= 500 else
                            {"error": {"message": "language 'xx' is not supported"}}, status_code=self.fail_with)

    async def _transcribe(self, request: Request) -> JSONResponse:
        got = await self._record(request)
        if self.plain_json_only and got["fields"]["response_format"] != ["json"]:
            return JSONResponse({"error": {"message": "Currently only support response_format `text` or `json`"}},
                                status_code=400)
        if got["fields"]["response_format"] == ["json"]:
            return JSONResponse({"text": TEXT})
        return self._failure() or JSONResponse(verbose_answer(words=self.kind == "transcription"))

    async def _diarize(self, request: Request) -> JSONResponse:
        await self._record(request)
        return self._failure() or JSONResponse({"duration": 7.5, "segments": [
            {"start": s, "end": e, "speaker": spk} for s, e, spk in TURNS]})


@dataclass(frozen=True)
class Endpoint:  # the shape app/services.py's registry hands the gateways
    name: str
    kind: str
    node: str
    base_url: str
    model: str


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str


class Catalog:
    def entries(self, kind=None):
        return [e for e in (Entry("whisper", "transcription"), Entry("diarizer", "diarization"))
                if kind in (None, e.kind)]


class Registry:
    """What the gateway asks `app.state.services`: the running, healthy services of a kind."""

    def __init__(self) -> None:
        self.running: dict[str, list[Endpoint]] = {"transcription": [], "diarization": []}
        self.catalog = Catalog()

    async def endpoints(self, kind: str) -> list[Endpoint]:
        return list(self.running.get(kind, []))


@pytest.fixture(scope="module")
def standins():
    servers = {kind: StandIn(kind).start() for kind in ("transcription", "diarization", "vllm")}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, standins):
    app = InThreadApp(tmp_path_factory.mktemp("audio"), AUDIO_MAX_BYTES="65536").start()
    yield app
    app.stop()


@pytest.fixture
def registry(gateway, standins):
    """Both services running (tests take them away); restored after every test."""
    found = Registry()
    found.running["transcription"].append(Endpoint("whisper", "transcription", "spark1",
                                                   standins["transcription"].base_url, "Systran/faster-whisper-small"))
    found.running["diarization"].append(Endpoint("diarizer", "diarization", "spark2",
                                                 standins["diarization"].base_url, "diarizer"))
    gateway.app.state.services = found
    for server in standins.values():
        server.requests.clear()
        server.fail_with, server.wait_for, server.plain_json_only = None, None, False
        server.arrived.clear()
    gateway.app.state.lifecycle.deployments.clear()
    yield found


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=30)


AUDIO = ("meeting.wav", wav_bytes(), "audio/wav")


def test_json_and_text_work_with_the_sdk_unmodified_and_need_no_diarizer(client, registry, standins):
    result = client.audio.transcriptions.create(file=AUDIO, model="whisper-1")
    assert result.text == TEXT
    assert client.audio.transcriptions.create(file=AUDIO, model="whisper-1", response_format="text") == TEXT + "\n"
    assert standins["diarization"].requests == []
    sent = standins["transcription"].requests[0]
    # The service is asked for everything it has, with the model it serves; the audio arrives whole.
    assert sent["fields"]["model"] == ["Systran/faster-whisper-small"]
    assert sent["fields"]["response_format"] == ["verbose_json"]
    assert sent["fields"]["timestamp_granularities[]"] == ["word", "segment"]
    assert (sent["file_bytes"], sent["filename"]) == (len(AUDIO[1]), "meeting.wav")


def test_srt_and_vtt_subtitles(client, registry):
    srt = client.audio.transcriptions.create(file=AUDIO, model="whisper-1", response_format="srt")
    assert srt.startswith("1\n00:00:00,000 --> 00:00:02,000\nHello Bob, how was the trip?\n\n2\n"
                          "00:00:03,500 --> 00:00:07,300\nGreat, thanks.")
    vtt = client.audio.transcriptions.create(file=AUDIO, model="whisper-1", response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:02.000\nHello Bob, how was the trip?\n")


def test_verbose_json_with_word_timestamps(client, registry, standins):
    result = client.audio.transcriptions.create(file=AUDIO, model="whisper-1", response_format="verbose_json",
                                                timestamp_granularities=["word", "segment"], language="en",
                                                temperature=0.2, prompt="Bob")
    assert (result.language, result.duration, result.text) == ("en", 7.5, TEXT)
    assert [(w.word, w.start, w.end) for w in result.words] == [(w.strip(), s, e) for w, s, e in WORDS]
    assert [(s.start, s.end) for s in result.segments] == [(0.0, 2.0), (3.5, 7.3)]
    assert result.segments[0].avg_logprob == -0.21
    sent = standins["transcription"].requests[0]["fields"]
    assert (sent["language"], sent["temperature"], sent["prompt"]) == (["en"], ["0.2"], ["Bob"])
    words_only = client.audio.transcriptions.create(file=AUDIO, model="whisper-1", response_format="verbose_json",
                                                    timestamp_granularities=["word"])
    assert words_only.segments is None and len(words_only.words) == len(WORDS)


def test_diarized_json_names_who_said_what(client, registry, standins):
    # What the SDK sends for OpenAI's diarizing model: accepted as it is.
    result = client.audio.transcriptions.create(file=AUDIO, model="gpt-4o-transcribe-diarize",
                                                response_format="diarized_json", chunking_strategy="auto")
    assert [(s.speaker, s.text) for s in result.segments] == EXPECTED
    assert [(s.start, s.end) for s in result.segments] == [(0.0, 2.0), (3.5, 5.8), (6.3, 7.3)]
    assert all(s.type == "transcript.text.segment" for s in result.segments)
    assert len({s.id for s in result.segments}) == 3
    assert (result.task, result.duration, result.text) == ("transcribe", 7.5, TEXT)
    assert (result.usage.type, result.usage.seconds) == ("duration", 7.5)
    assert standins["diarization"].requests[0]["file_bytes"] == len(AUDIO[1])
    assert "num_speakers" not in standins["diarization"].requests[0]["fields"]   # estimated unless given
    client.audio.transcriptions.create(file=AUDIO, model="whisper-1", response_format="diarized_json",
                                       extra_body={"num_speakers": 2})
    assert standins["diarization"].requests[1]["fields"]["num_speakers"] == ["2"]


def test_known_speaker_names_label_the_speakers_the_diarizer_recognised(client, registry, standins):
    reference = "data:audio/wav;base64,UklGRg=="
    result = client.audio.transcriptions.create(
        file=AUDIO, model="whisper-1", response_format="diarized_json",
        known_speaker_names=["SPEAKER_01"], known_speaker_references=[reference])
    # The diarizer got the names and references; the label it used for a known name is kept.
    sent = standins["diarization"].requests[0]["fields"]
    assert (sent["known_speaker_names[]"], sent["known_speaker_references[]"]) == (["SPEAKER_01"], [reference])
    assert [s.speaker for s in result.segments] == ["A", "SPEAKER_01", "A"]


def test_the_two_services_are_asked_at_the_same_time(client, registry, standins):
    # The transcription service answers only once the diarizer has been asked: one after the other would hang.
    standins["transcription"].wait_for = standins["diarization"].arrived
    started = time.monotonic()
    result = client.audio.transcriptions.create(file=AUDIO, model="whisper-1", response_format="diarized_json")
    assert [s.speaker for s in result.segments] == ["A", "B", "A"]
    assert time.monotonic() - started < 8


def test_speakers_on_request_in_other_formats(client, registry):
    text = client.audio.transcriptions.create(file=AUDIO, model="whisper-1", response_format="text",
                                              extra_body={"diarize": "true"})
    assert text == "".join(f"{speaker}: {line}\n" for speaker, line in EXPECTED)
    vtt = client.audio.transcriptions.create(file=AUDIO, model="whisper-1", response_format="vtt",
                                             extra_body={"diarize": "true"})
    assert "00:00:03.500 --> 00:00:05.800\n<v B>Great, thanks. The weather was fine.\n" in vtt
    verbose = client.audio.transcriptions.create(file=AUDIO, model="whisper-1", response_format="verbose_json",
                                                 timestamp_granularities=["word"], extra_body={"diarize": "true"})
    assert [w.speaker for w in verbose.words] == ["A"] * 6 + ["B"] * 6 + ["A"] * 4


def test_stream_events_as_the_sdk_parses_them(client, registry):
    stream = client.audio.transcriptions.create(file=AUDIO, model="whisper-1", response_format="diarized_json",
                                                stream=True)
    events = list(stream)
    assert [e.type for e in events] == ["transcript.text.delta", "transcript.text.segment"] * 3 + \
        ["transcript.text.done"]
    segments = [e for e in events if e.type == "transcript.text.segment"]
    assert [(e.speaker, e.text) for e in segments] == EXPECTED
    deltas = [e for e in events if e.type == "transcript.text.delta"]
    assert [d.segment_id for d in deltas] == [s.id for s in segments]
    assert "".join(d.delta for d in deltas) == events[-1].text == TEXT

    plain = list(client.audio.transcriptions.create(file=AUDIO, model="whisper-1", stream=True))
    assert [e.type for e in plain] == ["transcript.text.delta"] * 2 + ["transcript.text.done"]
    assert "".join(e.delta for e in plain[:-1]) == plain[-1].text == TEXT


def test_whisper_served_by_vllm_is_used_when_running_and_its_segments_are_split_by_speaker(
        client, gateway, registry, standins):
    gateway.add_deployment(standins["vllm"].base_url, name="whisper-large-v3-turbo",
                           served_name="openai/whisper-large-v3-turbo", capabilities=("audio",))
    result = client.audio.transcriptions.create(file=AUDIO, model="whisper-1", response_format="diarized_json")
    assert standins["transcription"].requests == []
    sent = standins["vllm"].requests[0]["fields"]
    assert sent["model"] == ["openai/whisper-large-v3-turbo"]
    assert sent["timestamp_granularities[]"] == ["segment"]
    # The second segment (3.5-7.3 s) spans B and then A: split at the word nearest 6.0-6.1 s by time.
    assert [s.speaker for s in result.segments] == ["A", "B", "A"]
    assert result.segments[1].text.startswith("Great, thanks.")
    assert " ".join(s.text for s in result.segments) == TEXT
    assert result.segments[2].text.endswith("hear it.")


def test_a_vllm_without_verbose_json_still_gives_speakers_by_time(client, gateway, registry, standins):
    standins["vllm"].plain_json_only = True
    gateway.add_deployment(standins["vllm"].base_url, name="whisper-large-v3-turbo",
                           served_name="openai/whisper-large-v3-turbo", capabilities=("audio",))
    result = client.audio.transcriptions.create(file=AUDIO, model="whisper", response_format="diarized_json")
    assert [r["fields"]["response_format"] for r in standins["vllm"].requests] == [["verbose_json"], ["json"]]
    # No times from the transcriber: the text is shared over the diarizer's 7.5 s by characters.
    assert [s.speaker for s in result.segments] == ["A", "B", "A"]
    assert " ".join(s.text for s in result.segments) == TEXT


def test_a_missing_diarizer_is_a_503_that_says_what_to_start(client, registry, standins):
    registry.running["diarization"].clear()
    with pytest.raises(openai.APIStatusError) as refused:
        client.audio.transcriptions.create(file=AUDIO, model="whisper-1", response_format="diarized_json")
    assert refused.value.status_code == 503
    message = refused.value.body["message"]
    assert "No diarization service is running" in message and "POST /api/services/diarizer/start" in message
    assert standins["transcription"].requests == []   # nothing is sent when the answer cannot be complete
    # Without speakers, no diarizer is needed.
    assert client.audio.transcriptions.create(file=AUDIO, model="whisper-1").text == TEXT


def test_a_missing_transcription_service_is_a_503_that_says_what_to_start(client, registry):
    registry.running["transcription"].clear()
    with pytest.raises(openai.APIStatusError) as refused:
        client.audio.transcriptions.create(file=AUDIO, model="whisper-1")
    assert refused.value.status_code == 503
    message = refused.value.body["message"]
    assert "No transcription service is running" in message
    assert "POST /api/services/whisper/start" in message and "whisper-large-v3-turbo" in message


def test_no_registry_at_all_is_the_same_503(client, gateway, registry):
    del gateway.app.state.services
    with pytest.raises(openai.APIStatusError) as refused:
        client.audio.transcriptions.create(file=AUDIO, model="whisper-1")
    assert refused.value.status_code == 503
    assert "No transcription service is running" in refused.value.body["message"]


def test_a_failing_service_is_a_502_naming_it_and_its_refusals_keep_their_status(client, registry, standins):
    standins["diarization"].fail_with = 500
    with pytest.raises(openai.APIStatusError) as failed:
        client.audio.transcriptions.create(file=AUDIO, model="whisper-1", response_format="diarized_json")
    assert failed.value.status_code == 502
    assert "diarization service `diarizer` on spark2" in failed.value.body["message"]
    assert "CUDA out of memory" in failed.value.body["message"]
    assert failed.value.body["source"] == "upstream"

    standins["diarization"].fail_with = None
    standins["transcription"].fail_with = 400
    with pytest.raises(openai.BadRequestError) as refused:
        client.audio.transcriptions.create(file=AUDIO, model="whisper-1", language="xx")
    assert "transcription service `whisper`" in refused.value.body["message"]
    assert "language 'xx' is not supported" in refused.value.body["message"]


def test_an_unreachable_service_is_a_502(client, registry):
    registry.running["transcription"][0] = Endpoint("whisper", "transcription", "spark1", "http://127.0.0.1:9", "m")
    with pytest.raises(openai.APIStatusError) as failed:
        client.audio.transcriptions.create(file=AUDIO, model="whisper-1")
    assert failed.value.status_code == 502
    assert "`whisper` on spark1" in failed.value.body["message"] and "did not answer" in failed.value.body["message"]


def test_a_file_over_the_limit_is_a_413(client, registry, standins):
    big = ("long.wav", wav_bytes(seconds=3.0), "audio/wav")   # 96 KB against AUDIO_MAX_BYTES=65536
    with pytest.raises(openai.APIStatusError) as refused:
        client.audio.transcriptions.create(file=big, model="whisper-1")
    assert refused.value.status_code == 413
    assert "65536 bytes" in refused.value.body["message"] and "AUDIO_MAX_BYTES" in refused.value.body["message"]
    assert standins["transcription"].requests == []


def test_a_body_far_over_the_limit_is_refused_by_its_declared_length(gateway, registry):
    answer = httpx.post(f"{gateway.url}/v1/audio/transcriptions", content=b"x" * (11 * 1024 * 1024),
                        headers={"content-type": "multipart/form-data; boundary=xyz"}, timeout=30)
    assert answer.status_code == 413


def test_a_body_over_the_limit_without_a_declared_length_is_a_413(gateway, registry):
    def chunks():  # sent chunked, no content-length: counted as it arrives, never held whole
        for _ in range(50):
            yield b"x" * (256 * 1024)

    answer = httpx.post(f"{gateway.url}/v1/audio/transcriptions", content=chunks(),
                        headers={"content-type": "multipart/form-data; boundary=xyz"}, timeout=30)
    assert answer.status_code == 413
    assert "AUDIO_MAX_BYTES" in answer.json()["error"]["message"]


def test_something_that_is_not_audio_is_a_400_naming_the_accepted_formats(client, registry, standins):
    with pytest.raises(openai.BadRequestError) as refused:
        client.audio.transcriptions.create(file=("notes.wav", b"These are my meeting notes.\n", "audio/wav"),
                                           model="whisper-1")
    message = refused.value.body["message"]
    assert "notes.wav" in message and "flac, mp3, mp4, mpeg, mpga, m4a, ogg, wav, webm" in message
    assert standins["transcription"].requests == []


@pytest.mark.parametrize("head", [b"ID3\x04\x00", b"\xff\xfb\x90\x00", b"fLaC\x00\x00", b"OggS\x00\x02",
                                  b"\x00\x00\x00\x20ftypM4A ", b"\x1a\x45\xdf\xa3\x9f\x42"])
def test_each_accepted_container_passes_the_sniff(client, registry, head):
    assert client.audio.transcriptions.create(file=("a.bin", head + b"\x00" * 64), model="whisper-1").text == TEXT


@pytest.mark.parametrize(("fields", "param"), [
    ({"model": "whisper-1", "response_format": "xml"}, "response_format"),
    ({"model": "whisper-1", "timestamp_granularities[]": "sentence"}, "timestamp_granularities"),
    ({"model": "whisper-1", "temperature": "2"}, "temperature"),
    ({"response_format": "json"}, "model"),
    ({"model": "whisper-1", "known_speaker_names[]": "agent"}, "known_speaker_names"),
    ({"model": "whisper-1", "stream": "maybe"}, "stream"),
    ({"model": "whisper-1", "response_format": "diarized_json", "num_speakers": "0"}, "num_speakers"),
])
def test_bad_fields_are_400s_naming_the_field(gateway, registry, fields, param):
    answer = httpx.post(f"{gateway.url}/v1/audio/transcriptions", data=fields, files={"file": AUDIO}, timeout=30)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param


def test_a_request_without_a_file_is_a_400(gateway, registry):
    answer = httpx.post(f"{gateway.url}/v1/audio/transcriptions", data={"model": "whisper-1"},
                        files={"other": ("x", b"y")}, timeout=30)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "file"
    answer = httpx.post(f"{gateway.url}/v1/audio/transcriptions", json={"model": "whisper-1"}, timeout=30)
    assert answer.status_code == 400 and "multipart/form-data" in answer.json()["error"]["message"]


def test_requests_are_counted_per_service(gateway, client, registry):
    client.audio.transcriptions.create(file=AUDIO, model="whisper-1")
    metrics = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    line = next(x for x in metrics.splitlines() if x.startswith("spark_control_requests_total{")
                and 'model="whisper"' in x and "/v1/audio/transcriptions" in x and 'status="200"' in x)
    assert float(line.rsplit(" ", 1)[1]) >= 1


def test_api_keys_are_required_when_configured(tmp_path, standins):
    keyed = InThreadApp(tmp_path, PROXY_API_KEYS="k1").start()
    try:
        registry = Registry()
        registry.running["transcription"].append(Endpoint("whisper", "transcription", "spark1",
                                                          standins["transcription"].base_url, "m"))
        keyed.app.state.services = registry
        url = f"{keyed.url}/v1"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).audio.transcriptions.create(
                file=AUDIO, model="whisper-1")
        result = openai.OpenAI(base_url=url, api_key="k1", max_retries=0).audio.transcriptions.create(
            file=AUDIO, model="whisper-1")
        assert result.text == TEXT
    finally:
        keyed.stop()


def test_the_live_cluster_script_prints_timings_and_who_said_what(gateway, registry, tmp_path):
    audio = tmp_path / "meeting.wav"
    audio.write_bytes(AUDIO[1])
    script = Path(__file__).resolve().parent.parent / "scripts" / "audio_e2e.py"
    done = subprocess.run([sys.executable, str(script), gateway.url, str(audio), "--plain"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "3 turns, 2 speakers (A, B)" in done.stdout and "real-time factor" in done.stdout
    assert "the speakers cost" in done.stdout
    assert "B  [   3.50-   5.80]  Great, thanks. The weather was fine." in done.stdout
    registry.running["diarization"].clear()
    done = subprocess.run([sys.executable, str(script), gateway.url, str(audio)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1 and "HTTP 503: No diarization service is running" in done.stderr


def test_a_whisper_model_still_loading_is_waited_for_then_used(client, gateway, registry, standins):
    import threading
    import time as _time

    from app.swap import State

    registry.running["transcription"].clear()   # no service: the loading model is the only way
    loading = gateway.add_deployment(standins["vllm"].base_url, name="whisper-large-v3-turbo",
                                     served_name="openai/whisper-large-v3-turbo", capabilities=("audio",),
                                     state=State.LOADING)

    def becomes_ready():
        _time.sleep(1.0)
        gateway.app.state.lifecycle._transition(loading, State.READY, "ready")

    threading.Thread(target=becomes_ready, daemon=True).start()
    started = _time.monotonic()
    result = client.audio.transcriptions.create(file=AUDIO, model="whisper-1")
    assert _time.monotonic() - started >= 0.9, "answered before the model was ready"
    assert result.text == TEXT
    assert standins["vllm"].requests and standins["vllm"].requests[0]["fields"]["model"] == \
        ["openai/whisper-large-v3-turbo"]
