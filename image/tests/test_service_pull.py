"""A service whose image is not on its node yet, on the simulated Sparks: the start answers at once
with the service `pulling`, its progress (layers, from `docker pull`'s output read as a job on the
node) rises, then the container runs; a pull of an unknown image, or of a NIM with a key nvcr.io
refuses, fails at once with docker's reason; a stop during the pull cancels it and nothing starts,
a stop while the container is being started removes it; a NIM's key is in no process or file on
the node while it pulls; a pull whose processes died with their node ends `failed`.
The sim's `docker pull` takes $SPARKSIM_STATE/pull_seconds per pull, `docker run` waits
$SPARKSIM_STATE/run_seconds (both written on the node here)."""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from playwright.sync_api import expect

from browser import screenshot
from app import service_containers as sc
from app.services import ServiceManager
from app.services_catalog import load_services_catalog
from app.settings import Settings
from app.ssh import NodePool
from conftest import free_port, sim_app, wait_until

pytestmark = pytest.mark.integration

TAG = uuid.uuid4().hex[:8]
KEY = "nvapi-invalid-SiMuLaTeD-pull-secret"  # the sim's registry refuses a key with "invalid" in it
IMAGES = {"pull-ok": f"sparksim/pull-ok-{TAG}:1.0", "pull-cancel": f"sparksim/pull-cancel-{TAG}:1.0",
          "pull-dash": f"sparksim/pull-dash-{TAG}:1.0", "pull-race": f"sparksim/pull-race-{TAG}:1.0",
          "pull-boot": f"sparksim/pull-boot-{TAG}:1.0", "pull-blip": f"sparksim/pull-blip-{TAG}:1.0",
          "pull-unreach": f"sparksim/pull-unreach-{TAG}:1.0", "pull-badcmd": f"sparksim/pull-badcmd-{TAG}:1.0",
          "pull-unknown": f"example/doesnotexist-{TAG}:1.0", "pull-nim": f"nvcr.io/nim/sparksim/pull-{TAG}:1.0"}
NODE = "spark2"


@pytest.fixture(scope="module")
def app(sim_cluster, tmp_path_factory):
    data = tmp_path_factory.mktemp("service-pull")
    overrides = data / "services.yaml"
    lines = ["services:"]
    for name, image in IMAGES.items():
        port = free_port()
        # A plain HTTP server as the container (the sim runs a generic image's command as is).
        serve = f'args: [python3, -m, http.server, "{port}"], health_path: /, ' if name != "pull-nim" else ""
        if name == "pull-badcmd":
            serve = "args: [no-such-server], health_path: /, "  # pulls fine, then cannot start
        kind = "nim" if name == "pull-nim" else "other"
        lines.append(f"  {name}: {{kind: {kind}, image: {IMAGES[name]}, node: {NODE}, port: {port}, "
                     f"{serve}start_timeout_s: 60, gpu: false}}")
    overrides.write_text("\n".join(lines) + "\n")
    # A pull gives up on an unreachable node after 30 s here (600 by default): the blip test's 15 s
    # blip is well within it.
    with sim_app(sim_cluster, data, SERVICES_OVERRIDES=str(overrides), NGC_API_KEY=KEY,
                 JOB_UNREACHABLE_GIVE_UP_S="30") as running:
        yield running


def on_node(sim_cluster, command: str) -> str:
    return sim_cluster.ssh(NODE, command).stdout


def set_pull_seconds(sim_cluster, seconds: float) -> None:
    on_node(sim_cluster, f"echo {seconds} > ${{SPARKSIM_STATE:-~/.sparksim}}/pull_seconds")


@pytest.fixture(autouse=True)
def clean(sim_cluster):
    yield
    on_node(sim_cluster, "rm -f ${SPARKSIM_STATE:-~/.sparksim}/pull_seconds ${SPARKSIM_STATE:-~/.sparksim}/run_seconds; "
                         "docker ps -aq --filter label=spark-control.service | xargs -r docker rm -f")


def service(app, name: str) -> dict:
    response = app.get(f"/api/services/{name}")
    assert response.status_code == 200, response.text
    return response.json()


def test_a_start_answers_pulling_at_once_progress_rises_then_it_runs(app, sim_cluster):
    set_pull_seconds(sim_cluster, 6)
    asked = time.monotonic()
    started = app.post("/api/services/pull-ok/start")
    answered_in = time.monotonic() - asked
    assert started.status_code == 202, started.text
    body = started.json()
    assert answered_in < 5, f"the start hung {answered_in:.1f} s"
    assert body["state"] == "pulling" and body["running_on"] == NODE and body["container"] is None
    assert body["pull"]["image"] == IMAGES["pull-ok"] and body["pull"]["state"] == "pulling"

    seen: list[dict] = []
    def pulled() -> dict | None:
        s = service(app, "pull-ok")
        if s["state"] == "pulling":
            seen.append(s["pull"])
            return None
        return s
    after = wait_until(pulled, 60, interval=0.3, message="the pull to end")
    fractions = [p["fraction"] for p in seen]
    assert fractions == sorted(fractions), fractions
    # Seen rising, not just 0 then done: two distinct values between. (The simulated layers sit at
    # 2/6 and 4/6 for 1.6 s each but at 1/6, 3/6 and 5/6 for only 0.4 s, which a poll on a busy
    # machine can miss: a fresh-machine rehearsal saw 0.3333 and 0.6667 alone.)
    assert len({f for f in fractions if 0 < f < 1}) >= 2, fractions
    assert {p["layers_total"] for p in seen if p["layers_total"]} == {3}
    assert after["state"] in ("starting", "running"), (after["detail"], after["pull"])

    running = wait_until(lambda: (s := service(app, "pull-ok"))["state"] == "running" and s, 60,
                         message="the service running after its pull")
    assert running["container"] == "sc-svc-pull-ok" and running["health"]["ok"] and running["pull"] is None
    assert IMAGES["pull-ok"].split(":")[0] in on_node(sim_cluster, "docker images --format '{{.Repository}}'")
    wait_until(lambda: on_node(sim_cluster, "ls ~/.cache/spark-control/jobs 2>/dev/null | grep svcpull") == "",
               10, message="the pull job's files removed from the node")

    assert app.post("/api/services/pull-ok/stop").json()["state"] == "stopped"
    again = app.post("/api/services/pull-ok/start")  # the image is there now: no pull, the container at once
    assert again.status_code == 202 and again.json()["state"] in ("starting", "running"), again.text
    assert again.json()["container"] == "sc-svc-pull-ok"


def test_the_pull_detail_names_the_layers(app, sim_cluster):
    set_pull_seconds(sim_cluster, 30)
    assert app.post("/api/services/pull-cancel/start").status_code == 202
    s = wait_until(lambda: (s := service(app, "pull-cancel"))["pull"]["layers_total"] and s, 20,
                   message="the layers known")
    assert s["detail"].startswith(f"pulling {IMAGES['pull-cancel']} on {NODE}: 0/3 layers extracted"), s["detail"]
    again = app.post("/api/services/pull-cancel/start")
    assert again.status_code == 409 and "pulling its image" in again.json()["error"]["message"]
    assert app.post("/api/services/pull-cancel/stop").status_code == 200


def test_a_stop_during_the_pull_cancels_it_and_nothing_starts(app, sim_cluster):
    set_pull_seconds(sim_cluster, 30)
    assert app.post("/api/services/pull-cancel/start").status_code == 202
    wait_until(lambda: service(app, "pull-cancel")["pull"]["layers_total"], 20, message="the pull under way")
    assert IMAGES["pull-cancel"] in on_node(sim_cluster, "ps -eo args")  # docker pull runs on the node

    asked = time.monotonic()
    stopped = app.post("/api/services/pull-cancel/stop")
    assert stopped.status_code == 200, stopped.text
    assert time.monotonic() - asked < 20
    assert stopped.json()["state"] == "stopped" and stopped.json()["pull"] is None

    time.sleep(3)  # long enough for a pull that went on to finish a layer, or a container to appear
    assert "sc-svc-pull-cancel" not in on_node(sim_cluster, "docker ps -a --format '{{.Names}}'")
    assert IMAGES["pull-cancel"].split(":")[0] not in on_node(sim_cluster, "docker images --format '{{.Repository}}'")
    assert IMAGES["pull-cancel"] not in on_node(sim_cluster, "ps -eo args")
    assert service(app, "pull-cancel")["state"] == "stopped"


def test_a_pull_of_an_unknown_image_fails_with_dockers_reason(app, sim_cluster):
    started = app.post("/api/services/pull-unknown/start")
    # The registry refuses at once: on a busy machine the pull may have failed before the answer.
    assert started.status_code == 202 and started.json()["state"] in ("pulling", "failed"), started.text
    failed = wait_until(lambda: (s := service(app, "pull-unknown"))["state"] == "failed" and s, 30,
                        message="the pull failed")
    assert f"pull access denied for example/doesnotexist-{TAG}" in failed["detail"], failed
    assert "Check the service's `image`" in failed["detail"] and failed["pull"]["state"] == "failed"
    assert "sc-svc-pull-unknown" not in on_node(sim_cluster, "docker ps -a --format '{{.Names}}'")
    listed = {s["name"]: s for s in app.get("/api/services").json()["services"]}
    assert listed["pull-unknown"]["state"] == "failed"

    cleared = app.post("/api/services/pull-unknown/stop")  # forgets the failure
    assert cleared.status_code == 200 and cleared.json()["state"] == "stopped", cleared.text
    assert app.post("/api/services/pull-unknown/stop").status_code == 404


def test_a_nim_whose_key_nvcr_refuses_fails_to_start_at_once_with_the_reason_and_the_key_stays_secret(
        app, sim_cluster):
    launched = app.post("/api/nim/pull-nim/launch")  # docker login runs before any pull
    assert launched.status_code == 503, launched.text
    message = launched.json()["error"]["message"]
    assert "docker login nvcr.io failed" in message and "unauthorized: authentication required" in message
    assert "nvcr.io refused NGC_API_KEY" in message
    assert service(app, "pull-nim")["state"] == "stopped"
    assert IMAGES["pull-nim"] not in on_node(sim_cluster, "ps -eo args")  # no pull was started
    answers = [launched.text, app.get("/api/nim").text, app.get("/api/services").text]
    assert not [text for text in [*answers, app.log(), on_node(sim_cluster, "ps -eo args")] if KEY in text]


def test_the_dashboard_shows_the_pull_as_a_rising_progress_bar_then_running(app, sim_cluster, pages):
    set_pull_seconds(sim_cluster, 8)
    page, problems = pages.open(app.url)
    row = page.locator('#services li.service[data-service="pull-dash"]')
    expect(row.locator('[data-slot="state"]')).to_have_text("stopped", timeout=30_000)
    # Every value the bar takes (the row is redrawn on each refresh): window.__pull.
    page.evaluate("""() => { window.__pull = [];
        const row = document.querySelector('#services li.service[data-service="pull-dash"]');
        const note = () => { const bar = row.querySelector('[data-slot="where"] progress');
            if (bar) window.__pull.push(Number(bar.getAttribute('value'))); };
        new MutationObserver(note).observe(row, {subtree: true, childList: true, attributes: true}); }""")
    row.get_by_role("button", name="Start pull-dash", exact=True).click()
    expect(row).to_have_attribute("data-state", "pulling", timeout=15_000)
    expect(row.get_by_role("progressbar", name=f"Pulling {IMAGES['pull-dash']} onto {NODE}")).to_be_visible()
    expect(row.locator('[data-slot="pull-numbers"]')).to_contain_text(re.compile(r"of 3 layers done"))
    expect(row.get_by_role("button", name="Stop pull-dash")).to_be_enabled()  # a stop cancels the pull
    expect(row.locator('[data-slot="pull-numbers"]')).to_contain_text(re.compile(r"^[12] of 3 layers done"))
    screenshot(row, "service-pulling.png")
    expect(row).to_have_attribute("data-state", "running", timeout=60_000)
    values = page.evaluate("() => window.__pull")
    assert values == sorted(values) and len({v for v in values if 0 < v < 1}) >= 2, values
    expect(row.locator('[data-slot="where"]')).to_contain_text(f"On {NODE}")
    assert app.post("/api/services/pull-dash/stop").status_code == 200
    assert problems.unexpected() == [], problems.items


ACCEPTED_KEY = f"nvapi-SiMuLaTeD-accepted-{TAG}"  # the sim's registry accepts it
NIM_IMAGE = f"nvcr.io/nim/sparksim/pull-ok-{TAG}:1.0"


@pytest.fixture(scope="module")
def nim_app(sim_cluster, tmp_path_factory):
    data = tmp_path_factory.mktemp("service-pull-nim")
    (data / "services.yaml").write_text(
        f"services:\n  nim-ok: {{kind: nim, image: {NIM_IMAGE}, node: {NODE}, port: {free_port()}, "
        "start_timeout_s: 60, gpu: false}\n")
    with sim_app(sim_cluster, data, SERVICES_OVERRIDES=str(data / "services.yaml"),
                 NGC_API_KEY=ACCEPTED_KEY) as running:
        yield running


def node_user_environs(sim_cluster) -> dict[str, str]:
    """The command line and environment of every process of the node's user (the sim nodes share
    this machine's PID namespace; the test runs as root)."""
    uid = pwd.getpwnam(sim_cluster.node(NODE).user).pw_uid
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/environ", "rb") as f:
                found[cmdline] = f.read().replace(b"\0", b"\n").decode(errors="replace")
        except OSError:  # ended meanwhile
            continue
    return found


def test_while_a_nim_pulls_its_key_is_in_no_process_and_no_file_on_the_node(nim_app, sim_cluster):
    set_pull_seconds(sim_cluster, 30)
    launched = nim_app.post("/api/nim/nim-ok/launch")
    assert launched.status_code == 202 and launched.json()["state"] == "pulling", launched.text
    wait_until(lambda: service(nim_app, "nim-ok")["pull"]["layers_total"], 20, message="the NIM pull under way")
    assert "nvcr.io" in on_node(sim_cluster, "cat ${SPARKSIM_STATE:-~/.sparksim}/logins.json")  # logged in first

    processes = node_user_environs(sim_cluster)
    pulls = [cmd for cmd in processes if NIM_IMAGE in cmd]
    assert pulls and all("PATH=" in processes[cmd] for cmd in pulls), list(processes)  # its environment was read
    assert [cmd for cmd, env in processes.items() if ACCEPTED_KEY in cmd or ACCEPTED_KEY in env] == []
    assert ACCEPTED_KEY not in on_node(sim_cluster, "ps -eo args")
    jobs = on_node(sim_cluster, "ls ~/.cache/spark-control/jobs")
    assert "svcpull" in jobs
    assert on_node(sim_cluster, f"grep -rl {ACCEPTED_KEY} ~/.cache/spark-control/jobs; true") == ""
    stopped = nim_app.post("/api/nim/nim-ok/stop")
    assert stopped.status_code == 200 and stopped.json()["state"] == "stopped", stopped.text
    assert ACCEPTED_KEY not in nim_app.log()


def test_a_stop_while_the_pulled_image_is_being_started_leaves_no_container(app, sim_cluster):
    set_pull_seconds(sim_cluster, 1)
    on_node(sim_cluster, "echo 35 > ${SPARKSIM_STATE:-~/.sparksim}/run_seconds")  # longer than a stop waits
    assert app.post("/api/services/pull-race/start").status_code == 202
    starting = wait_until(lambda: (s := service(app, "pull-race"))["state"] != "pulling" and s, 30,
                          message="the pull over")
    assert starting["state"] == "starting" and "starting the container" in starting["detail"], starting
    stopped = app.post("/api/services/pull-race/stop", timeout=120)
    assert stopped.status_code == 200 and stopped.json()["state"] == "stopped", stopped.text
    # `docker run` ends about 35 s after it began; the container it made must then be removed.
    wait_until(lambda: "--name sc-svc-pull-race" not in on_node(sim_cluster, "ps -eo args"), 30,
               message="docker run ended on the node")
    wait_until(lambda: "sc-svc-pull-race" not in on_node(sim_cluster, "docker ps -a --format '{{.Names}}'"), 10,
               message="the container docker run made, removed")
    assert service(app, "pull-race")["state"] == "stopped"


def start_a_long_pull(app, sim_cluster, name: str, seconds: float) -> None:
    set_pull_seconds(sim_cluster, seconds)
    assert app.post(f"/api/services/{name}/start").status_code == 202
    wait_until(lambda: service(app, name)["pull"]["layers_total"], 20, message="the pull under way")


def test_a_pull_whose_processes_died_with_the_node_ends_failed(app, sim_cluster):
    start_a_long_pull(app, sim_cluster, "pull-boot", 60)
    node = sim_cluster.node(NODE)
    node.crash()  # every process of the node dies: the pull and the waiter that would record its end
    time.sleep(2)
    node.revive()
    failed = wait_until(lambda: (s := service(app, "pull-boot"))["state"] == "failed" and s, 90,
                        message="the vanished pull failed")
    assert failed["detail"] == (f"pulling {IMAGES['pull-boot']} on {NODE}: its processes are gone without recording "
                                "how they ended (node rebooted?); start it again"), failed
    cleared = app.post("/api/services/pull-boot/stop")
    assert cleared.status_code == 200 and cleared.json()["state"] == "stopped", cleared.text


@pytest.fixture
def netns(sim_cluster):
    """Only a node in its own network namespace can drop off the network silently (blackhole)."""
    if sim_cluster.network != "netns":
        pytest.skip("network namespaces unavailable here: the simulated cluster runs on loopback addresses")
    return sim_cluster.node(NODE)


def test_a_network_blip_shorter_than_the_give_up_time_does_not_end_the_pull(app, sim_cluster, netns):
    start_a_long_pull(app, sim_cluster, "pull-blip", 150)
    netns.blackhole()
    try:
        details, until = [], time.monotonic() + 15
        while time.monotonic() < until:
            s = app.get("/api/services/pull-blip", timeout=60).json()
            assert s["state"] == "pulling", s["detail"]
            details.append(s["detail"])
            time.sleep(3)
    finally:
        netns.restore_network()
    assert any(re.search(rf"^{NODE} unreachable for \d+ s; the pull goes on there", d) for d in details), details
    back = wait_until(lambda: "unreachable" not in (s := service(app, "pull-blip"))["detail"] and s, 60,
                      message="the pull followed again")
    assert back["state"] == "pulling" and back["detail"].startswith(f"pulling {IMAGES['pull-blip']}"), back
    assert IMAGES["pull-blip"] in on_node(sim_cluster, "ps -eo args")
    assert app.post("/api/services/pull-blip/stop").status_code == 200


def test_a_stop_while_the_node_is_unreachable_says_the_pull_may_go_on_then_cancels_it(app, sim_cluster, netns):
    start_a_long_pull(app, sim_cluster, "pull-unreach", 150)
    netns.blackhole()
    try:
        wait_until(lambda: "unreachable for" in app.get("/api/services/pull-unreach", timeout=60).json()["detail"],
                   60, interval=1, message="the node seen unreachable")
        stopped = app.post("/api/services/pull-unreach/stop", timeout=120)
        assert stopped.status_code == 503, stopped.text
        message = stopped.json()["error"]["message"]
        assert f"could not cancel the pull of {IMAGES['pull-unreach']} on {NODE}" in message, message
        assert "it may still be running there" in message
        assert app.get("/api/services/pull-unreach", timeout=60).json()["state"] == "pulling"
    finally:
        netns.restore_network()
    # The stop was not forgotten: once the node answers, the pull is killed.
    wait_until(lambda: service(app, "pull-unreach")["state"] == "stopped", 60, interval=1,
               message="the pull cancelled once the node answered")
    assert IMAGES["pull-unreach"] not in on_node(sim_cluster, "ps -eo args")


def test_a_pulled_image_whose_container_cannot_start_says_why(app, sim_cluster):
    """`docker run` after the pull fails (the container stays Created, no logs): the state says
    docker's reason, not "see its logs"."""
    set_pull_seconds(sim_cluster, 1)
    assert app.post("/api/services/pull-badcmd/start").status_code == 202
    failed = wait_until(lambda: (s := service(app, "pull-badcmd"))["state"] == "failed" and s, 60,
                        message="the start after the pull failing")
    assert failed["container"] == "sc-svc-pull-badcmd", failed
    assert "could not start service 'pull-badcmd'" in failed["detail"], failed["detail"]
    assert 'exec: "no-such-server": executable file not found' in failed["detail"], failed["detail"]
    assert app.post("/api/services/pull-badcmd/stop").status_code == 200


def test_a_container_list_that_a_start_overtook_is_read_again(sim_cluster):
    """A `docker ps` still on its way when a start or stop ends is stale: a container `docker run`
    has just started reads "Created" there, which the services list would show as failed (a
    rehearsal of CI saw it right after a pull). Such a list is read again, and not kept for later."""
    settings = Settings.from_env(environ=sim_cluster.app_env())

    async def scenario() -> tuple[int, int]:
        pool = NodePool(settings)
        async with httpx.AsyncClient() as http:
            manager = ServiceManager(pool, load_services_catalog(settings), http, settings)
            real_run, scans = pool.run, 0

            async def run(node: str, command: str, **kwargs):  # the real node answers; we count
                nonlocal scans
                result = await real_run(node, command, **kwargs)
                if command == sc.list_command():
                    scans += 1
                    if scans == 1:
                        manager._forget_scans()  # what a start that ends now does
                return result

            pool.run = run
            try:
                await manager.containers()
                after_first = scans
                await manager.containers()  # within the cache's lifetime
                return after_first, scans
            finally:
                await pool.close()

    nodes = len(settings.nodes)
    # In a thread of its own: the browser tests of this module leave an event loop running in this one.
    with ThreadPoolExecutor(1) as thread:
        after_first, after_second = thread.submit(asyncio.run, scenario()).result()
    assert after_first == 2 * nodes, "the list a start overtook must be read again"
    assert after_second == after_first, "the list read again serves the next caller"
