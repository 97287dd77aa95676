"""The Models panel in a real Chromium (Playwright) against the real app and two simulated Sparks.

Launch, dry run, logs, refusals, swap and stop are all done by clicking, and every assertion is
on what the panel shows. The simulated vLLM answers with real tokens (llama.cpp) and loads in
about a second. Screenshots go to test-artifacts/ (models.png, models-loading.png,
models-phone.png).
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from browser import no_horizontal_overflow, screenshot
from conftest import deployed, launching_app_fixtures

pytestmark = pytest.mark.integration
expect.set_options(timeout=15_000)

READY_WITHIN_MS = 60_000


# ---------------------------------------------------------------- fixtures


# The app for the whole module; every test ends with no model deployed and no container on any node.
app, clean_nodes = launching_app_fixtures("dashboard-models", stop_within_s=60, poll_s=0.3)


@pytest.fixture
def open_dashboard(app, pages):
    """open_dashboard(width) -> (page, PageProblems): the dashboard, its catalog rendered."""

    def _open(width: int = 1280, height: int = 900):
        page, problems = pages.open(app.url, width, height, permissions=["clipboard-read", "clipboard-write"])
        expect(page.locator("#models li.model")).to_have_count(len(app.get("/api/models").json()["models"]))
        expect(page.locator('#models [data-slot="feed"]')).to_have_attribute("data-state", "live")
        return page, problems

    return _open


def row(page, model: str):
    return page.locator(f'#models li.model[data-model="{model}"]')


def badge(page, model: str):
    return row(page, model).locator('[data-slot="badge"]')


def record_states(page, model: str) -> None:
    """Remember every state and progress line the row shows from now on (window.__seen[model])."""
    page.evaluate("""(model) => {
        const row = document.querySelector(`#models li.model[data-model="${model}"]`);
        window.__seen = window.__seen || {};
        const seen = window.__seen[model] = [];
        const note = () => {
            const entry = [row.dataset.state, row.querySelector('[data-slot="detail"]').textContent];
            const last = seen[seen.length - 1];
            if (!last || last[0] !== entry[0] || last[1] !== entry[1]) seen.push(entry);
        };
        new MutationObserver(note).observe(row, {subtree: true, childList: true, characterData: true,
                                                 attributes: true, attributeFilter: ["data-state"]});
        note();
    }""", model)


def seen_states(page, model: str) -> list[list[str]]:
    return page.evaluate("(model) => window.__seen[model]", model)


def hold_port(sim_cluster, node: str, port: int) -> int:
    """Start a process that listens on `port` on the node (not a container); returns its pid."""
    address = sim_cluster.node(node).address
    listening = f"python3 -c 'import socket; socket.create_connection((\"{address}\", {port}), 0.2)'"
    script = (f"nohup python3 -m http.server {port} --bind {address} >/dev/null 2>&1 </dev/null & pid=$!; "
              f"for i in $(seq 50); do {listening} 2>/dev/null && break; sleep 0.1; done; {listening} && echo $pid")
    return int(sim_cluster.ssh(node, script, check=True).stdout.strip())


# ---------------------------------------------------------------- tests


def test_dry_run_shows_the_exact_command_and_a_refused_launch(app, sim_cluster, open_dashboard):
    page, problems = open_dashboard()
    qwen = row(page, "qwen3-4b")
    expect(badge(page, "qwen3-4b")).to_have_text("stopped")
    expect(qwen.locator('[data-slot="where"]')).to_have_text("Not running")
    expect(qwen.locator('[data-slot="size"]')).to_have_text("8 GB")
    expect(qwen.locator('[data-slot="capabilities"] .tag')).to_have_text(["chat", "completions"])
    expect(qwen.locator(".weight")).to_have_count(2)  # one per node: present or not
    # A two-node model cannot be placed on one node: those choices are there but disabled.
    expect(row(page, "qwen3-235b-a22b").locator('[data-slot="placement"] option[value="spark1"]')).to_be_disabled()

    qwen.get_by_label("Placement of qwen3-4b").select_option("spark2")
    qwen.get_by_role("button", name="Dry run").click()
    verdict = qwen.locator(".verdict")
    expect(verdict).to_have_attribute("data-kind", "ok")
    expect(verdict).to_contain_text("Pre-flight ok")
    command = qwen.locator('pre.command[data-node="spark2"]')
    expect(command).to_have_text(re.compile(r"^docker run -d --name spark-control-qwen3-4b "))
    expected = app.get("/api/models/qwen3-4b/command", params={"placement": "spark2"}).json()["commands"][0]["command"]
    assert command.text_content() == expected
    qwen.get_by_role("button", name="Copy the command for spark2").click()
    expect(qwen.locator(".copy-status")).to_have_text("Copied.")
    assert page.evaluate("navigator.clipboard.readText()") == expected
    qwen.get_by_role("button", name="Dry run").click()
    expect(qwen.locator('[data-slot="dry-run"]')).to_be_hidden()
    assert problems.unexpected() == [], problems.items

    # Something else holds port 8000 on spark1: the dry run lists it, and a launch is refused (400).
    holder = hold_port(sim_cluster, "spark1", 8000)
    try:
        qwen.get_by_label("Placement of qwen3-4b").select_option("spark1")
        qwen.get_by_role("button", name="Dry run").click()
        expect(verdict).to_have_attribute("data-kind", "refused")
        expect(verdict).to_contain_text("Pre-flight refused the launch (1 problem)")
        expect(qwen.locator('.findings[data-kind="problem"] li[data-check="port"]')).to_contain_text(
            "spark1: --port 8000 is already listening")
        qwen.get_by_role("button", name="Launch qwen3-4b").click()
        expect(qwen.locator('[data-slot="error"]')).to_have_text(re.compile(
            r"^Launch refused: pre-flight refused the launch \(1 problem\): spark1: --port 8000 is already listening"))
        expect(badge(page, "qwen3-4b")).to_have_text("stopped")
        expect(qwen.get_by_role("button", name="Launch qwen3-4b")).to_be_enabled()
    finally:
        sim_cluster.ssh("spark1", f"kill {int(holder)}")
    assert problems.unexpected(r"HTTP 400: .*/api/models/qwen3-4b/launch$", r"status of 400") == [], problems.items


def test_launch_logs_busy_swap_and_stop(app, sim_cluster, open_dashboard):
    page, problems = open_dashboard()
    qwen, gemma = row(page, "qwen3-4b"), row(page, "gemma-3-27b-it")

    # Launch qwen3-4b on spark2 from the keyboard and watch it load, then become ready.
    qwen.get_by_label("Placement of qwen3-4b").select_option("spark2")
    record_states(page, "qwen3-4b")
    launch = qwen.get_by_role("button", name="Launch qwen3-4b")
    launch.focus()
    page.keyboard.press("Enter")
    page.wait_for_selector('#models li.model[data-model="qwen3-4b"][data-state="loading"]', timeout=READY_WITHIN_MS)
    screenshot(qwen, "models-loading.png")  # amber, with the progress line (it may just have turned ready)
    expect(badge(page, "qwen3-4b")).to_have_text("ready", timeout=READY_WITHIN_MS)
    states = seen_states(page, "qwen3-4b")
    names = [s for s, _ in states]
    assert "loading" in names and names.index("loading") < names.index("ready"), states
    assert any(s == "loading" and detail for s, detail in states), f"no progress line while loading: {states}"
    expect(qwen.locator('[data-slot="where"]')).to_have_text(re.compile(r"^Serving on spark2 at http://"))
    expect(qwen.get_by_role("button", name="Stop qwen3-4b")).to_be_focused()  # Launch is disabled now
    expect(page.locator('#models [data-slot="summary"]')).to_contain_text("1 ready")

    # Its logs, followed: vLLM's own lines.
    qwen.get_by_role("button", name="Logs of qwen3-4b").click()
    log = qwen.locator("pre.log")
    expect(qwen.locator('[data-slot="logs-title"]')).to_have_text("Logs of spark-control-qwen3-4b on spark2")
    expect(log).to_contain_text("vLLM API server version")
    expect(log).to_contain_text("Starting vLLM API server")
    expect(qwen.locator('[data-slot="logs-status"]')).to_have_text("following")

    # Another model on the same port of that node: refused by the node checks, next to that model.
    gemma.get_by_label("Placement of gemma-3-27b-it").select_option("spark2")
    gemma.get_by_role("button", name="Launch gemma-3-27b-it").click()
    expect(gemma.locator('[data-slot="error"]')).to_have_text(re.compile(
        r"^Launch refused: .*port 8000 is already listening \(held by .*spark-control-qwen3-4b.*Swap replaces what runs there\.$"))
    expect(badge(page, "gemma-3-27b-it")).to_have_text("stopped")
    gemma.get_by_role("button", name="Dry run").click()
    expect(gemma.locator(".verdict")).to_have_attribute("data-kind", "refused")
    expect(gemma.locator('.findings[data-kind="problem"] li[data-check="port"]')).to_contain_text(
        "held by container spark-control-qwen3-4b")
    page.mouse.move(0, 0)
    screenshot(page.locator("#models"), "models.png")

    # Closing the logs aborts the request that follows them.
    with page.expect_event("requestfailed", lambda r: "/api/models/qwen3-4b/logs?" in r.url, timeout=5_000) as aborted:
        qwen.get_by_role("button", name="Logs of qwen3-4b").click()
    assert "ABORTED" in str(aborted.value.failure)
    expect(log).to_be_hidden()
    expect(qwen.locator('[data-slot="logs-status"]')).to_have_text("stopped following")
    gemma.get_by_role("button", name="Dry run").click()

    # Swap to gemma-3-27b-it on spark2: qwen3-4b stops, gemma becomes ready.
    record_states(page, "qwen3-4b")
    gemma.get_by_role("button", name="Swap to gemma-3-27b-it").click()
    expect(gemma.locator('[data-slot="error"]')).to_be_hidden()
    expect(badge(page, "gemma-3-27b-it")).to_have_text("ready", timeout=READY_WITHIN_MS)
    expect(badge(page, "qwen3-4b")).to_have_text("stopped")
    expect(qwen.locator('[data-slot="where"]')).to_have_text("Not running")
    assert [s for s, _ in seen_states(page, "qwen3-4b")][-2:] == ["stopping", "stopped"]
    assert [d["model"] for d in deployed(app)] == ["gemma-3-27b-it"]

    # Phone width: nothing wider than the screen; the log scrolls inside itself.
    page.set_viewport_size({"width": 390, "height": 844})
    gemma.get_by_role("button", name="Logs of gemma-3-27b-it").click()
    expect(gemma.locator("pre.log")).to_contain_text("vLLM API server version")
    scroll_width, inner_width = no_horizontal_overflow(page)
    assert scroll_width <= inner_width, f"page is {scroll_width}px wide in a {inner_width}px viewport"
    inside = gemma.locator("pre.log").evaluate("p => [p.scrollHeight > p.clientHeight, p.scrollWidth <= p.clientWidth]")
    assert inside == [True, True], inside
    for name in ("Launch", "Swap", "Stop", "Dry run", "Logs"):
        box = gemma.get_by_role("button", name=name, exact=False).first.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= inner_width and box["height"] >= 34, (name, box)
    page.mouse.move(0, 0)
    screenshot(gemma, "models-phone.png")
    gemma.get_by_role("button", name="Logs of gemma-3-27b-it").click()
    page.set_viewport_size({"width": 1280, "height": 900})

    # Stop.
    gemma.get_by_role("button", name="Stop gemma-3-27b-it").click()
    expect(badge(page, "gemma-3-27b-it")).to_have_text("stopped", timeout=30_000)
    expect(gemma.locator('[data-slot="where"]')).to_have_text("Not running")
    assert deployed(app) == []
    assert sim_cluster.ssh("spark2", "docker ps -aq").stdout.strip() == ""
    expect(page.locator('#models [data-slot="summary"]')).to_have_text(re.compile(r"^\d+ in the catalog$"))
    assert problems.unexpected(r"HTTP 400: .*/api/models/gemma-3-27b-it/launch$", r"status of 400",
                               r"request failed: .*/logs\?.* net::ERR_ABORTED") == [], problems.items


def test_add_a_replica_and_stop_both(app, sim_cluster, open_dashboard):
    assert app.post("/api/models/qwen3-4b/launch", json={"placement": "spark1"}).status_code == 202
    page, problems = open_dashboard()
    qwen = row(page, "qwen3-4b")
    expect(badge(page, "qwen3-4b")).to_have_text("ready", timeout=READY_WITHIN_MS)
    expect(qwen.get_by_role("button", name="Launch qwen3-4b")).to_be_disabled()  # spark1 is in use

    # Another node: the button offers a replica there; the gateway then spreads requests over both.
    qwen.get_by_label("Placement of qwen3-4b").select_option("spark2")
    qwen.get_by_role("button", name="Add replica of qwen3-4b").click()
    where = qwen.locator('[data-slot="where"]')
    expect(where).to_have_text(re.compile(r"^Serving on spark1 at http://\S+; replica: spark2 \(ready\)$"),
                               timeout=READY_WITHIN_MS)
    expect(qwen.get_by_role("button", name="Launch qwen3-4b")).to_be_disabled()  # both nodes in use now
    screenshot(qwen, "models-replicas.png")

    qwen.get_by_role("button", name="Stop qwen3-4b").click()
    expect(badge(page, "qwen3-4b")).to_have_text("stopped", timeout=30_000)
    expect(where).to_have_text("Not running")
    assert not sim_cluster.ssh("spark1", "docker ps -q").stdout.strip()
    assert not sim_cluster.ssh("spark2", "docker ps -q").stdout.strip()
    assert problems.unexpected() == [], problems.items
