"""The simulated node's `nvidia-smi` against outputs captured on real DGX Sparks
(tests/fixtures/gb10/, copied from shared/fixtures/gb10): same layout, same
header names, same separators, [N/A] where a GB10 has no framebuffer memory;
and it reflects the node's simulated docker state."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

IMAGE_DIR = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "gb10"
PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


@pytest.fixture
def node(tmp_path):
    """Runs the simulated tools with a private state dir; kills its containers afterwards."""
    state = tmp_path / "sparksim"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "PYTHONPATH": str(IMAGE_DIR),
           "SPARKSIM_STATE": str(state), "SPARKSIM_NODE_ADDR": "127.0.0.9"}

    def tool(module: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([PYTHON, "-m", f"sparksim.{module}", *args], capture_output=True, text=True,
                              env=env, timeout=20)

    tool.state = state
    yield tool
    for container_dir in (state / "containers").glob("*"):
        for pid_file, kill in (("supervisor", os.kill), ("pid", os.killpg)):
            try:
                kill(int((container_dir / pid_file).read_text().split()[0]), signal.SIGKILL)
            except (OSError, ValueError, IndexError):
                pass


def smi(node, *args: str) -> str:
    result = node("nvidia_smi", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def start_gpu_container(node, name: str, mib: int) -> int:
    """A --gpus container that declares `mib` of GPU memory; returns its pid."""
    script = f"import os, time\nopen(os.environ['SPARKSIM_CONTAINER_DIR'] + '/gpu_memory_mib', 'w').write('{mib}')\n" \
             "time.sleep(60)"
    assert node("docker_cli", "run", "-d", "--name", name, "--gpus", "all", "busybox", PYTHON, "-c",
                script).returncode == 0
    pid, log_path = node("docker_cli", "inspect", "-f", "{{.State.Pid}} {{.LogPath}}", name).stdout.split()
    gpu_file = Path(log_path).parent / "gpu_memory_mib"
    deadline = time.monotonic() + 5
    while not (gpu_file.exists() and gpu_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return int(pid)


def test_idle_table_matches_the_real_layout(node):
    lines = smi(node).splitlines()
    real = fixture("nvidia-smi.txt").splitlines()
    assert re.fullmatch(r"\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4} {7}", lines[0])  # the date line
    gpu_rows = lines[1:12]
    # Identical except the live readings row (temperature and power move).
    for mine, theirs in zip(gpu_rows, real):
        if theirs.startswith("| N/A "):
            assert re.fullmatch(r"\| N/A   3[56]C    P8 +[34]W /  N/A  \| Not Supported {10}\|      0%      Default \|",
                                mine), mine
            assert len(mine) == len(theirs)
        else:
            assert mine == theirs
    assert lines[12] == ""
    assert lines[14] == "| Processes:" + " " * 78 + "|"
    assert lines[18] == "|  No running processes found" + " " * 61 + "|"
    assert all(len(line) == 91 for line in lines[1:] if line)


def test_query_gpu_header_and_values_like_the_captures(node):
    csv_fields = "memory.total,memory.used,memory.free,utilization.gpu,power.draw,temperature.gpu"
    header, values = smi(node, f"--query-gpu={csv_fields}", "--format=csv").splitlines()
    assert header == fixture("query-gpu-csv.txt").splitlines()[0]
    assert re.fullmatch(r"\[N/A\], \[N/A\], \[N/A\], 0 %, \d+\.\d\d W, 3[56]", values)

    assert smi(node, "--query-gpu=index,name,memory.total,memory.free", "--format=csv") == fixture("query-gpu-name.txt")
    assert smi(node, "--query-gpu=memory.used,memory.total,utilization.memory",
               "--format=csv,noheader,nounits") == fixture("query-gpu-noheader.txt")

    many = smi(node, "--query-gpu=clocks.sm,clocks.max.sm,clocks.gr,pstate,driver_version,uuid,fan.speed,pci.bus_id",
               "--format=csv")
    header, values = many.splitlines()
    assert header == ("clocks.current.sm [MHz], clocks.max.sm [MHz], clocks.current.graphics [MHz], pstate, "
                      "driver_version, uuid, fan.speed [%], pci.bus_id")
    assert re.fullmatch(r"\d+ MHz, \d+ MHz, \d+ MHz, P8, 580\.126\.09, GPU-[0-9a-f-]{36}, \[N/A\], 0000000F:01:00\.0",
                        values)


def test_unknown_field_and_list(node):
    bad = node("nvidia_smi", "--query-gpu=name,bogus.field", "--format=csv")
    assert (bad.returncode, bad.stdout) == (2, 'Field "bogus.field" is not a valid field to query.\n\n')
    listing = smi(node, "-L")
    uuid = smi(node, "--query-gpu=uuid", "--format=csv,noheader").strip()
    assert listing == f"GPU 0: NVIDIA GB10 (UUID: {uuid})\n"


def test_gpu_containers_load_the_gpu_and_show_as_compute_apps(node):
    fields = "utilization.gpu,power.draw,temperature.gpu,pstate"
    idle = smi(node, f"--query-gpu={fields}", "--format=csv,noheader,nounits").strip().split(", ")
    assert smi(node, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits") == ""

    assert node("docker_cli", "run", "-d", "--name", "cpu-only", "busybox", "sleep", "60").returncode == 0
    pid = start_gpu_container(node, "vllm-model", 19135)

    busy = smi(node, f"--query-gpu={fields}", "--format=csv,noheader,nounits").strip().split(", ")
    assert int(busy[0]) > int(idle[0]) and float(busy[1]) > float(idle[1]) + 5 and int(busy[2]) > int(idle[2])
    assert busy[3] == "P0"

    uuid = smi(node, "--query-gpu=uuid", "--format=csv,noheader").strip()
    apps = smi(node, "--query-compute-apps=gpu_uuid,pid,process_name,used_memory", "--format=csv,noheader,nounits")
    assert apps == f"{uuid}, {pid}, {PYTHON}, 19135\n"  # same shape as query-compute-apps.txt
    assert len(apps.split(", ")) == len(fixture("query-compute-apps.txt").split(", "))
    with_header = smi(node, "--query-compute-apps=pid,used_memory", "--format=csv").splitlines()
    assert with_header == ["pid, used_gpu_memory [MiB]", f"{pid}, 19135 MiB"]
    row = [line for line in smi(node).splitlines() if str(pid) in line]
    assert row == [f"|    0   N/A  N/A  {pid:>14}      C   {PYTHON:<38}19135MiB |"]

    assert node("docker_cli", "stop", "-t", "1", "vllm-model").returncode == 0
    assert smi(node, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits") == ""
    assert smi(node, "--query-gpu=pstate", "--format=csv,noheader") == "P8\n"


def test_fault_file_makes_it_fail_like_a_lost_driver(node):
    node.state.mkdir(parents=True, exist_ok=True)
    (node.state / "nvidia_smi_fault").touch()
    broken = node("nvidia_smi", "--query-gpu=name", "--format=csv")
    assert broken.returncode == 9 and broken.stdout.startswith("NVIDIA-SMI has failed because it couldn't communicate")
