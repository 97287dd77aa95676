"""The dashboard in a real Chromium (Playwright) against the real app and two simulated Sparks.

Every test asserts on text the panels render, so a broken panel fails here, not just a broken
page load. Screenshots go to test-artifacts/; the one in docs/screenshot.png (the README's) is
refreshed by test_page_loads_with_both_nodes_live when UPDATE_README_SCREENSHOT=1.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from contextlib import contextmanager

import pytest
from playwright.sync_api import expect

from browser import no_horizontal_overflow, screenshot
from conftest import ARTIFACTS, IMAGE_DIR

pytestmark = pytest.mark.integration
expect.set_options(timeout=10_000)

README_SCREENSHOT = IMAGE_DIR.parent / "docs" / "screenshot.png"
GPU_IMAGE = "nvcr.io/nvidia/vllm:25.09-py3"
DOWN_WITHIN_S = 10
# Why a node is down, in words: "connection lost: ...", "cannot connect to user@host:port: ...".
REASON = re.compile(r"(connection|connect|refused|timed out|unreachable)", re.IGNORECASE)  # crash -> DOWN card: SSH keepalive 1 s in tests, probe round every 1 s


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def app(sim_cluster, start_app):
    return start_app(sim_cluster.app_env())


@pytest.fixture
def open_dashboard(app, pages):
    """open_dashboard(width=1280) -> (page, PageProblems), the dashboard loaded from the app (pages close
    before the app stops)."""

    def _open(width: int = 1280, height: int = 900, color_scheme: str = "light"):
        return pages.open(app.url, width, height, color_scheme)

    return _open


def card(page, node: str):
    return page.locator(f'article.node[data-node="{node}"]')


def conn_row(page, node: str):
    return page.locator(f'#connectivity tr[data-node="{node}"]')


def ssh(sim_cluster, node_name: str, command: str) -> str:
    """Run a shell command on a simulated Spark as its user (what spark-control does over SSH)."""
    node = sim_cluster.node(node_name)
    result = subprocess.run(
        ["ssh", "-i", str(sim_cluster.client_key), "-o", f"UserKnownHostsFile={sim_cluster.known_hosts}",
         "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-p", str(node.port),
         f"{node.user}@{node.address}", command],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"{command!r} on {node_name}: {result.stderr}"
    return result.stdout


@contextmanager
def gpu_container(sim_cluster, node_name: str, name: str):
    """A running container holding the GPU; removed afterwards (with its image, if we pulled it)."""
    had_image = bool(ssh(sim_cluster, node_name, f"docker images -q {GPU_IMAGE}").strip())
    try:
        ssh(sim_cluster, node_name, f"docker run -d --gpus all --name {name} {GPU_IMAGE} sleep 100000")
        yield
    finally:
        ssh(sim_cluster, node_name, f"docker rm -f {name} >/dev/null 2>&1 || true")
        if not had_image:
            ssh(sim_cluster, node_name, f"docker rmi {GPU_IMAGE} >/dev/null 2>&1 || true")


@contextmanager
def crashed(sim_cluster, node_name: str):
    """The node is down (pulled plug) inside the block and revived after it, whatever happens."""
    node = sim_cluster.node(node_name)
    node.crash()
    try:
        yield node
    finally:
        node.revive()


def expect_node_up(page, node: str) -> None:
    c = card(page, node)
    expect(c).to_have_attribute("data-state", "up")
    expect(c.locator('[data-slot="state"]')).to_have_text("reachable")
    expect(c.locator(".gpu-name")).to_have_text("NVIDIA GB10")
    expect(c.locator('[data-slot="memory"] [data-slot="numbers"]')).to_have_text(
        re.compile(r"^\d+(\.\d)? [KMGT]iB of \d+(\.\d)? GiB \(\d+ %\)$"))
    expect(c.locator('[data-slot="memory"] [data-slot="extra"]')).to_contain_text("available")
    expect(c.locator('[data-slot="disks"] [data-slot="label"]').first).to_have_text("/")
    expect(c.locator('[data-slot="latency"]')).to_have_text(re.compile(r"^\d+(\.\d)? ms$"))
    expect(c.locator('[data-slot="down"]')).to_be_hidden()


# ---------------------------------------------------------------- tests


def test_page_loads_with_both_nodes_live(sim_cluster, open_dashboard):
    with gpu_container(sim_cluster, "spark1", "dashboard-vllm"):
        page, problems = open_dashboard(width=1280)
        expect(page).to_have_title("spark-control")
        expect(page.locator("#live")).to_have_text("live")
        for node in ("spark1", "spark2"):
            expect_node_up(page, node)
            sim = sim_cluster.node(node)
            expect(card(page, node).locator(".address")).to_have_text(f"{sim.user}@{sim.address}:{sim.port}")
            expect(conn_row(page, node).locator(".pill")).to_have_text("up")
            expect(conn_row(page, node).locator('[data-cell="uptime"]')).to_have_text(re.compile(r"^\d+\.\d\d %$"))

        spark1 = card(page, "spark1")
        container = spark1.locator('[data-container="dashboard-vllm"]')
        expect(container).to_contain_text(GPU_IMAGE)
        expect(container.locator(".pill")).to_have_text("running")
        # A busy GPU: utilization, temperature and power are numbers, not dashes.
        expect(spark1.locator('.gpu [data-slot="util"]')).to_have_text(re.compile(r"^[1-9]\d* %$"))
        expect(spark1.locator('.gpu [data-slot="temp"]')).to_have_text(re.compile(r"^\d+ °C$"))
        expect(spark1.locator('.gpu [data-slot="power"]')).to_have_text(re.compile(r"^\d+\.\d W$"))
        expect(card(page, "spark2").locator(".containers")).to_have_text("No containers.")

        # The sparklines fill from the stream: wait for a few samples, then a drawn line.
        chart = spark1.locator('[data-chart="gpu_util"] svg')
        expect(chart).to_have_attribute("aria-label", re.compile(r"GPU utilization over the last ([3-9]|\d\d+) s"))
        assert spark1.locator('[data-chart="gpu_util"] path.spark-line').get_attribute("d").startswith("M")
        expect(spark1.locator('[data-chart="mem_used"] figcaption strong')).to_have_text(re.compile(r"^\d+ %$"))

        expect(page.locator("#connectivity .transitions li")).to_have_count(2)  # each node first seen up
        assert problems.items == [], problems.items
        screenshot(page, "dashboard.png")
        if os.environ.get("UPDATE_README_SCREENSHOT"):  # on demand, so a test run leaves the tree clean
            shutil.copyfile(ARTIFACTS / "dashboard.png", README_SCREENSHOT)
        screenshot_dark, _ = open_dashboard(width=1280, color_scheme="dark")
        expect(card(screenshot_dark, "spark1").locator(".gpu-name")).to_have_text("NVIDIA GB10")
        screenshot(screenshot_dark, "dashboard-dark.png")


def test_crashed_node_goes_down_and_comes_back(sim_cluster, open_dashboard):
    page, _ = open_dashboard(width=1280)
    expect_node_up(page, "spark2")
    with crashed(sim_cluster, "spark2"):
        spark2 = card(page, "spark2")
        expect(spark2).to_have_attribute("data-state", "down", timeout=DOWN_WITHIN_S * 1000)
        expect(spark2.locator('[data-slot="state"]')).to_have_text("DOWN")
        reason = spark2.locator('[data-slot="reason"]')
        expect(reason).to_be_visible()
        expect(reason).to_have_text(REASON)
        expect(spark2.locator(".details")).to_be_hidden()
        # The other node is unaffected.
        expect_node_up(page, "spark1")
        # The connectivity panel: DOWN with the reason, and the transition on top of the list.
        expect(conn_row(page, "spark2").locator(".pill")).to_have_text("DOWN")
        expect(conn_row(page, "spark2").locator(".reason")).to_have_text(REASON)
        expect(conn_row(page, "spark1").locator(".pill")).to_have_text("up")
        newest = page.locator("#connectivity .transitions li").first
        expect(newest).to_have_attribute("data-node", "spark2")
        expect(newest).to_have_attribute("data-state", "down")
        expect(newest.locator(".pill")).to_have_text("DOWN")
        expect(newest.locator(".reason")).to_have_text(REASON)
        screenshot(page, "node-down.png")

    expect_node_up(page, "spark2")  # reconnects on its own after the revive
    newest = page.locator("#connectivity .transitions li").first
    expect(newest).to_have_attribute("data-node", "spark2")
    expect(newest).to_have_attribute("data-state", "up")
    expect(page.locator('#connectivity .transitions li[data-node="spark2"][data-state="down"]')).to_have_count(1)
    expect(conn_row(page, "spark2").locator(".pill")).to_have_text("up")
    expect(conn_row(page, "spark2").locator('[data-cell="checks"]')).to_have_text(re.compile(r"^\d+ / [1-9]\d*$"))


def test_check_now_from_the_keyboard(open_dashboard):
    page, problems = open_dashboard(width=1280)
    expect(conn_row(page, "spark1").locator(".pill")).to_have_text("up")
    checks_before = int(conn_row(page, "spark1").locator('[data-cell="checks"]').inner_text().split(" / ")[0])
    button = page.get_by_role("button", name="Check now", exact=True)
    button.focus()
    page.keyboard.press("Enter")
    result = page.locator('#connectivity [data-slot="result"]')
    expect(result).to_have_text(re.compile(r"^Checked at .*: spark1 up \(\d+ ms\), spark2 up \(\d+ ms\)\.$"))
    expect(result).to_have_attribute("data-kind", "ok")
    expect(button).to_be_enabled()
    checks_after = int(conn_row(page, "spark1").locator('[data-cell="checks"]').inner_text().split(" / ")[0])
    assert checks_after > checks_before
    assert problems.items == [], problems.items


def test_check_now_shows_a_readable_error(open_dashboard):
    page, _ = open_dashboard(width=1280)
    expect(conn_row(page, "spark1").locator(".pill")).to_have_text("up")
    button = page.get_by_role("button", name="Check now", exact=True)
    # The app's own error shape: its message, word for word.
    page.route("**/api/connectivity/check", lambda route: route.fulfill(
        status=409, json={"error": {"message": "a check is already running", "type": "Conflict"}}))
    button.click()
    result = page.locator('#connectivity [data-slot="result"]')
    expect(result).to_have_text("Check failed: a check is already running")
    expect(result).to_have_attribute("data-kind", "error")
    # Not JSON at all (a proxy's error page, a crash): a sentence, never the body.
    page.unroute("**/api/connectivity/check")
    page.route("**/api/connectivity/check", lambda route: route.fulfill(
        status=500, body="Traceback (most recent call last):\n  File ...", content_type="text/plain"))
    button.click()
    expect(result).to_have_text("Check failed: The app answered HTTP 500 Internal Server Error.")
    # No answer at all.
    page.unroute("**/api/connectivity/check")
    page.route("**/api/connectivity/check", lambda route: route.abort("connectionrefused"))
    button.click()
    expect(result).to_have_text(re.compile(r"^Check failed: Cannot reach spark-control"))
    expect(button).to_be_enabled()


def test_live_indicator_when_the_app_goes_away(app, open_dashboard):
    page, _ = open_dashboard(width=1280)
    expect(page.locator("#live")).to_have_text("live")
    expect_node_up(page, "spark1")
    # Killed, not stopped: the page must notice an app that vanishes without closing the stream.
    app.proc.kill()
    app.proc.wait()
    expect(page.locator("#live")).to_have_attribute("data-state", re.compile(r"^(reconnecting|down)$"))
    expect(page.locator("#live")).to_have_text(re.compile(r"reconnecting|retrying"))
    # What was on screen stays there.
    expect(card(page, "spark1").locator(".gpu-name")).to_have_text("NVIDIA GB10")


def test_phone_width_has_no_horizontal_overflow(sim_cluster, open_dashboard):
    page, problems = open_dashboard(width=390, height=844)
    expect_node_up(page, "spark1")
    expect_node_up(page, "spark2")
    scroll_width, inner_width = no_horizontal_overflow(page)
    assert scroll_width <= inner_width, f"page is {scroll_width}px wide in a {inner_width}px viewport"
    # The Check now button is reachable and big enough to tap.
    box = page.get_by_role("button", name="Check now", exact=True).bounding_box()
    assert box is not None and box["height"] >= 36 and box["x"] >= 0 and box["x"] + box["width"] <= inner_width
    assert problems.items == [], problems.items
    screenshot(page, "dashboard-phone.png")
    # Long reasons (a down node) must wrap too.
    with crashed(sim_cluster, "spark2"):
        expect(card(page, "spark2")).to_have_attribute("data-state", "down", timeout=DOWN_WITHIN_S * 1000)
        expect(page.locator("#connectivity .transitions li").first).to_have_attribute("data-state", "down")
        scroll_width, inner_width = no_horizontal_overflow(page)
        assert scroll_width <= inner_width, f"page is {scroll_width}px wide in a {inner_width}px viewport"
        screenshot(page, "node-down-phone.png")
    expect_node_up(page, "spark2")
