"""The operations panels in a real Chromium (Playwright) against the real app and two simulated Sparks:
Services & NIMs (spark-embed started on spark1 from the panel, healthy, its logs, stopped), Health (a
deep check run from the panel), Downloads (progress to done through copy and verify; a cancel) and
Disk (per-node bars, a running model's cache refused, another deleted after the confirm step).

Every assertion is on what the page shows. Screenshots go to test-artifacts/ (services.png,
health.png, downloads.png, disk.png, ops-phone.png).
"""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import expect

from browser import no_horizontal_overflow, screenshot
from conftest import launching_app_fixtures
from test_services import model_on_spark1  # noqa: F401  (a fixture: spark-embed's model on spark1)

# spark-embed runs under the sim venv (torch) and gpt-oss-20b under llama.cpp: the engines.
pytestmark = [pytest.mark.integration, pytest.mark.engines]
expect.set_options(timeout=15_000)

HUB = "$HOME/.cache/huggingface/hub"

app, clean_nodes = launching_app_fixtures("dashboard-ops", stop_within_s=60, poll_s=0.3)


@pytest.fixture
def open_dashboard(app, pages):
    """open_dashboard(width) -> (page, PageProblems): the dashboard with its services listed."""

    def _open(width: int = 1280, height: int = 900):
        page, problems = pages.open(app.url, width, height)
        expect(page.locator("#services li.service")).to_have_count(len(app.get("/api/services").json()["services"]))
        return page, problems

    return _open


def hf_download(sim_cluster, node: str, repo: str) -> str:
    """Put a repo in the node's cache with the node's own `hf`, as an operator would."""
    sim_cluster.ssh(node, f"SPARKSIM_HF_SECONDS=0.2 hf download {repo} --cache-dir {HUB}", check=True)
    return "models--" + repo.replace("/", "--")


def record(page, selector: str, attribute: str) -> None:
    """Remember every value `attribute` of the element at `selector` takes from now on (window.__seen)."""
    page.evaluate("""([selector, attribute]) => {
        const node = document.querySelector(selector);
        window.__seen = window.__seen || {};
        const seen = window.__seen[selector + "@" + attribute] = [];
        const note = () => {
            const value = node.getAttribute(attribute);
            if (seen[seen.length - 1] !== value) seen.push(value);
        };
        new MutationObserver(note).observe(node, {attributes: true, attributeFilter: [attribute]});
        note();
    }""", [selector, attribute])


def assert_fits_a_phone(page) -> None:
    """At 390 px wide (a phone), nothing on the page is wider than the screen."""
    page.set_viewport_size({"width": 390, "height": 844})
    scroll_width, inner_width = no_horizontal_overflow(page)
    assert scroll_width <= inner_width, f"page is {scroll_width}px wide in a {inner_width}px viewport"


def seen(page, selector: str, attribute: str) -> list[str]:
    return page.evaluate("(key) => window.__seen[key]", f"{selector}@{attribute}")


# ---------------------------------------------------------------- tests


def test_every_panel_loads_without_errors_and_fits_a_phone(app, open_dashboard):
    page, problems = open_dashboard()
    for panel in ("nodes", "models", "connectivity", "services", "health", "downloads", "disk", "redaction", "audio"):
        expect(page.locator(f"#{panel} h2")).to_be_visible()
    embed = page.locator('#services li.service[data-service="spark-embed"]')
    expect(embed.locator('[data-slot="state"]')).to_have_text("stopped")
    expect(embed.locator('[data-slot="where"]')).to_have_text("Not running · starts on spark1 · port 8001")
    expect(embed.get_by_role("button", name="Stop spark-embed")).to_be_disabled()
    expect(embed.get_by_label("Node to start spark-embed on").locator("option")).to_have_text(["spark1", "spark2"])
    expect(page.locator('#services li.service[data-kind="nim"]')).to_have_count(1)
    expect(page.locator("#health [data-slot=quick-empty]")).to_be_visible()  # nothing runs yet
    expect(page.locator("#health [data-slot=deep-status]")).to_have_text(re.compile(r"^deep: (healthy|warning)$"))
    expect(page.locator("#health [data-slot=memory] li")).to_have_count(2)
    expect(page.locator("#disk article.disk-card")).to_have_count(2)
    expect(page.locator('#downloads [data-slot="node"] option')).to_have_text(["first node (spark1)", "spark1", "spark2"])
    expect(page.locator("#redaction [data-slot=entities] input[type=checkbox]")).to_have_count(12)
    expect(page.locator("#audio input[type=file]")).to_have_attribute("accept", "audio/*")
    for panel in ("services", "health", "downloads", "disk", "redaction", "audio"):
        expect(page.locator(f"#{panel} .error:visible")).to_have_count(0)

    assert_fits_a_phone(page)
    screenshot(page, "ops-phone.png")
    screenshot(page.locator("#services"), "services-phone.png")
    # Every control of the new panels has a name a screen reader reads out.
    unnamed = page.evaluate("""() => [...document.querySelectorAll(
        '#services button, #services select, #health button, #downloads input, #downloads select, #downloads button,'
        + '#disk button, #redaction textarea, #redaction input, #redaction button, #audio input, #audio button')]
        .filter((e) => !e.closest('[hidden]') && !(e.labels?.length || e.getAttribute('aria-label') || e.textContent.trim()))
        .map((e) => e.outerHTML.slice(0, 80))""")
    assert unnamed == []
    assert problems.unexpected() == [], problems.items


def test_start_a_service_see_it_healthy_run_deep_health_and_stop_it(app, sim_cluster, open_dashboard, model_on_spark1):
    page, problems = open_dashboard()
    embed = page.locator('#services li.service[data-service="spark-embed"]')
    embed.get_by_label("Node to start spark-embed on").select_option("spark1")
    record(page, '#services li.service[data-service="spark-embed"]', "data-state")
    embed.get_by_role("button", name="Start spark-embed", exact=True).click()
    expect(embed).to_have_attribute("data-state", "running", timeout=180_000)
    assert "starting" in seen(page, '#services li.service[data-service="spark-embed"]', "data-state")
    address = sim_cluster.node("spark1").address
    expect(embed.locator('[data-slot="where"]')).to_contain_text(f"On spark1 at http://{address}:8001")
    expect(embed.locator('[data-slot="health"]')).to_have_text(re.compile(r"healthy, [\d.]+ ms$"))
    expect(embed.get_by_role("button", name="Start spark-embed", exact=True)).to_be_disabled()
    expect(page.locator("#services [data-slot=summary]")).to_contain_text("1 running")

    embed.get_by_role("button", name="Logs of spark-embed").click()
    expect(embed.locator('[data-slot="logs-title"]')).to_have_text("Logs of sc-svc-spark-embed on spark1")
    expect(embed.locator("pre.log")).to_contain_text("Application startup complete")
    expect(embed.locator('[data-slot="logs-status"]')).to_have_text("following")
    page.mouse.move(0, 0)
    screenshot(page.locator("#services"), "services.png")

    # A NIM without NGC_API_KEY: refused before anything runs, the reason next to it.
    nim = page.locator('#services li.service[data-kind="nim"]')
    nim.get_by_role("button", name=re.compile(r"^Start ")).click()
    expect(nim.locator('[data-slot="error"]')).to_have_text(re.compile(r"^Start refused: .*NGC_API_KEY"))
    expect(nim).to_have_attribute("data-state", "stopped")

    # Health: quick shows spark-embed answering; the deep check sends it real sentences.
    health = page.locator("#health")
    health.get_by_role("button", name="Run deep check now").click()
    check = health.locator('[data-slot="deep"] li[data-name="spark-embed"]')
    expect(check).to_have_attribute("data-verdict", "ok", timeout=120_000)
    expect(check).to_contain_text("dimension 384, paraphrase cosine")
    expect(check.locator(".check-latency")).to_have_text(re.compile(r"^[\d.]+ ms$"))
    expect(health.locator('[data-slot="result"]')).to_have_text(re.compile(r"^Deep check at .*: (healthy|warning), 1 checked, 0 failed\.$"))
    expect(health.locator('[data-slot="memory"] li')).to_have_count(2)
    expect(health.locator('[data-slot="memory"] li[data-node="spark1"]')).to_contain_text("GB available")
    quick = health.locator('[data-slot="quick"] li[data-name="spark-embed"]')
    expect(quick).to_have_attribute("data-verdict", "ok")
    expect(quick).to_contain_text("spark1")
    expect(quick.locator(".check-latency")).to_have_text(re.compile(r"^[\d.]+ ms$"))
    screenshot(health, "health.png")

    with page.expect_event("requestfailed", lambda r: "/api/services/spark-embed/logs" in r.url, timeout=5_000):
        embed.get_by_role("button", name="Logs of spark-embed").click()
    embed.get_by_role("button", name="Stop spark-embed").click()
    expect(embed).to_have_attribute("data-state", "stopped", timeout=60_000)
    expect(embed.get_by_role("button", name="Start spark-embed", exact=True)).to_be_enabled()
    assert app.get("/api/services/spark-embed").json()["state"] == "stopped"
    assert "sc-svc-spark-embed" not in sim_cluster.ssh("spark1", "docker ps -a --format '{{.Names}}'").stdout
    assert problems.unexpected(r"HTTP 503: .*/api/services/[^/]*nim/start$", r"status of 503",
                               r"request failed: .*/api/services/spark-embed/logs") == [], problems.items


def test_a_download_shows_progress_to_done_and_another_is_cancelled(app, sim_cluster, open_dashboard):
    page, problems = open_dashboard()
    panel = page.locator("#downloads")
    repo = f"sparksim/dash-{uuid.uuid4().hex[:8]}"
    panel.get_by_label("Hugging Face repo").fill(repo)
    panel.get_by_label("Download on").select_option("spark1")
    page.evaluate("""() => {  // every state and progress value the list shows from now on
        window.__dl = {states: [], progress: []};
        new MutationObserver(() => {
            const item = document.querySelector('#downloads li.download');
            if (!item) return;
            const state = item.dataset.state, value = item.querySelector('[data-slot=bar]').getAttribute('aria-valuenow');
            if (window.__dl.states.at(-1) !== state) window.__dl.states.push(state);
            if (window.__dl.progress.at(-1) !== value) window.__dl.progress.push(value);
        }).observe(document.querySelector('#downloads [data-slot=list]'),
                   {subtree: true, attributes: true, childList: true});
    }""")
    panel.get_by_role("button", name="Download", exact=True).click()
    item = panel.locator(f'li.download[data-repo="{repo}"]')
    expect(item).to_have_attribute("data-state", "done", timeout=60_000)
    history = page.evaluate("window.__dl")
    states = [s for s in history["states"] if s]
    assert [s for s in ("downloading", "copying", "verifying", "done") if s in states] == \
        ["downloading", "copying", "verifying", "done"], history
    values = [int(v) for v in history["progress"] if v is not None]
    assert any(0 < v < 100 for v in values) and values[-1] == 100, history  # the bar moved, then filled
    expect(item.locator('[data-slot="state"]')).to_have_text("done")
    expect(item.locator('[data-slot="verification"] li[data-present="true"]')).to_have_count(2)
    expect(item.locator('[data-slot="where"]')).to_have_text("onto spark1, then copied to spark2")
    expect(item.get_by_role("button", name=re.compile("^Cancel"))).to_be_hidden()
    # The Disk panel measures again when a download ends: the new cache is on both nodes.
    dirname = "models--" + repo.replace("/", "--")
    for node in ("spark1", "spark2"):
        expect(page.locator(f'#disk article[data-node="{node}"] li.cache[data-dirname="{dirname}"]')).to_be_visible()

    slow = f"sparksim/slow-{uuid.uuid4().hex[:8]}"
    panel.get_by_label("Hugging Face repo").fill(slow)
    panel.get_by_role("button", name="Download", exact=True).click()
    slow_item = panel.locator(f'li.download[data-repo="{slow}"]')
    expect(slow_item).to_have_attribute("data-state", "downloading", timeout=30_000)
    expect(slow_item.locator('[data-slot="rate"]')).to_have_text(re.compile(r"/s · ETA |measuring"))
    screenshot(panel, "downloads.png")
    slow_item.get_by_role("button", name=f"Cancel the download of {slow}").click()
    expect(slow_item).to_have_attribute("data-state", "cancelled", timeout=30_000)
    expect(slow_item.locator('[data-slot="progress-block"]')).to_be_hidden()
    assert next(d for d in app.get("/api/downloads").json()["downloads"] if d["repo_id"] == slow)["state"] == "cancelled"

    # A hostile repo id is refused with the app's reason, and nothing starts.
    panel.get_by_label("Hugging Face repo").fill("org/x;id")
    panel.get_by_role("button", name="Download", exact=True).click()
    expect(panel.locator('[data-slot="error"]')).to_have_text(re.compile(r"^Download refused: .*repo_id"))
    expect(panel.locator("li.download")).to_have_count(len(app.get("/api/downloads").json()["downloads"]))
    assert_fits_a_phone(page)
    # The panel closes a download's event stream at its final state and drops a list fetch that a
    # newer one replaced: aborts by design, not failures.
    assert problems.unexpected(r"HTTP 400: .*/api/downloads$", r"status of 400",
                               r"request failed: .*/api/downloads\S* net::ERR_ABORTED") == [], problems.items


def test_disk_bars_a_running_models_cache_is_refused_another_is_deleted(app, sim_cluster, open_dashboard):
    used = hf_download(sim_cluster, "spark1", "openai/gpt-oss-20b")
    spare = hf_download(sim_cluster, "spark2", f"sparksim/spare-{uuid.uuid4().hex[:8]}")
    launched = app.post("/api/models/gpt-oss-20b/launch", json={"placement": "spark1"})
    assert launched.status_code == 202, launched.text

    page, problems = open_dashboard()
    disk = page.locator("#disk")
    expect(disk.locator("article.disk-card")).to_have_count(2)
    for node in ("spark1", "spark2"):
        card = disk.locator(f'article.disk-card[data-node="{node}"]')
        expect(card.locator(".usage-row").first).to_contain_text(re.compile(r"used \(\d+ %\)"))
        width = card.locator(".usage-row .bar-fill").first.evaluate("e => e.getBoundingClientRect().width")
        assert width > 0, f"{node}: the filesystem bar is empty"

    row = disk.locator(f'article[data-node="spark1"] li.cache[data-dirname="{used}"]')
    expect(row).to_have_attribute("data-in-use", "true")
    expect(row.locator(".in-use")).to_contain_text("model gpt-oss-20b")
    row.get_by_role("button", name="Delete openai/gpt-oss-20b on spark1").click()
    row.get_by_role("button", name="Confirm: delete openai/gpt-oss-20b on spark1").click()
    expect(row.locator(".cache-message")).to_have_text(re.compile(
        rf"^Not deleted: {used} on spark1 is in use by model gpt-oss-20b"))
    expect(row.get_by_role("button", name="Delete openai/gpt-oss-20b on spark1")).to_be_focused()
    assert sim_cluster.ssh("spark1", f"test -d {HUB}/{used}").returncode == 0
    screenshot(disk, "disk.png")

    # Another cache: "Keep it" backs out; confirming deletes it on the node, and it leaves the chart.
    spare_row = disk.locator(f'article[data-node="spark2"] li.cache[data-dirname="{spare}"]')
    repo = spare.removeprefix("models--").replace("--", "/")
    spare_row.get_by_role("button", name=f"Delete {repo} on spark2").click()
    spare_row.get_by_role("button", name="Keep it").click()
    expect(spare_row.get_by_role("button", name=f"Delete {repo} on spark2")).to_be_visible()
    assert sim_cluster.ssh("spark2", f"test -d {HUB}/{spare}").returncode == 0
    spare_row.get_by_role("button", name=f"Delete {repo} on spark2").click()
    spare_row.get_by_role("button", name=f"Confirm: delete {repo} on spark2").click()
    expect(spare_row.locator(".cache-message")).to_have_text(re.compile(rf"^Deleted {spare} on spark2: .* freed\.$"))
    expect(spare_row).to_have_count(0)
    assert sim_cluster.ssh("spark2", f"test -d {HUB}/{spare}").returncode != 0
    assert_fits_a_phone(page)
    assert problems.unexpected(r"HTTP 409: .*/api/disk/cache$", r"status of 409") == [], problems.items
