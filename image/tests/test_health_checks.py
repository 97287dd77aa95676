"""Deep health's judges: what counts as a sensible answer, the test audio, and memory headroom."""

from __future__ import annotations

import io
import math
import wave

from app import deep_health as dh
from app.health import Target


def embeddings(vectors) -> dict:
    return {"data": [{"index": i, "embedding": v} for i, v in enumerate(vectors)]}


def test_the_test_audio_is_one_second_of_16_khz_mono_wav():
    with wave.open(io.BytesIO(dh.tone_wav())) as audio:
        assert (audio.getnchannels(), audio.getsampwidth(), audio.getframerate(), audio.getnframes()) == (
            1, 2, 16000, 16000)
        assert max(audio.readframes(100)) > 0  # a tone, not silence


def test_a_chat_answer_must_mention_paris():
    def chat(text):
        return {"choices": [{"message": {"role": "assistant", "content": text}}]}

    assert dh.check_chat(chat("Paris is the capital of France."))[0]
    ok, detail = dh.check_chat(chat("Banana."))
    assert not ok and "'Banana.'" in detail and "Paris" in detail
    assert not dh.check_chat({"error": "x"})[0]
    assert not dh.check_chat(chat(None))[0]


def test_embeddings_need_the_expected_dimension_and_sense():
    cat, cat2, markets = [1.0, 0.1, 0.0], [0.9, 0.2, 0.0], [0.0, 0.1, 1.0]
    ok, detail = dh.check_embeddings(embeddings([cat, cat2, markets]), 3)
    assert ok and "dimension 3" in detail
    assert dh.check_embeddings(embeddings([cat, cat2, markets]), 384)[1] == "dimension 3, expected 384"
    ok, detail = dh.check_embeddings(embeddings([cat, markets, cat2]), None)
    assert not ok and "paraphrase is not closer" in detail
    assert "different dimensions" in dh.check_embeddings(embeddings([cat, cat2, [1.0]]), None)[1]
    assert "zero or not finite" in dh.check_embeddings(embeddings([cat, cat2, [0.0, 0.0, 0.0]]), None)[1]
    assert "zero or not finite" in dh.check_embeddings(embeddings([cat, cat2, [math.inf, 0, 0]]), None)[1]
    assert "2 embeddings for 3 inputs" in dh.check_embeddings(embeddings([cat, cat2]), None)[1]
    assert not dh.check_embeddings({"data": "nope"}, None)[0]


def test_audio_answers_need_their_shape():
    assert dh.check_transcription({"text": ""})[0]
    assert not dh.check_transcription({"segments": []})[0]
    assert dh.check_diarization({"duration": 1.0, "segments": []})[0]
    assert not dh.check_diarization({"text": "hi"})[0]


def test_each_kind_gets_its_real_request():
    def target(kind, caps):
        return Target("service", "x", kind, "spark1", "http://h:1", "/health", "running", "m", caps)

    assert dh.check_kind(target("chat+completions", ("chat", "completions"))) == "chat"
    assert dh.check_kind(target("nim", ("nim",))) == "chat"
    assert dh.check_kind(target("embeddings", ("embeddings",))) == "embeddings"
    assert dh.check_kind(target("audio", ("audio",))) == "transcription"
    assert dh.check_kind(target("diarization", ("diarization",))) == "diarization"
    assert dh.check_kind(target("other", ("other",))) is None


def test_memory_headroom_warns_under_the_threshold_and_says_unknown_without_figures():
    latest = {"spark1": {"reachable": True, "memory": {"available_bytes": 50e9}},
              "spark2": {"reachable": True, "memory": {"available_bytes": 4e9}},
              "spark3": {"reachable": False, "reason": "connection refused"}}
    result = {m["node"]: m for m in dh.memory_headroom(latest, ["spark1", "spark2", "spark3", "spark4"], 8)}
    assert result["spark1"]["status"] == "ok" and result["spark1"]["available_gb"] == 50.0
    assert result["spark2"]["status"] == "warning" and "only 4.0 GB available" in result["spark2"]["detail"]
    assert result["spark3"] == {"node": "spark3", "status": "unknown", "available_gb": None, "min_available_gb": 8,
                                "detail": "connection refused"}
    assert result["spark4"]["status"] == "unknown"
