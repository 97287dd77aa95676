"""Who said what, through the whole stack: the openai SDK -> spark-control's
/v1/audio/transcriptions -> a faster-whisper service and a diarization service, both started
over SSH on the simulated Sparks through the services API -> the merge -> diarized_json.
Measured on a generated two-voice conversation against its exact ground truth."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import openai
import pytest

import audio_gen
from conftest import free_port, sim_app
from test_dashboard_tools import services_running

pytestmark = [pytest.mark.integration, pytest.mark.engines]

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="module")
def conversation(tmp_path_factory):
    problem = audio_gen.tools_missing()
    if problem:
        pytest.fail(problem)
    return audio_gen.generate(tmp_path_factory.mktemp("e2e-conversation"))


@pytest.fixture(scope="module")
def app(sim_cluster, tmp_path_factory, conversation):
    data = tmp_path_factory.mktemp("audio-e2e")
    oracle = (FIXTURES / "oracle_diarizer.py").read_text().replace(
        '"__TURNS__"', repr(json.dumps(conversation.turn_dicts())))
    run_oracle = json.dumps(["python3", "-c",
                             f"import base64; exec(base64.b64decode('{base64.b64encode(oracle.encode()).decode()}'))"])
    overrides = data / "services.yaml"
    overrides.write_text("services:\n"
                         f"  oracle-diarizer: {{kind: diarization, image: python:3.11-slim, node: spark2, "
                         f"port: {free_port()}, start_timeout_s: 30, args: {run_oracle}}}\n")
    with sim_app(sim_cluster, data, SERVICES_OVERRIDES=str(overrides)) as running:
        yield running


def hypothesis_words(result) -> list[tuple[str, str]]:
    return [(word, segment.speaker) for segment in result.segments for word in audio_gen.normalise(segment.text)]


def transcribe(app, conversation, **extra):
    client = openai.OpenAI(base_url=f"{app.url}/v1", api_key="unused", max_retries=0, timeout=180)
    with open(conversation.wav, "rb") as audio:
        return client.audio.transcriptions.create(file=audio, model="gpt-4o-transcribe-diarize",
                                                  response_format="diarized_json", chunking_strategy="auto",
                                                  **extra)


def score(conversation, result, label: str) -> float:
    reference = conversation.reference_words()
    hypothesis = hypothesis_words(result)
    error, matched = audio_gen.wder(reference, hypothesis)
    by_speaker: dict[str, list[str]] = {}
    for word, speaker in hypothesis:
        by_speaker.setdefault(speaker, []).append(word)
    print(f"\n{label}: WER {audio_gen.wer([w for w, _ in reference], [w for w, _ in hypothesis]):.1%}, "
          f"WDER {error:.1%} over {matched} matched words ({1 - error:.1%} with the right speaker), "
          f"cpWER {audio_gen.cpwer(_by_speaker(reference), by_speaker):.1%}, "
          f"{len(result.segments)} turns")
    return error


def _by_speaker(words: list[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for word, speaker in words:
        out.setdefault(speaker, []).append(word)
    return out


def test_whole_stack_with_ground_truth_turns_gets_95_percent_of_words_right(app, sim_cluster, conversation):
    for name, node in (("whisper", "spark1"), ("oracle-diarizer", "spark2")):
        started = app.post(f"/api/services/{name}/start", json={"node": node})
        assert started.status_code == 202, started.text
    services_running(app, sim_cluster, {"whisper": "spark1", "oracle-diarizer": "spark2"}, within_s=180)
    result = transcribe(app, conversation)
    assert len({s.speaker for s in result.segments}) == len(conversation.speakers) == 2  # labelled A, B as OpenAI does
    assert score(conversation, result, "ground-truth turns") <= 0.05
    assert app.post("/api/services/oracle-diarizer/stop").status_code == 200


def test_whole_stack_with_the_real_diarizer(app, sim_cluster, conversation):
    started = app.post("/api/services/diarizer/start", json={"node": "spark2"})
    assert started.status_code == 202, started.text
    services_running(app, sim_cluster, {"whisper": "spark1", "diarizer": "spark2"}, within_s=180)
    result = transcribe(app, conversation, extra_body={"num_speakers": 2})
    assert len({s.speaker for s in result.segments}) == 2
    # The real diarizer on espeak voices (tests/test_audio_engines.py measures it alone at 4.5-5.7 %).
    assert score(conversation, result, "resemblyzer turns") <= 0.15
    for name in ("whisper", "diarizer"):
        assert app.post(f"/api/services/{name}/stop").status_code == 200
