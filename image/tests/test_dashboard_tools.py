"""The tool panels in a real Chromium (Playwright) against the real app and two simulated Sparks: the
redaction playground (redact, placeholders highlighted and counted, restore gives the original back)
and the audio upload (a readable 503 naming the service to start while none runs; then Whisper and the
diarizer started through the Services API on the simulated Sparks, and a generated two-voice WAV
shown as speaker turns).

Screenshots go to test-artifacts/ (redaction.png, audio-503.png, audio.png).
"""

from __future__ import annotations

import re
import time

import httpx
import pytest
from playwright.sync_api import expect

import audio_gen
from browser import no_horizontal_overflow, screenshot
from conftest import sim_app

# Whisper and the diarizer run under the sim venv (faster-whisper, resemblyzer): the engines.
pytestmark = [pytest.mark.integration, pytest.mark.engines]
expect.set_options(timeout=15_000)

TEXT = "Write to john.smith@example.com or call +1 415-555-0132 about the invoice; cc mary.major@example.org."
# Three short turns, two voices: a small WAV (about 10 s) with an exact ground truth.
SCRIPT = (
    ("speaker_0", "Good morning. Did you read the report I sent yesterday?", 0.5),
    ("speaker_1", "Yes, I read it last night. The numbers look much better.", 0.8),
    ("speaker_0", "Thank you. Let us meet again on Monday morning.", 0.8),
)


@pytest.fixture(scope="module")
def app(sim_cluster, tmp_path_factory):
    """The app as a user starts it, its redaction maps in a fresh directory."""
    with sim_app(sim_cluster, tmp_path_factory.mktemp("dashboard-tools")) as running:
        yield running


@pytest.fixture(autouse=True)
def no_containers(sim_cluster):
    yield
    for node in sim_cluster.nodes:
        sim_cluster.ssh(node.name, "docker ps -aq | xargs -r docker rm -f")


@pytest.fixture(scope="module")
def small_wav(tmp_path_factory):
    problem = audio_gen.tools_missing()
    if problem:
        pytest.fail(problem)
    return audio_gen.generate(tmp_path_factory.mktemp("small-wav"), script=SCRIPT)


def services_running(app, sim_cluster, where: dict[str, str], within_s: float) -> None:
    """Wait until every service in `where` (name -> node) is running; else fail with their states and logs."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        states = {name: app.get(f"/api/services/{name}").json() for name in where}
        if all(s["state"] == "running" for s in states.values()):
            return
        if any(s["state"] == "failed" for s in states.values()):
            break
        time.sleep(1)
    logs = {name: sim_cluster.ssh(node, f"docker logs sc-svc-{name} 2>&1 | tail -15; "
                                        f"cat ${{SPARKSIM_STATE:-~/.sparksim}}/containers/*/supervisor.err 2>/dev/null | tail -5").stdout
            for name, node in where.items()}
    app_log = "\n".join(app.log().splitlines()[-15:])
    pytest.fail(f"audio services not running: {[(n, s['state'], s['detail']) for n, s in states.items()]}\n{logs}\n"
                f"app log:\n{app_log}")


def test_redaction_round_trip(app, pages):
    page, problems = pages.open(app.url)
    panel = page.locator("#redaction")
    panel.get_by_label("Text with personal data").fill(TEXT)
    panel.get_by_role("button", name="Redact").click()
    redacted = panel.locator('[data-slot="redacted"]')
    expect(redacted).to_have_text(re.compile(r"^Write to \[EMAIL_1\] or call \[PHONE_1\] about the invoice; cc \[EMAIL_2\]\.$"))
    expect(redacted.locator("mark.placeholder")).to_have_text(["[EMAIL_1]", "[PHONE_1]", "[EMAIL_2]"])
    assert "john.smith" not in redacted.text_content()
    expect(panel.locator('[data-slot="counts"] li')).to_have_text(["EMAIL × 2", "PHONE × 1"])
    conversation = panel.locator('[data-slot="conversation"]').text_content()
    assert re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", conversation or ""), conversation

    # The answer as a model might write it back, tags respelled: every original returns.
    answer = panel.get_by_label(re.compile("An answer to restore"))
    expect(answer).to_have_value(redacted.text_content())
    panel.get_by_role("button", name="Restore").click()
    expect(panel.locator('[data-slot="restored"]')).to_have_text(TEXT)
    answer.fill("Dear [email 1], we called [Phone-1] and [PERSON_9].")
    panel.get_by_role("button", name="Restore").click()
    expect(panel.locator('[data-slot="restored"]')).to_have_text(
        "Dear john.smith@example.com, we called +1 415-555-0132 and [PERSON_9].")
    screenshot(panel, "redaction.png")

    # Only the ticked entity types; an unknown conversation is a readable refusal.
    panel.get_by_label("PHONE").check()
    panel.get_by_label("Conversation id").fill("playground-2")
    panel.get_by_role("button", name="Redact").click()
    expect(redacted).to_have_text(re.compile(r"john\.smith@example\.com or call \[PHONE_1\]"))
    # The playground's conversations live apart from the apps' (docs/API.md): its namespace.
    expect(panel.locator('[data-slot="conversation"]')).to_have_text("dashboard-playground-2")
    # The conversation is forgotten behind the page's back (as REDACTION_TTL_S would).
    assert httpx.delete(f"{app.url}/api/redact/conversations/dashboard-playground-2", timeout=10).status_code == 200
    panel.get_by_role("button", name="Restore").click()
    expect(panel.locator('[data-slot="restore-error"]')).to_have_text(re.compile(
        r"^Could not restore: no redaction conversation 'dashboard-playground-2'"))
    page.set_viewport_size({"width": 390, "height": 844})
    assert no_horizontal_overflow(page)[0] <= 390
    assert problems.unexpected(r"HTTP 404: .*/api/dashboard/unredact$", r"status of 404") == [], problems.items


def test_audio_upload_503_then_a_diarized_transcript(app, sim_cluster, pages, small_wav):
    page, problems = pages.open(app.url)
    panel = page.locator("#audio")
    panel.get_by_role("button", name=re.compile("^Audio file")).set_input_files(str(small_wav.wav))
    panel.get_by_role("button", name="Transcribe").click()
    error = panel.locator('[data-slot="error"]')
    expect(error).to_have_text(re.compile(
        r"^Transcription failed: No transcription service is running.*whisper.* Start one in the Services panel\.$"))
    expect(panel.locator('[data-slot="result"]')).to_be_hidden()
    expect(panel.get_by_role("button", name="Transcribe")).to_be_enabled()
    screenshot(panel, "audio-503.png")

    # The real audio services, started as the Services panel does, on the simulated Sparks.
    for name, node in (("whisper", "spark1"), ("diarizer", "spark2")):
        started = app.post(f"/api/services/{name}/start", json={"node": node})
        assert started.status_code == 202, started.text
    services_running(app, sim_cluster, {"whisper": "spark1", "diarizer": "spark2"}, within_s=180)

    panel.get_by_role("spinbutton", name=re.compile("^Speakers")).fill("2")
    record = """() => { window.__upload = [];
        const bar = document.querySelector('#audio [data-slot=upload-bar]');
        new MutationObserver(() => window.__upload.push(bar.getAttribute('value')))
            .observe(bar, {attributes: true}); }"""
    page.evaluate(record)
    # From the keyboard: the Services panel above may still be redrawing the new services, and a
    # mouse click aimed at a moving button can miss it (test_dashboard_keys.py).
    panel.get_by_role("button", name="Transcribe").press("Enter")
    turns = panel.locator("li.turn")
    expect(turns.first).to_be_visible(timeout=120_000)
    expect(error).to_be_hidden()
    speakers = turns.evaluate_all("items => items.map(i => i.dataset.speaker)")
    assert set(speakers) == {"A", "B"} and speakers[0] == "A", speakers
    assert speakers.count("B") >= 1
    expect(turns.first.locator(".speaker")).to_have_class(re.compile(r"\bspeaker-0\b"))
    expect(panel.locator('li.turn[data-speaker="B"] .speaker').first).to_have_class(re.compile(r"\bspeaker-1\b"))
    expect(turns.first.locator(".turn-time")).to_have_text(re.compile(r"^0:\d\d\.\d–0:\d\d\.\d$"))
    text = " ".join(turns.locator(".turn-text").all_text_contents()).lower()
    assert "report" in text and "monday" in text, text
    expect(panel.locator('[data-slot="summary"]')).to_have_text(re.compile(r"conversation\.wav · \d+ s · 2 speakers · \d+ turns"))
    assert "100" in [v.split(".")[0] for v in page.evaluate("window.__upload") if v], "the upload bar never filled"
    screenshot(panel, "audio.png")
    page.set_viewport_size({"width": 390, "height": 844})
    assert no_horizontal_overflow(page)[0] <= 390
    screenshot(panel, "audio-phone.png")
    assert problems.unexpected(r"HTTP 503: .*/api/dashboard/audio/transcriptions$", r"status of 503") == [], problems.items
