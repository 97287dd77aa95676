"""Downloads outlive the app: stop the app process (not the node) mid-download, start a new one
against the same simulated Sparks, and the download is listed again, with live progress, and
ends as it would have (done, or failed with the tool's reason), its jobs then cleaned off the
node. Plus the reading of a job's meta.json, which came from a node and is checked again."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from app.download_reattach import adoptable, job_meta
from app.remote_job import FoundJob, RemoteJob
from app.settings import Settings
from app.ssh import NodePool
from conftest import RunningApp, wait_until

TOKEN = "hf_sparkRestartTokenDoNotLeak" + uuid.uuid4().hex[:12]
JOBS = "$HOME/.cache/spark-control/jobs"
HUB = "$HOME/.cache/huggingface/hub"


def env(sim_cluster) -> dict[str, str]:
    return {**sim_cluster.app_env(), "HF_TOKEN": TOKEN, "DEEP_HEALTH_INTERVAL_S": "0"}


def unique_repo(name: str) -> str:
    return f"sparksim/{name}-{uuid.uuid4().hex[:8]}"


def download(app: RunningApp, download_id: str) -> dict | None:
    r = app.get(f"/api/downloads/{download_id}")
    return r.json() if r.status_code == 200 else None


def bytes_done(app: RunningApp, download_id: str) -> int:
    return ((download(app, download_id) or {}).get("progress") or {}).get("bytes_done") or 0


def events_until_end(app: RunningApp, download_id: str, timeout: float = 60) -> list[dict]:
    with httpx.stream("GET", f"{app.url}/api/downloads/{download_id}/events", timeout=timeout) as response:
        return [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]


def job_files(sim_cluster, node: str, download_id: str) -> str:
    return sim_cluster.ssh(node, f"ls -d {JOBS}/{download_id}* 2>/dev/null").stdout


def hf_running(sim_cluster, repo: str) -> bool:
    user = sim_cluster.node("spark1").user
    return bool(sim_cluster.ssh("spark1", f"pgrep -u {user} -f '[s]parksim.hf_cli download {repo}'").stdout.strip())


def freeze(app: RunningApp) -> None:
    """The first half of a crash at a moment of the test's choosing: frozen at once (it polls no
    more, so it cannot see the job end), killed later."""
    os.kill(app.proc.pid, signal.SIGSTOP)


def kill(app: RunningApp) -> None:
    app.proc.send_signal(signal.SIGKILL)
    app.proc.wait(timeout=10)


@contextmanager
def ssh_down(sim_cluster, name: str) -> Iterator[None]:
    """The node's SSH refuses new connections and drops the open ones; its processes (the jobs)
    run on, as on a Spark whose network is down for a moment. Back up on leaving the block."""
    node = sim_cluster.node(name)
    node.proc.terminate()  # the listener only: sessions are other processes
    node.proc.wait(timeout=10)
    node.proc = None
    subprocess.run(["pkill", "-KILL", "-u", node.user, "-x", "sshd"], check=False)  # its open sessions
    try:
        yield
    finally:
        node.start()


def start_transferring(app: RunningApp, repo: str, **body) -> dict:
    """POST a download and wait until its bytes arrive."""
    started = app.post("/api/downloads", json={"repo_id": repo, **body}).json()
    wait_until(lambda: bytes_done(app, started["id"]), 30, interval=0.05, message="bytes arriving")
    return started


def exit_recorded(sim_cluster, node: str, job_id: str) -> str:
    return sim_cluster.ssh(node, f"cat {JOBS}/{job_id}/exit 2>/dev/null").stdout.strip()


@pytest.mark.integration
def test_a_download_running_when_the_app_stops_is_found_again_and_finishes(sim_cluster, start_app):
    first = start_app(env(sim_cluster))
    repo = unique_repo("steady")  # the simulated Hub takes 10 s for it
    started = first.post("/api/downloads", json={"repo_id": repo}).json()
    wait_until(lambda: bytes_done(first, started["id"]), 30, message="bytes arriving")
    before = first.get(f"/api/downloads/{started['id']}").json()
    meta = sim_cluster.ssh("spark1", f"cat {JOBS}/{started['id']}d/meta.json").stdout
    first.stop()  # SIGTERM: a graceful stop detaches, it does not cancel

    assert hf_running(sim_cluster, repo), "stopping the app must leave the transfer running on the node"
    assert json.loads(meta)["repo_id"] == repo and TOKEN not in meta

    second = start_app(env(sim_cluster))
    found = wait_until(lambda: download(second, started["id"]), 20, message="the download listed by the new app")
    assert found["state"] == "downloading", found
    assert "found running on the node after spark-control restarted" in found["message"]
    for key in ("repo_id", "node", "copy_to", "created", "revision", "include"):
        assert found[key] == before[key], key
    listed = [d["id"] for d in second.get("/api/downloads").json()["downloads"]]
    assert listed.count(started["id"]) == 1

    # Live progress: it catches up with what the job did while nobody watched, then keeps rising.
    first_seen = wait_until(lambda: bytes_done(second, started["id"]), 10, message="progress after the restart")
    assert first_seen >= before["progress"]["bytes_done"]
    events = events_until_end(second, started["id"])
    states = [e["state"] for e in events if e["kind"] == "state"]
    assert states == ["downloading", "copying", "verifying", "done"], [e.get("message") for e in events]
    counts = [e["bytes_done"] for e in events if e["kind"] == "progress" and e["phase"] == "downloading"]
    # Rising: two readings at least (a busy machine can take most of the 10 s to restart the app;
    # CI once saw two), in order.
    assert len(set(counts)) >= 2 and counts == sorted(counts), counts
    copying = [e for e in events if e["kind"] == "progress" and e["phase"] == "copying"]
    assert copying and copying[-1]["where"] == "spark1->spark2"

    done = second.get(f"/api/downloads/{started['id']}").json()
    assert done["state"] == "done" and done["message"] == f"{repo} is complete on spark1, spark2"
    assert {v["node"]: v["complete"] for v in done["verification"]} == {"spark1": True, "spark2": True}
    assert done["snapshot"] and len(done["snapshot"]) == 40
    wait_until(lambda: job_files(sim_cluster, "spark1", started["id"]) == "", 10, message="its job dirs removed")
    assert TOKEN not in second.get("/api/downloads").text and TOKEN not in second.log()


@pytest.mark.integration
def test_a_download_that_ends_while_the_app_is_down_shows_done(sim_cluster, start_app):
    first = start_app(env(sim_cluster))
    repo = unique_repo("model")  # about 2 s
    started = first.post("/api/downloads", json={"repo_id": repo, "copy_to": []}).json()
    wait_until(lambda: bytes_done(first, started["id"]), 10, interval=0.05, message="bytes arriving")
    freeze(first)
    assert job_files(sim_cluster, "spark1", started["id"]), "the frozen app had already finished it"
    wait_until(lambda: sim_cluster.ssh("spark1", f"cat {JOBS}/{started['id']}d/exit").stdout.strip() == "0", 20,
               message="hf finishing on the node while the app is down")
    kill(first)
    # Not ours (no meta.json), or ours but not valid (a repo id no user could have sent): left alone, never listed.
    strangers = f"{JOBS}/otherjob1 {JOBS}/abcdef012345d {JOBS}/bcdef0123456d"
    bad = json.dumps({"kind": "spark-control-download", "download_id": "abcdef012345", "node": "spark1",
                      "repo_id": "org/x;id", "include": [], "copy_to": []})
    sim_cluster.ssh("spark1", f"mkdir -p {strangers} && printf '%s' '{bad}' > {JOBS}/abcdef012345d/meta.json",
                    check=True)
    # Valid JSON nested too deep to parse: it used to end the search of the node (RecursionError).
    sim_cluster.ssh("spark1", f"head -c 60000 /dev/zero | tr '\\0' '[' > {JOBS}/bcdef0123456d/meta.json", check=True)

    second = start_app(env(sim_cluster))
    found = wait_until(lambda: download(second, started["id"]), 20, message="the download listed by the new app")
    assert found["repo_id"] == repo and found["created"] == started["created"]
    events = events_until_end(second, started["id"])
    states = [(e["state"], e["message"]) for e in events if e["kind"] == "state"]
    assert states[0] == ("downloading", f"downloading {repo} on spark1 (it ended while spark-control was not running)")
    assert [s for s, _ in states] == ["downloading", "verifying", "done"], states
    done = second.get(f"/api/downloads/{started['id']}").json()
    assert done["state"] == "done" and done["verification"][0]["complete"] is True
    assert done["progress"]["bytes_done"] == done["progress"]["bytes_total"] > 3_000_000
    listed = [d["repo_id"] for d in second.get("/api/downloads").json()["downloads"]]
    assert listed.count(repo) == 1 and second.get("/api/downloads/abcdef012345").status_code == 404
    assert "job abcdef012345d on spark1: its meta.json cannot be used (Invalid repo_id" in second.log()
    wait_until(lambda: job_files(sim_cluster, "spark1", started["id"]) == "", 10, message="its job dir removed")
    assert sim_cluster.ssh("spark1", f"ls -d {strangers}").returncode == 0
    sim_cluster.ssh("spark1", f"rm -rf {strangers}")


@pytest.mark.integration
def test_a_download_that_fails_while_the_app_is_down_shows_failed_with_the_reason(sim_cluster, start_app):
    first = start_app(env(sim_cluster))
    repo = unique_repo("steady")  # 10 s: it fails at its next blob, at the latest when it renames the last
    blobs = f"{HUB}/models--{repo.replace('/', '--')}/blobs"
    started = first.post("/api/downloads", json={"repo_id": repo, "copy_to": []}).json()
    wait_until(lambda: bytes_done(first, started["id"]), 30, message="bytes arriving")
    kill(first)
    assert hf_running(sim_cluster, repo)
    # The cache turns read-only under it: hf fails when it next creates or renames a blob.
    sim_cluster.ssh("spark1", f"chmod 555 {blobs}", check=True)
    try:
        wait_until(lambda: sim_cluster.ssh("spark1", f"cat {JOBS}/{started['id']}d/exit").stdout.strip(), 30,
                   message="hf failing on the node while the app is down")

        second = start_app(env(sim_cluster))
        found = wait_until(lambda: (d := download(second, started["id"])) and d["state"] in ("failed", "done") and d,
                           20, message="the download listed, ended")
        assert found["state"] == "failed", found
        assert found["message"].startswith("hf download on spark1 failed (exit status 1): "), found["message"]
        assert "Permission denied" in found["message"] and "trust each other" not in found["message"]
        wait_until(lambda: job_files(sim_cluster, "spark1", started["id"]) == "", 10, message="its job dir removed")
    finally:
        sim_cluster.ssh("spark1", f"chmod 755 {blobs}")


def _found(job_id: str, meta: dict | str, exit_status: int | None = None) -> FoundJob:
    return FoundJob(job_id, meta if isinstance(meta, str) else json.dumps(meta), exit_status, exit_status is None,
                    False)


def test_meta_read_back_picks_the_latest_step_and_refuses_what_is_not_a_valid_download():
    nodes = {"spark1", "spark2"}
    good = json.loads(job_meta(download_id="0123456789ab", repo_id="org/model", revision=None, include=["*.json"],
                               node="spark1", copy_to=["spark2"], created=1.5, snapshot="a" * 40, copy_index=0))
    assert good["target_dir"] == "~/.cache/huggingface/hub/models--org--model" and good["step"] == "copy"
    found = [_found("0123456789abd", good, 0), _found("0123456789abc0", good),
             _found("ffffffffffffd", {**good, "download_id": "ffffffffffff", "repo_id": "org/x;touch /tmp/pwn"}),
             _found("eeeeeeeeeeeed", {**good, "download_id": "eeeeeeeeeeee", "copy_to": ["spark9"]}),
             _found("ddddddddddddd", "not json"), _found("notadownload1", good),
             _found("ccccccccccccd", {**good, "download_id": "cccccccccccc"})]
    result, problems = adoptable("spark1", found, nodes, known={"cccccccccccc"})
    assert len(result) == 1
    a = result[0]
    assert (a.id, a.fields["repo_id"], a.copy_index, a.job_ids) == ("0123456789ab", "org/model", 0,
                                                                     ["0123456789abd", "0123456789abc0"])
    assert a.current.job_id == "0123456789abc0" and a.fields["snapshot"] == "a" * 40 and a.fields["created"] == 1.5
    assert a.fields["node"] == "spark1" and a.step_name == f"the copy to {a.fields['copy_to'][0]}"
    assert len(problems) == 2
    assert "ffffffffffffd" in problems[0] and "repo_id" in problems[0]
    assert "eeeeeeeeeeeed" in problems[1] and "spark9" in problems[1]
    # A job on another node than the one its meta names is not adopted there.
    assert adoptable("spark2", found[:2], nodes, known=set())[0] == []


@pytest.mark.integration
def test_a_job_killed_by_a_cancel_or_gone_with_a_reboot_while_the_app_is_down(sim_cluster, start_app):
    ended = {"cancelled", "failed", "done"}

    def start_slow_then_crash(app: RunningApp) -> tuple[str, str]:
        download_id = app.post("/api/downloads", json={"repo_id": unique_repo("slow"), "copy_to": []}).json()["id"]
        wait_until(lambda: bytes_done(app, download_id), 30, message="bytes arriving")
        kill(app)
        return download_id, f"{JOBS}/{download_id}d"

    def ended_in(app: RunningApp, download_id: str) -> dict:
        return wait_until(lambda: (d := download(app, download_id)) and d["state"] in ended and d, 20,
                          message=f"{download_id} listed by the new app, ended")

    # A cancel the old app sent (the `killed` mark, SIGTERM to the group) but did not see through.
    cancelled_id, job = start_slow_then_crash(start_app(env(sim_cluster)))
    sim_cluster.ssh("spark1", f': > {job}/killed && kill -s TERM -- "-$(cat {job}/pid)"', check=True)
    second = start_app(env(sim_cluster))
    cancelled = ended_in(second, cancelled_id)
    assert cancelled["state"] == "cancelled" and cancelled["message"].startswith("cancelled while downloading")
    assert cancelled["partial_files"] and cancelled["partial_files"][0]["name"].endswith(".incomplete")

    # Its processes, waiter included, vanish without an exit status (as in a node reboot).
    lost_id, job = start_slow_then_crash(second)
    sim_cluster.ssh("spark1", f"p=$(cat {job}/pid) && kill -s KILL $(ps -o ppid= -p $p) && kill -s KILL -- -$p",
                    check=True)  # the waiter (the group leader's parent), then the group
    assert sim_cluster.ssh("spark1", f"cat {job}/exit").returncode != 0
    lost = ended_in(start_app(env(sim_cluster)), lost_id)
    assert lost["state"] == "failed" and "stopped without recording how it ended" in lost["message"], lost
    for download_id in (cancelled_id, lost_id):
        wait_until(lambda: job_files(sim_cluster, "spark1", download_id) == "", 10, message="job dirs removed")


def test_absurd_meta_values_skip_that_job_only():
    nodes = {"spark1", "spark2"}
    meta = json.loads(job_meta(download_id="0123456789ab", repo_id="org/model", revision=None, include=[],
                               node="spark1", copy_to=[], created=1.5, snapshot=None, copy_index=None))
    found = [_found("0123456789abd", meta),
             _found("aaaaaaaaaaaad", {**meta, "download_id": "aaaaaaaaaaaa", "created": 10**400}),  # float() overflows
             _found("bbbbbbbbbbbbd", json.dumps({**meta, "download_id": "bbbbbbbbbbbb"}).replace("1.5", "NaN")),
             _found("cccccccccccc" + "d", "[" * 60000),  # valid JSON too deep for the parser
             _found("ddddddddddddd", {**meta, "download_id": "dddddddddddd", "copy_to": [["spark2"]]})]
    result, problems = adoptable("spark1", found, nodes, known=set())
    by_id = {a.id: a for a in result}
    assert set(by_id) == {"0123456789ab", "aaaaaaaaaaaa", "bbbbbbbbbbbb"}
    # No usable creation time: 0, so the listing stays valid JSON.
    assert tuple(by_id[i].fields["created"] for i in ("0123456789ab", "aaaaaaaaaaaa", "bbbbbbbbbbbb")) == (1.5, 0, 0)
    assert len(problems) == 1 and "ddddddddddddd" in problems[0], problems


@pytest.mark.integration
def test_a_poll_cut_inside_a_utf8_character_reads_on_and_keeps_the_connection(sim_cluster):
    # tqdm draws with 3-byte blocks; a poll reads at most max_bytes, so a cut can fall inside one.
    sim_cluster.ssh("spark1", f"d={JOBS}/utf8cut1; rm -rf $d; mkdir -p $d; printf 'a\\342\\226\\210b\\n' > $d/log; "
                              "echo 0 > $d/exit", check=True)

    async def scenario() -> tuple[list[str], int | None, str]:
        pool = NodePool(Settings.from_env(environ=sim_cluster.app_env()))
        try:
            job = RemoteJob(pool, "spark1", "utf8cut1")
            # A command on the same connection meanwhile: a decode error used to drop the connection.
            other = asyncio.create_task(pool.run("spark1", "sleep 1; echo still-connected", timeout=10))
            await asyncio.sleep(0.3)
            texts, status = [], None
            for _ in range(6):
                polled = await job.poll(max_bytes=2)
                texts.append(polled.text)
                if (status := polled.exit_status) is not None:
                    break
            await job.remove()
            return texts, status, (await other).stdout.strip()
        finally:
            await pool.close()

    texts, status, other = asyncio.run(scenario())
    assert other == "still-connected"
    assert status == 0 and texts[0].startswith("a") and "".join(texts).endswith("b\n"), texts
    assert "".join(texts).replace("\ufffd", "") == "ab\n"  # the cut character shows as U+FFFD


@pytest.mark.integration
def test_a_download_of_the_same_repo_started_before_its_node_answered_supersedes_the_old_one(sim_cluster, start_app):
    first = start_app(env(sim_cluster))
    repo = unique_repo("slow")
    old = start_transferring(first, repo, copy_to=[])
    kill(first)
    with ssh_down(sim_cluster, "spark1"):  # the new app cannot look on spark1 yet
        second = start_app(env(sim_cluster))
        r = second.post("/api/downloads", json={"repo_id": repo, "node": "spark2", "copy_to": []})
        assert r.status_code == 202, r.text
        new = r.json()
        wait_until(lambda: download(second, new["id"])["state"] == "downloading", 15, message="the new one running")
    try:
        superseded = wait_until(lambda: download(second, old["id"]), 30, message="the old download found on spark1")
        assert superseded["state"] == "cancelled", superseded
        assert superseded["message"] == f"superseded by download {new['id']} started after the restart"
        wait_until(lambda: not hf_running(sim_cluster, repo), 10, message="the old transfer stopped on spark1")
        wait_until(lambda: job_files(sim_cluster, "spark1", old["id"]) == "", 10, message="its job dirs removed")
        assert download(second, new["id"])["state"] == "downloading"
        assert [d["repo_id"] for d in second.get("/api/downloads").json()["downloads"]].count(repo) == 2
    finally:
        second.post(f"/api/downloads/{new['id']}/cancel")


def adopted_and_queued(sim_cluster, start_app) -> tuple[RunningApp, str, dict, dict]:
    """A download whose hf step ended while no app ran, found by a new app while another download
    holds the slot: (the new app, its repo, the download, the other one)."""
    first = start_app(env(sim_cluster))
    repo = unique_repo("model")  # about 2 s
    waiting = start_transferring(first, repo, copy_to=["spark2"])
    freeze(first)
    wait_until(lambda: exit_recorded(sim_cluster, "spark1", f"{waiting['id']}d") == "0", 20,
               message="hf finishing on the node while the app is down")
    kill(first)
    with ssh_down(sim_cluster, "spark1"):  # so that another download takes the slot first
        second = start_app(env(sim_cluster))
        busy = second.post("/api/downloads", json={"repo_id": unique_repo("slow"), "node": "spark2",
                                                   "copy_to": []}).json()
        wait_until(lambda: download(second, busy["id"])["state"] == "downloading", 15, message="the other running")
    return second, repo, waiting, busy


@pytest.mark.integration
def test_an_adopted_download_waiting_for_its_turn_is_queued_and_cancels_at_once(sim_cluster, start_app):
    second, repo, waiting, busy = adopted_and_queued(sim_cluster, start_app)
    try:
        queued = wait_until(lambda: (d := download(second, waiting["id"])) and d["state"] == "queued" and d, 30,
                            message="the adopted download queued behind the other")
        assert queued["message"] == f"waiting for its turn to copy {repo} from spark1 to spark2"
        began = time.monotonic()
        cancelled = second.post(f"/api/downloads/{waiting['id']}/cancel").json()
        assert time.monotonic() - began < 5 and cancelled["state"] == "cancelled", cancelled
        assert cancelled["message"] == "cancelled while queued"
        # Its jobs go with it: left on the node, the next start would carry it on again.
        wait_until(lambda: job_files(sim_cluster, "spark1", waiting["id"]) == "", 10, message="its job dirs removed")
        assert download(second, busy["id"])["state"] == "downloading"
    finally:
        second.post(f"/api/downloads/{busy['id']}/cancel")


@pytest.mark.integration
def test_job_dirs_a_node_kept_while_down_are_removed_once_it_is_back(sim_cluster, start_app):
    app = start_app({**env(sim_cluster), "JOB_UNREACHABLE_GIVE_UP_S": "3"})
    repo = unique_repo("slow")
    started = start_transferring(app, repo, copy_to=[])
    job_dir = sim_cluster.node("spark1").home / ".cache" / "spark-control" / "jobs" / f"{started['id']}d"
    try:
        with ssh_down(sim_cluster, "spark1"):
            failed = wait_until(lambda: (d := download(app, started["id"])) and d["state"] == "failed" and d, 60,
                                message="the download failing while spark1 is unreachable")
            assert failed["message"].startswith(f"lost contact with spark1 for 3 s while downloading {repo} ("), \
                failed["message"]
            time.sleep(1)
            assert (job_dir / "meta.json").is_file()  # its outcome is recorded, but the node kept the dir
        # Left there, the next start would find the job and list the download again.
        wait_until(lambda: not job_dir.exists(), 40, message="the job dir removed once spark1 answers")
    finally:
        sim_cluster.ssh("spark1", f"pkill -f '[s]parksim.hf_cli download {repo}'")


@pytest.mark.integration
def test_a_download_whose_processes_die_while_followed_ends_failed(sim_cluster, start_app):
    """The app keeps running; the node loses the transfer and its waiter (a reboot, the OOM killer):
    no exit status will ever be written, and the download must not stay `downloading` forever."""
    app = start_app(env(sim_cluster))
    repo = unique_repo("slow")
    started = start_transferring(app, repo, copy_to=[])
    job = f"{JOBS}/{started['id']}d"
    sim_cluster.ssh("spark1", f"p=$(cat {job}/pid) && kill -s KILL $(ps -o ppid= -p $p) && kill -s KILL -- -$p",
                    check=True)  # the waiter (the group leader's parent), then the group
    failed = wait_until(lambda: (d := download(app, started["id"])) and d["state"] == "failed" and d, 20,
                        message="the download failing once its processes are gone")
    assert failed["message"] == (f"downloading {repo} on spark1: its processes are gone without recording how "
                                 "they ended (node rebooted?); start it again"), failed
    wait_until(lambda: job_files(sim_cluster, "spark1", started["id"]) == "", 10, message="its job dirs removed")


@pytest.mark.integration
def test_a_cancel_the_node_cannot_hear_is_kept_and_carried_out_when_it_answers(sim_cluster, start_app):
    """A cancel while the node is unreachable is neither lost nor turned into a failure once the
    give-up time has passed: the download says it is cancelling, and the transfer is killed when
    the node answers again."""
    app = start_app({**env(sim_cluster), "JOB_UNREACHABLE_GIVE_UP_S": "3"})
    repo = unique_repo("slow")
    started = start_transferring(app, repo, copy_to=[])
    try:
        with ssh_down(sim_cluster, "spark1"):
            asked = time.monotonic()
            answer = app.post(f"/api/downloads/{started['id']}/cancel", timeout=60).json()
            assert time.monotonic() - asked < 15, "the cancel must answer once it knows the node cannot hear it"
            assert answer["state"] == "downloading" and answer["message"].startswith("cancelling: spark1"), answer
            pending = wait_until(lambda: (d := download(app, started["id"])) and d["message"].startswith(
                "cancelling: spark1 does not answer") and d, 30, message="the cancel said to be pending")
            assert pending["state"] == "downloading", pending
            time.sleep(5)  # past JOB_UNREACHABLE_GIVE_UP_S: a cancel pending is no reason to give up
            assert download(app, started["id"])["state"] == "downloading"
            # (asked on this host: the node's SSH is down, its processes are this machine's)
            user = sim_cluster.node("spark1").user
            on_host = subprocess.run(["pgrep", "-u", user, "-f", f"[s]parksim.hf_cli download {repo}"],
                                     capture_output=True, text=True)
            assert on_host.stdout.strip(), "the node is only unreachable: the transfer goes on there"
        cancelled = wait_until(lambda: (d := download(app, started["id"]))["state"] != "downloading" and d, 60,
                               message="the cancel carried out once spark1 answers")
        assert cancelled["state"] == "cancelled" and cancelled["message"].startswith("cancelled while downloading")
        wait_until(lambda: not hf_running(sim_cluster, repo), 10, message="hf killed on the node")
    finally:
        sim_cluster.ssh("spark1", f"pkill -f '[s]parksim.hf_cli download {repo}'")


@pytest.mark.integration
def test_a_cancel_the_node_never_heard_is_carried_out_by_the_next_start(sim_cluster, start_app, tmp_path):
    """A cancel sent while the node does not answer, then the app stopped before it does: the cancel
    is written down, and the next start stops the transfer it finds on the node instead of
    following it as wanted work."""
    first = start_app(env(sim_cluster))
    repo = unique_repo("slow")  # 30 s on the simulated Hub
    started = start_transferring(first, repo, copy_to=[])
    record = tmp_path / "data" / "pending-cancels.json"
    try:
        with ssh_down(sim_cluster, "spark1"):
            answer = first.post(f"/api/downloads/{started['id']}/cancel", timeout=60).json()
            assert answer["message"].startswith("cancelling: spark1"), answer
            assert {"node": "spark1", "job": f"{started['id']}d"} in json.loads(record.read_text())
            first.stop()
            second = start_app(env(sim_cluster))  # spark1 still does not answer
            user = sim_cluster.node("spark1").user
            on_host = subprocess.run(["pgrep", "-u", user, "-f", f"[s]parksim.hf_cli download {repo}"],
                                     capture_output=True, text=True)
            assert on_host.stdout.strip(), "the node is only unreachable: the transfer goes on there"
        ended = wait_until(lambda: (d := download(second, started["id"])) and d["state"] != "downloading" and d, 60,
                           message="the download found again and stopped")
        assert ended["state"] == "cancelled" and ended["message"].startswith("cancelled while downloading"), ended
        wait_until(lambda: not hf_running(sim_cluster, repo), 10, message="hf killed on the node")
        assert json.loads(record.read_text()) == [], "carried out: no longer pending"
    finally:
        sim_cluster.ssh("spark1", f"pkill -f '[s]parksim.hf_cli download {repo}'")


@pytest.mark.integration
def test_a_queued_download_cancelled_while_its_node_keeps_its_jobs_is_not_carried_on_after_a_restart(
        sim_cluster, start_app, tmp_path):
    """An adopted download waits for its turn with its finished step's job on the node; it is
    cancelled while that node is down (its job cannot be removed), and the app stops before the
    node is back. The next start finds the job: the download ends cancelled, nothing is copied."""
    second, repo, waiting, busy = adopted_and_queued(sim_cluster, start_app)
    try:
        wait_until(lambda: (d := download(second, waiting["id"])) and d["state"] == "queued", 30,
                   message="the adopted download queued behind the other")
        with ssh_down(sim_cluster, "spark1"):
            cancelled = second.post(f"/api/downloads/{waiting['id']}/cancel", timeout=60).json()
            assert cancelled["state"] == "cancelled", cancelled
            record = json.loads((tmp_path / "data" / "pending-cancels.json").read_text())
            assert {"node": "spark1", "job": f"{waiting['id']}d"} in record
            second.stop()
            third = start_app(env(sim_cluster))
        ended = wait_until(lambda: (d := download(third, waiting["id"])) and d["state"] in ("cancelled", "done") and d,
                           60, message="the download found again and ended")
        assert ended["state"] == "cancelled", ended
        wait_until(lambda: job_files(sim_cluster, "spark1", waiting["id"]) == "", 10, message="its job dirs removed")
        assert sim_cluster.ssh("spark2", f"ls {HUB} 2>/dev/null").stdout.count(repo.replace("/", "--")) == 0, \
            "nothing copied to spark2"
    finally:
        sim_cluster.ssh("spark2", "pkill -f '[s]parksim.hf_cli download'")
