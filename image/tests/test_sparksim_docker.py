"""The simulated node's `docker`, driven exactly as the product drives it: as a
separate program (`/usr/bin/python3 -m sparksim.docker_cli`) with its state in a
temporary directory. Containers are real local processes; every test stops them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

IMAGE_DIR = Path(__file__).resolve().parents[1]
PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable

# A container that prints a numbered line every 50 ms, forever.
TICKER = ["python3", "-u", "-c", "import time, itertools\nfor i in itertools.count(): print('line', i); time.sleep(0.05)"]


class Docker:
    def __init__(self, state: Path):
        self.state = state
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(state.parent),
            "PYTHONPATH": str(IMAGE_DIR),
            "SPARKSIM_STATE": str(state),
            "SPARKSIM_NODE_ADDR": "127.0.0.7",
        }

    def __call__(self, *args: str, stdin: str | None = None, env: dict | None = None, timeout: float = 20):
        return subprocess.run(
            [PYTHON, "-m", "sparksim.docker_cli", *args], input=stdin, capture_output=True, text=True,
            env={**self.env, **(env or {})}, timeout=timeout,
        )

    def ok(self, *args: str, **kwargs) -> str:
        result = self(*args, **kwargs)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    def run_detached(self, name: str, *cmd: str, flags: tuple[str, ...] = ()) -> str:
        return self.ok("run", "-d", "--name", name, *flags, "busybox", *cmd).strip()

    def cleanup(self) -> None:
        """Kill whatever this test started: each supervisor first (so it records and restarts
        nothing, as in a power cut), then the container's process group."""
        for container_dir in (self.state / "containers").glob("*"):
            for pid_file, group in (("supervisor", False), ("pid", True)):
                try:
                    pid = int((container_dir / pid_file).read_text().split()[0])
                    (os.killpg if group else os.kill)(pid, signal.SIGKILL)
                except (OSError, ValueError, IndexError):
                    pass


@pytest.fixture
def docker(tmp_path):
    cli = Docker(tmp_path / "sparksim")
    yield cli
    cli.cleanup()


def wait_for(predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_run_detached_then_ps_json_and_templates(docker):
    container_id = docker.run_detached("ticker", *TICKER, flags=("--label", "role=test", "--network", "host"))
    assert re.fullmatch(r"[0-9a-f]{64}", container_id)

    rows = [json.loads(line) for line in docker.ok("ps", "--format", "{{json .}}").splitlines()]
    assert len(rows) == 1
    row = rows[0]
    assert set(row) == {"Command", "CreatedAt", "ID", "Image", "Labels", "LocalVolumes", "Mounts", "Names",
                        "Networks", "Ports", "RunningFor", "Size", "State", "Status"}
    assert (row["ID"], row["Names"], row["Image"], row["State"]) == (container_id[:12], "ticker", "busybox", "running")
    assert row["Status"].startswith("Up ") and row["Labels"] == "role=test" and row["Networks"] == "host"
    assert row["Command"].startswith('"python3 -u -c') and row["Command"].endswith('…"')

    template = docker.ok("ps", "--format", r'{{.Names}}\t{{.State}}\t{{.Label "role"}}\t{{.ID}}')
    assert template == f"ticker\trunning\ttest\t{container_id[:12]}\n"
    table = docker.ok("ps").splitlines()
    assert table[0].split() == ["CONTAINER", "ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
    assert table[0].startswith("CONTAINER ID   IMAGE     COMMAND ")
    assert table[1].startswith(container_id[:12] + "   busybox   ")
    assert docker.ok("ps", "-q", "--no-trunc") == container_id + "\n"
    assert docker.ok("ps", "-q", "--filter", "name=nomatch") == ""
    assert docker.ok("ps", "-q", "--filter", "label=role=test") == container_id[:12] + "\n"


def test_logs_tail_keeps_streams_apart(docker):
    docker.run_detached("talker", "python3", "-u", "-c",
                        "import sys, time\nfor i in range(5): print('out', i)\n"
                        "time.sleep(0.1); print('oops', file=sys.stderr)")
    wait_for(lambda: docker.ok("ps", "-a", "--format", "{{.State}}").strip() == "exited")
    full = docker("logs", "talker")
    assert full.stdout == "".join(f"out {i}\n" for i in range(5))
    assert full.stderr == "oops\n"
    tail = docker("logs", "--tail", "3", "talker")
    assert (tail.stdout, tail.stderr) == ("out 3\nout 4\n", "oops\n")
    stamped = docker("logs", "-t", "--tail", "1", "talker")
    assert stamped.stdout == "" and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z oops\n", stamped.stderr)
    missing = docker("logs", "ghost")
    assert (missing.returncode, missing.stderr) == (1, "Error response from daemon: No such container: ghost\n")


def test_logs_follow_ends_when_the_container_stops(docker):
    docker.run_detached("ticker", *TICKER)
    follower = subprocess.Popen([PYTHON, "-m", "sparksim.docker_cli", "logs", "-f", "ticker"],
                                stdout=subprocess.PIPE, text=True, env=docker.env)
    try:
        seen = [follower.stdout.readline() for _ in range(3)]
        assert seen == ["line 0\n", "line 1\n", "line 2\n"]
        assert follower.poll() is None  # still following while the container runs
        started = time.monotonic()
        assert docker.ok("stop", "-t", "1", "ticker") == "ticker\n"
        rest = follower.communicate(timeout=15)[0]
        # It ends with the container (`stop -t 1`), not at a timeout of its own: seconds, on a busy machine.
        assert follower.returncode == 0 and time.monotonic() - started < 10
        # It printed everything the container wrote, up to its very last line.
        assert "".join(seen) + rest == docker.ok("logs", "ticker")
    finally:
        if follower.poll() is None:
            follower.kill()


def test_stop_reports_exit_and_rm_refuses_running(docker):
    docker.run_detached("first", "sleep", "30")
    docker.run_detached("second", "sleep", "30")
    refused = docker("rm", "first")
    assert refused.returncode == 1
    assert refused.stderr == ('Error response from daemon: cannot remove container "/first": container is running: '
                              "stop the container before removing or force remove\n")

    assert docker.ok("stop", "-t", "1", "first") == "first\n"
    status = docker.ok("ps", "-a", "--filter", "name=first", "--format", "{{.State}} {{.Status}}")
    assert re.fullmatch(r"exited Exited \(143\) .* ago\n", status)
    assert docker.ok("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}} {{.State.Running}}",
                     "first") == "exited 143 false\n"
    assert docker.ok("ps", "--format", "{{.Names}}") == "second\n"

    assert docker.ok("rm", "first") == "first\n"
    assert docker.ok("rm", "-f", "second") == "second\n"
    assert docker.ok("ps", "-a", "-q") == ""
    gone = docker("stop", "first")
    assert (gone.returncode, gone.stderr) == (1, "Error response from daemon: No such container: first\n")


def test_a_process_that_dies_is_reported_exited_with_its_code(docker):
    docker.run_detached("crasher", "python3", "-c", "import time, sys; time.sleep(0.2); sys.exit(7)")
    assert docker.ok("ps", "--format", "{{.Names}}") == "crasher\n"
    wait_for(lambda: "Exited (7)" in docker.ok("ps", "-a", "--format", "{{.Status}}"))
    assert docker.ok("ps", "--format", "{{.Names}}") == ""


def test_name_conflict_and_concurrent_runs(docker):
    first_id = docker.run_detached("dup", "sleep", "30")
    clash = docker("run", "-d", "--name", "dup", "busybox", "sleep", "30")
    assert clash.returncode == 125
    assert clash.stderr == (
        f'docker: Error response from daemon: Conflict. The container name "/dup" is already in use by container '
        f'"{first_id}". You have to remove (or rename) that container to be able to reuse that name.\n'
        "See 'docker run --help'.\n"
    )
    results = []
    racers = [threading.Thread(target=lambda: results.append(docker("run", "-d", "--name", "race", "busybox",
                                                                    "sleep", "30"))) for _ in range(3)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    assert sorted(r.returncode for r in results) == [0, 125, 125]
    assert docker.ok("ps", "--format", "{{.Names}}", "--filter", "name=race") == "race\n"


def test_cli_mistakes_use_dockers_words(docker):
    unknown = docker("run", "--foo", "busybox")
    assert (unknown.returncode, unknown.stderr) == (125, "unknown flag: --foo\nSee 'docker run --help'.\n")
    missing_value = docker("run", "--name")
    assert (missing_value.returncode, missing_value.stderr) == (125, "flag needs an argument: --name\n"
                                                                     "See 'docker run --help'.\n")
    ps_flag = docker("ps", "--bogus")
    assert (ps_flag.returncode, ps_flag.stderr) == (125, "unknown flag: --bogus\nSee 'docker ps --help'.\n")
    subcommand = docker("frobnicate")
    assert subcommand.returncode == 1
    assert subcommand.stderr.startswith("docker: 'frobnicate' is not a docker command.\n")
    not_found = docker("run", "--rm", "busybox", "no-such-program")
    assert not_found.returncode == 127 and 'exec: "no-such-program": executable file not found' in not_found.stderr


def test_env_flags_and_isolation_from_the_caller(docker):
    show_env = "import os, json; print(json.dumps(dict(os.environ)))"
    result = docker("run", "--rm", "-e", "FOO=bar", "--env=EMPTY=", "-e", "COPIED", "-e", "UNSET_HERE",
                    "busybox", "python3", "-c", show_env, env={"COPIED": "from-caller", "CALLER_SECRET": "s3cret"})
    assert result.returncode == 0, result.stderr
    env = json.loads(result.stdout)
    assert (env["FOO"], env["EMPTY"], env["COPIED"]) == ("bar", "", "from-caller")
    assert "CALLER_SECRET" not in env and "UNSET_HERE" not in env
    assert env["SPARKSIM_NODE_ADDR"] == "127.0.0.7"
    assert env["PYTHONPATH"] == str(IMAGE_DIR)
    assert Path(env["SPARKSIM_CONTAINER_DIR"]).name == env["SPARKSIM_CONTAINER_ID"]
    assert docker.ok("ps", "-a", "-q") == ""  # --rm removed it


def test_foreground_run_relays_output_and_exit_code(docker):
    result = docker("run", "--name", "fg", "-w", "/work", "busybox", "python3", "-c",
                    "import os, sys; print(os.getcwd()); print('to stderr', file=sys.stderr); sys.exit(3)")
    assert result.returncode == 3
    assert result.stdout.strip().endswith("/rootfs/work") and result.stderr.endswith("\nto stderr\n")
    assert docker.ok("inspect", "-f", "{{.State.ExitCode}}", "fg") == "3\n"


def test_inspect_object_and_missing(docker):
    container_id = docker.run_detached(
        "vllm-demo", "sleep", "30",
        flags=("--gpus", "all", "--ipc=host", "--network", "host", "--shm-size", "16g", "--ulimit", "memlock=-1",
               "-e", "HF_TOKEN=hf_x", "-v", "/tmp:/root/.cache/huggingface", "--restart", "unless-stopped"))
    [obj] = json.loads(docker.ok("inspect", "vllm-demo"))
    assert obj["Id"] == container_id and obj["Name"] == "/vllm-demo"
    assert obj["State"]["Status"] == "running" and obj["State"]["Running"] is True and obj["State"]["Pid"] > 0
    assert obj["Config"]["Image"] == "busybox" and obj["Config"]["Cmd"] == ["sleep", "30"]
    assert "HF_TOKEN=hf_x" in obj["Config"]["Env"]
    assert obj["Path"] == "sleep" and obj["Args"] == ["30"]
    host = obj["HostConfig"]
    assert (host["NetworkMode"], host["IpcMode"], host["ShmSize"]) == ("host", "host", 16 * 1024**3)
    assert host["RestartPolicy"]["Name"] == "unless-stopped"
    assert host["DeviceRequests"][0]["Capabilities"] == [["gpu"]]
    assert host["Ulimits"] == [{"Name": "memlock", "Soft": -1, "Hard": -1}]
    assert obj["Mounts"][0]["Destination"] == "/root/.cache/huggingface"
    assert json.loads(docker.ok("inspect", "--format", "{{json .State}}", "vllm-demo"))["Pid"] == obj["State"]["Pid"]

    missing = docker("inspect", "nope")
    assert (missing.returncode, missing.stderr, missing.stdout) == (1, "Error: No such object: nope\n", "[]\n")
    docker.ok("stop", "-t", "1", "vllm-demo")
    assert docker.ok("ps", "-a", "--format", "{{.State}}") == "exited\n"  # stopped: no restart


def test_images_pull_and_unpullable(docker):
    pulled = docker("pull", "nvcr.io/nvidia/vllm:25.09-py3")
    assert pulled.returncode == 0
    lines = pulled.stdout.splitlines()
    assert lines[0] == "25.09-py3: Pulling from nvidia/vllm"
    assert lines[-2:] == ["Status: Downloaded newer image for nvcr.io/nvidia/vllm:25.09-py3",
                          "nvcr.io/nvidia/vllm:25.09-py3"]
    again = docker.ok("pull", "nvcr.io/nvidia/vllm:25.09-py3")
    assert "Status: Image is up to date for nvcr.io/nvidia/vllm:25.09-py3" in again

    [image] = [json.loads(line) for line in docker.ok("images", "--format", "{{json .}}").splitlines()]
    assert (image["Repository"], image["Tag"], image["Size"]) == ("nvcr.io/nvidia/vllm", "25.09-py3", "21.4GB")
    assert docker.ok("images").splitlines()[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]

    denied = docker("pull", "example/doesnotexist")
    assert denied.returncode == 1 and "pull access denied for example/doesnotexist" in denied.stderr
    (docker.state / "unpullable").write_text("private/thing:1.0\n")
    run_denied = docker("run", "-d", "--name", "nope", "private/thing:1.0")
    assert run_denied.returncode == 125
    assert run_denied.stderr.startswith("Unable to find image 'private/thing:1.0' locally\n"
                                        "docker: Error response from daemon: pull access denied for private/thing")
    assert docker.ok("ps", "-a", "-q") == ""


def test_login_records_registry_never_password(docker):
    ok = docker("login", "nvcr.io", "-u", "$oauthtoken", "--password-stdin", stdin="nvapi-secret\n")
    assert (ok.returncode, ok.stdout) == (0, "Login Succeeded\n")
    saved = (docker.state / "logins.json").read_text()
    assert json.loads(saved) == {"nvcr.io": {"username": "$oauthtoken"}} and "nvapi-secret" not in saved
    empty = docker("login", "nvcr.io", "-u", "$oauthtoken", "--password-stdin", stdin="")
    assert empty.returncode == 1 and empty.stderr.startswith("Error")
    assert "Version:" in docker.ok("version")
    assert docker.ok("version", "--format", "{{.Server.Version}}").strip() == "27.5.1"


def test_after_a_crash_dead_containers_exit_255_and_restart_policies_apply(docker):
    docker.run_detached("keeper", "sleep", "30", flags=("--restart", "unless-stopped"))
    docker.run_detached("plain", "sleep", "30")
    old_pid = int(docker.ok("inspect", "-f", "{{.State.Pid}}", "keeper"))
    docker.cleanup()  # SIGKILL every container process and supervisor, as a node crash would
    wait_for(lambda: not Path(f"/proc/{old_pid}").exists() or "Z" in Path(f"/proc/{old_pid}/stat").read_text())
    statuses = dict(line.split(" ", 1) for line in docker.ok("ps", "-a", "--format", "{{.Names}} {{.Status}}")
                    .splitlines())
    assert statuses["plain"].startswith("Exited (255) ")
    assert statuses["keeper"].startswith("Up ")  # started again, like dockerd does on its way back up
    assert int(docker.ok("inspect", "-f", "{{.State.Pid}}", "keeper")) != old_pid
