"""An image pull survives an app restart (real sshd nodes, the sim's docker): the restarted app
follows a pull still running on the node and starts the container when it ends; a pull that
ended while the app was down has its container started at once; a pull the last run had killed
(a stop it did not see through) ends cancelled; a pull whose service now wants another image is
stopped on the node and its job removed. Shares the sim's pull timing with test_service_pull.py
($SPARKSIM_STATE/pull_seconds on the node)."""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import pytest

from conftest import free_port, wait_until
import test_service_pull as pulls
from test_download_restart import ssh_down

pytestmark = pytest.mark.integration

NODE = pulls.NODE
JOBS = "~/.cache/spark-control/jobs"


def overrides(directory: Path, images: dict[str, str]) -> Path:
    """A services.yaml with one plain HTTP server per service (the sim runs the image's command)."""
    path = directory / f"services-{uuid.uuid4().hex[:6]}.yaml"
    lines = ["services:"]
    for name, image in images.items():
        port = free_port()
        lines.append(f'  {name}: {{kind: other, image: {image}, node: {NODE}, port: {port}, '
                     f'args: [python3, -m, http.server, "{port}"], health_path: /, start_timeout_s: 60, gpu: false}}')
    path.write_text("\n".join(lines) + "\n")
    return path


# The sim node's pull timing, the clean-up after each test and the service lookup are
# test_service_pull.py's (same node).
clean = pulls.clean
on_node, set_pull_seconds, service = pulls.on_node, pulls.set_pull_seconds, pulls.service


def env(sim_cluster, services_yaml: Path) -> dict[str, str]:
    return {**sim_cluster.app_env(), "SERVICES_OVERRIDES": str(services_yaml), "DEEP_HEALTH_INTERVAL_S": "0"}


def pulling(app, name: str) -> dict:
    return wait_until(lambda: (s := service(app, name))["state"] == "pulling" and (s["pull"] or {}).get("layers_total")
                      and s, 20, message=f"{name} pulling, its layers known")


def crash(app) -> None:
    app.proc.send_signal(signal.SIGKILL)
    app.proc.wait(timeout=10)


def pull_jobs(sim_cluster) -> str:
    return on_node(sim_cluster, f"ls {JOBS} 2>/dev/null | grep svcpull")


def start_a_pull(sim_cluster, start_app, tmp_path, name: str, seconds: float):
    """An app with one service `name` on a fresh image, started: its pull takes `seconds` on the node.
    Returns (image, services.yaml, app)."""
    image = f"sparksim/{name}-{uuid.uuid4().hex[:8]}:1.0"
    services_yaml = overrides(tmp_path, {name: image})
    app = start_app(env(sim_cluster, services_yaml))
    set_pull_seconds(sim_cluster, seconds)
    assert app.post(f"/api/services/{name}/start").status_code == 202
    return image, services_yaml, app


def runs_with_its_pull_forgotten(app, sim_cluster, name: str) -> None:
    """The container started by the restarted app, healthy; the pull and its job's files gone."""
    running = wait_until(lambda: (s := service(app, name))["state"] == "running" and s, 60,
                         message=f"{name}'s container started by the new app")
    assert running["container"] == f"sc-svc-{name}" and running["health"]["ok"] and running["pull"] is None
    wait_until(lambda: pull_jobs(sim_cluster) == "", 10, message="the pull job's files removed")


def test_a_pull_running_when_the_app_stops_is_followed_again_and_its_container_started(sim_cluster, start_app, tmp_path):
    image, services_yaml, first = start_a_pull(sim_cluster, start_app, tmp_path, "resume", seconds=10)
    before = pulling(first, "resume")["pull"]
    crash(first)

    second = start_app(env(sim_cluster, services_yaml))
    found = pulling(second, "resume")
    assert found["running_on"] == NODE and found["pull"]["image"] == image, found
    assert found["pull"]["started"] == pytest.approx(before["started"]), "the pull's own start time, from its job"
    assert found["pull"]["fraction"] >= before["fraction"], (before, found["pull"])
    runs_with_its_pull_forgotten(second, sim_cluster, "resume")


def test_a_pull_that_ended_while_the_app_was_down_starts_its_container(sim_cluster, start_app, tmp_path):
    _, services_yaml, first = start_a_pull(sim_cluster, start_app, tmp_path, "ended", seconds=3)
    pulling(first, "ended")
    first.proc.send_signal(signal.SIGSTOP)  # the app sees nothing more; the pull ends on the node
    wait_until(lambda: on_node(sim_cluster, f"cat {JOBS}/svcpull*/exit 2>/dev/null").strip() == "0", 30,
               message="the pull ending while the app is down")
    crash(first)
    assert on_node(sim_cluster, "docker ps -a --format '{{.Names}}'").split() == []  # nothing started yet

    second = start_app(env(sim_cluster, services_yaml))
    runs_with_its_pull_forgotten(second, sim_cluster, "ended")


def test_a_pull_killed_by_the_last_run_or_no_longer_wanted_is_not_carried_on(sim_cluster, start_app, tmp_path):
    images = {"killed": f"sparksim/killed-{uuid.uuid4().hex[:8]}:1.0",
              "changed": f"sparksim/changed-{uuid.uuid4().hex[:8]}:1.0"}
    first = start_app(env(sim_cluster, overrides(tmp_path, images)))
    set_pull_seconds(sim_cluster, 60)
    for name in images:
        assert first.post(f"/api/services/{name}/start").status_code == 202
        pulling(first, name)
    crash(first)
    # A stop the old app sent (the `killed` mark, SIGTERM to the group) but did not see through.
    killed_job = on_node(sim_cluster, f"grep -l '\"service\":\"killed\"' {JOBS}/svcpull*/meta.json").strip()
    job_dir = killed_job.rsplit("/", 1)[0]
    sim_cluster.ssh(NODE, f': > {job_dir}/killed && kill -s TERM -- "-$(cat {job_dir}/pid)"', check=True)

    # The new app's catalog wants another image for "changed": the old pull is stopped, not followed.
    newer = {"killed": images["killed"], "changed": f"sparksim/changed-{uuid.uuid4().hex[:8]}:2.0"}
    second = start_app(env(sim_cluster, overrides(tmp_path, newer)))
    for name in newer:
        wait_until(lambda name=name: service(second, name)["state"] == "stopped", 30,
                   message=f"{name} stopped, its old pull not carried on")
    wait_until(lambda: pull_jobs(sim_cluster) == "", 15, message="both pull jobs removed from the node")
    assert images["changed"] not in on_node(sim_cluster, "ps -eo args"), "the unwanted pull still runs"
    time.sleep(1)
    assert on_node(sim_cluster, "docker ps -a --format '{{.Names}}'").split() == []
    assert images["killed"].split(":")[0] not in on_node(sim_cluster, "docker images --format '{{.Repository}}'")


def test_a_stop_the_node_never_heard_is_carried_out_by_the_next_start(sim_cluster, start_app, tmp_path):
    """A stop while the node does not answer (503: the pull may go on there), then the app stopped
    before the node answers: the next start cancels the pull it finds instead of starting the
    container the user no longer wants."""
    image, services_yaml, first = start_a_pull(sim_cluster, start_app, tmp_path, "unheard", seconds=60)
    pulling(first, "unheard")
    with ssh_down(sim_cluster, NODE):
        stopped = first.post("/api/services/unheard/stop", timeout=120)
        assert stopped.status_code == 503 and "as soon as" in stopped.json()["error"]["message"], stopped.text
        first.stop()
        second = start_app(env(sim_cluster, services_yaml))  # the node still does not answer
    # Its job's files go once the new app has found the pull and seen it end.
    wait_until(lambda: pull_jobs(sim_cluster) == "", 60, message="the pull found again and ended")
    assert image not in on_node(sim_cluster, "ps -eo args"), "the pull still runs"
    assert service(second, "unheard")["state"] == "stopped"
    time.sleep(1)
    assert on_node(sim_cluster, "docker ps -a --format '{{.Names}}'").split() == [], "a container was started"
