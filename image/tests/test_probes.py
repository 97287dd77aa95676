"""app/probes.py: the status script and its parsers.

Parsers are checked on real GB10 captures (tests/fixtures/gb10/README.md says which files are
real and which are synthesized in the same format), and STATUS_SCRIPT is run with a real
/bin/sh: on this machine as it is, and with stand-in nvidia-smi/docker programs on PATH.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from app.probes import (
    STATUS_COMMAND,
    STATUS_SCRIPT,
    Container,
    DiskUsage,
    GpuInfo,
    GpuProcess,
    LoadAverage,
    MemInfo,
    Problem,
    build_status_script,
    parse_compute_apps,
    parse_df,
    parse_docker_ps,
    parse_gpu_query,
    parse_hostname,
    parse_loadavg,
    parse_meminfo,
    parse_nproc,
    parse_status,
    parse_uptime,
    split_sections,
)

FIXTURES = Path(__file__).parent / "fixtures" / "gb10"
GB10_UUID = "GPU-2dee1e25-b3b5-007e-2b55-79f2d0f2ebe5"
ALL_SECTIONS = ("hostname", "gpu", "gpu_processes", "meminfo", "disk", "docker", "loadavg", "uptime", "nproc")


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def section(name: str, output: str, exit_status: int = 0) -> str:
    """What STATUS_SCRIPT prints for one command."""
    return f"@@spark-control:{name}@@\n{output}\n@@spark-control:rc={exit_status}@@\n"


def gb10_output(**overrides: tuple[str, int]) -> str:
    """A whole STATUS_SCRIPT output of a healthy GB10, with some sections replaced."""
    sections = {
        "hostname": ("spark-1a2b\n", 0),
        "gpu": (fixture("status-query-gpu.txt"), 0),
        "gpu_processes": (fixture("status-compute-apps.txt"), 0),
        "meminfo": (fixture("meminfo.txt"), 0),
        "disk": (fixture("df.txt"), 0),
        "docker": (fixture("docker-ps.jsonl"), 0),
        "loadavg": (fixture("loadavg.txt"), 0),
        "uptime": (fixture("uptime.txt"), 0),
        "nproc": ("20\n", 0),
    }
    sections.update(overrides)
    return "".join(section(name, out, rc) for name, (out, rc) in sections.items())


# ---------------------------------------------------------------- nvidia-smi


def test_gpu_query_on_the_status_query():
    assert parse_gpu_query(fixture("status-query-gpu.txt")) == [GpuInfo(
        index=0, name="NVIDIA GB10", uuid=GB10_UUID, utilization_percent=94, temperature_c=71,
        power_draw_w=38.46, sm_clock_mhz=2405, sm_clock_max_mhz=3003, pstate="P0",
        memory_used_mib=None, memory_total_mib=None,
    )]


def test_gpu_query_on_real_csv_with_header_and_units():
    # Real capture: header line names the columns, values carry units ("0 %", "11.17 W").
    assert parse_gpu_query(fixture("query-gpu-csv.txt")) == [GpuInfo(
        utilization_percent=0, power_draw_w=11.17, temperature_c=35, memory_used_mib=None, memory_total_mib=None,
    )]


def test_gpu_query_on_real_index_name_capture():
    assert parse_gpu_query(fixture("query-gpu-name.txt")) == [GpuInfo(index=0, name="NVIDIA GB10")]


def test_gpu_query_on_real_noheader_capture_with_caller_fields():
    problems: list[str] = []
    gpus = parse_gpu_query(fixture("query-gpu-noheader.txt"),
                           fields=("memory.used", "memory.total", "utilization.memory"), problems=problems)
    assert gpus == [GpuInfo(memory_used_mib=None, memory_total_mib=None)]
    assert problems == []


def test_gpu_query_not_supported_and_several_gpus():
    text = ("0, NVIDIA GB10, GPU-a, 3, 36, [Not Supported], 208, 3003, P8, [N/A], [N/A]\n"
            "1, NVIDIA H100 80GB HBM3, GPU-b, 100, 80, 650.5, 1980, 1980, P0, 81000, 81559\n")
    gpus = parse_gpu_query(text)
    assert gpus[0].power_draw_w is None and gpus[0].memory_total_mib is None
    assert gpus[1] == GpuInfo(index=1, name="NVIDIA H100 80GB HBM3", uuid="GPU-b", utilization_percent=100,
                              temperature_c=80, power_draw_w=650.5, sm_clock_mhz=1980, sm_clock_max_mhz=1980,
                              pstate="P0", memory_used_mib=81000, memory_total_mib=81559)


@pytest.mark.parametrize("text", [
    "",
    "\n\n",
    "0, NVIDIA GB10, GPU-a\n",
    "0, NVIDIA GB10, GPU-a, lots, 36, 3.0, 208, 3003, P8, [N/A], [N/A]\n",
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n",
])
def test_gpu_query_malformed_input_gives_no_gpus_and_says_why(text):
    problems: list[str] = []
    assert parse_gpu_query(text, problems=problems) == []
    assert bool(problems) == bool(text.strip())


def test_gpu_query_keeps_good_rows_next_to_bad_ones():
    text = "garbage\n" + fixture("status-query-gpu.txt")
    problems: list[str] = []
    assert [g.uuid for g in parse_gpu_query(text, problems=problems)] == [GB10_UUID]
    assert len(problems) == 1 and "garbage" in problems[0]


def test_compute_apps_on_real_capture_with_uuid_column():
    apps = parse_compute_apps(fixture("query-compute-apps.txt"),
                              fields=("gpu_uuid", "pid", "process_name", "used_memory"))
    assert apps == [GpuProcess(pid=114687, process_name="/usr/local/bin/python", used_memory_mib=19135,
                               gpu_uuid=GB10_UUID)]


def test_compute_apps_status_query():
    assert parse_compute_apps(fixture("status-compute-apps.txt")) == [
        GpuProcess(pid=114687, process_name="/usr/local/bin/python", used_memory_mib=19135),
        GpuProcess(pid=120333, process_name="VLLM::EngineCore", used_memory_mib=4096),
    ]


def test_compute_apps_process_name_with_comma_and_na_memory():
    apps = parse_compute_apps("42, python my, script.py, [N/A]\n")
    assert apps == [GpuProcess(pid=42, process_name="python my, script.py", used_memory_mib=None)]


@pytest.mark.parametrize("text", ["abc, python, 12", "[N/A], python, 12", "1, 2"])
def test_compute_apps_malformed_rows(text):
    problems: list[str] = []
    assert parse_compute_apps(text, problems=problems) == []
    assert len(problems) == 1


def test_compute_apps_empty_means_no_processes():
    problems: list[str] = []
    assert parse_compute_apps("", problems=problems) == [] and problems == []


# ---------------------------------------------------------------- /proc, df


def test_meminfo_gb10():
    assert parse_meminfo(fixture("meminfo.txt")) == MemInfo(
        total_bytes=127600748 * 1024,  # 130663165952
        available_bytes=118566368 * 1024,
        used_bytes=9251205120,
        free_bytes=3126528 * 1024,
        swap_total_bytes=17179865088,
        swap_free_bytes=16642994176,
        swap_used_bytes=536870912,
    )


def test_meminfo_without_swap_lines():
    mem = parse_meminfo("MemTotal: 1000 kB\nMemAvailable: 400 kB\n")
    assert (mem.total_bytes, mem.used_bytes, mem.swap_total_bytes) == (1024000, 614400, 0)


@pytest.mark.parametrize("text", ["", "MemTotal: 1000 kB\n", "garbage", "MemTotal: lots kB\nMemAvailable: 1 kB"])
def test_meminfo_malformed_raises_value_error(text):
    with pytest.raises(ValueError, match="MemTotal|MemAvailable"):
        parse_meminfo(text)


def test_df_deduplicates_the_shared_mountpoint():
    assert parse_df(fixture("df.txt")) == [
        DiskUsage(filesystem="/dev/nvme0n1p2", mountpoint="/", size_bytes=3936818806784,
                  used_bytes=1021389225984, available_bytes=2715377414144),
    ]


def test_df_separate_home_and_mountpoint_with_spaces_and_error_line():
    text = ("Filesystem 1-blocks Used Available Capacity Mounted on\n"
            "/dev/nvme0n1p2 100 40 60 40% /\n"
            "/dev/nvme1n1p1 2000 1000 1000 50% /home/my disk\n"
            "df: /home/gone: No such file or directory\n")
    problems: list[str] = []
    disks = parse_df(text, problems=problems)
    assert [(d.mountpoint, d.size_bytes) for d in disks] == [("/", 100), ("/home/my disk", 2000)]
    assert len(problems) == 1 and "/home/gone" in problems[0]


def test_loadavg_uptime_nproc_hostname():
    assert parse_loadavg(fixture("loadavg.txt")) == LoadAverage(0.52, 0.61, 0.58, 2, 1432)
    assert parse_uptime(fixture("uptime.txt")) == 183245.67
    assert parse_nproc("20\n") == 20
    assert parse_hostname("spark-1a2b\n") == "spark-1a2b"


@pytest.mark.parametrize(("parse", "text"), [
    (parse_loadavg, ""), (parse_loadavg, "0.5 0.6"), (parse_loadavg, "a b c 1/2 3"),
    (parse_uptime, ""), (parse_uptime, "soon"),
    (parse_nproc, ""), (parse_nproc, "many"),
    (parse_hostname, ""), (parse_hostname, "a\nb"),
])
def test_single_value_parsers_raise_value_error(parse, text):
    with pytest.raises(ValueError):
        parse(text)


# ---------------------------------------------------------------- docker


def test_docker_ps_json_lines():
    containers = parse_docker_ps(fixture("docker-ps.jsonl"))
    assert [c.name for c in containers] == ["vllm-gpt-oss-120b", "nim-llama-3.1-8b", "spark-embed"]
    vllm, nim, embed = containers
    assert vllm == Container(
        id="9f3c2a7e51d04b8c86e1a4f0b2d7c93e5a1f6b08c4d2e7a9b3f5c1d8e6a0b4f2",
        name="vllm-gpt-oss-120b",
        image="nvcr.io/nvidia/vllm:25.09-py3",
        state="running",
        status="Up 2 hours",
        ports="",
        created_at="2025-10-21 09:14:52 +0000 UTC",
        running_for="2 hours ago",
        command=("/opt/nvidia/nvidia_entrypoint.sh vllm serve openai/gpt-oss-120b --host 0.0.0.0 --port 8000 "
                 "--served-model-name gpt-oss-120b --gpu-memory-utilization 0.8 --max-model-len 131072"),
        labels={"com.nvidia.cuda.version": "13.0.1.012", "com.nvidia.volumes.needed": "nvidia_driver",
                "org.opencontainers.image.ref.name": "ubuntu", "org.opencontainers.image.version": "24.04"},
    )
    assert nim.ports == "0.0.0.0:8001->8000/tcp, [::]:8001->8000/tcp"
    assert nim.labels == {"spark-control.kind": "nim", "spark-control.note": "fast, small"}
    assert (embed.state, embed.status, embed.labels) == ("exited", "Exited (137) 2 days ago", {})


def test_docker_ps_flags_malformed_lines_without_crashing():
    good = fixture("docker-ps.jsonl").splitlines()[0]
    text = "\n".join(["{not json", good, "[1, 2]", '{"Names": "no-id"}', "", "null"])
    problems: list[str] = []
    containers = parse_docker_ps(text, problems=problems)
    assert [c.name for c in containers] == ["vllm-gpt-oss-120b"]
    assert len(problems) == 4


def test_docker_ps_old_engine_without_state_key():
    lines = [json.dumps({"ID": "a1", "Names": "x,alias", "Image": "i", "Status": status})
             for status in ("Up 3 minutes", "Up 3 minutes (Paused)", "Exited (0) 1 hour ago", "Created", "weird")]
    containers = parse_docker_ps("\n".join(lines))
    assert [c.state for c in containers] == ["running", "paused", "exited", "created", "unknown"]
    assert containers[0].name == "x"


# ---------------------------------------------------------------- the whole output


def test_split_sections_keeps_output_and_exit_status():
    text = section("a", "one\ntwo\n") + section("b", "no newline at end", 3) + "@@spark-control:c@@\ncut"
    sections = split_sections(text)
    assert sections["a"].output == "one\ntwo" and sections["a"].exit_status == 0
    assert sections["b"].output == "no newline at end" and sections["b"].exit_status == 3
    assert sections["c"].output == "cut" and sections["c"].exit_status is None


def test_parse_status_healthy_gb10():
    status = parse_status(gb10_output())
    assert status.problems == ()
    assert status.hostname == "spark-1a2b"
    assert status.cpu_count == 20
    assert status.uptime_seconds == 183245.67
    assert status.load == LoadAverage(0.52, 0.61, 0.58, 2, 1432)
    assert status.memory.total_bytes == 130663165952
    assert status.memory.used_bytes == 9251205120
    assert [g.name for g in status.gpus] == ["NVIDIA GB10"]
    assert status.gpus[0].memory_total_mib is None  # unified memory: comes from meminfo instead
    assert status.gpu_process_memory_mib == 19135 + 4096
    assert [d.mountpoint for d in status.disks] == ["/"]
    assert len(status.containers) == 3


def test_parse_status_to_dict_is_json():
    data = json.loads(json.dumps(parse_status(gb10_output()).to_dict()))
    assert data["memory"]["available_bytes"] == 121411960832
    assert data["gpus"][0]["uuid"] == GB10_UUID
    assert data["containers"][1]["labels"]["spark-control.kind"] == "nim"
    assert data["problems"] == []


def test_parse_status_lists_problems_instead_of_raising():
    output = gb10_output(
        gpu=("sh: 1: nvidia-smi: not found", 127),
        gpu_processes=("sh: 1: nvidia-smi: not found", 127),
        docker=("permission denied while trying to connect to the Docker daemon socket at "
                "unix:///var/run/docker.sock: Get \"http://%2Fvar%2Frun%2Fdocker.sock/v1.51/containers/json\": "
                "dial unix /var/run/docker.sock: connect: permission denied", 1),
        loadavg=("garbage", 0),
    )
    status = parse_status(output)
    assert status.gpus == () and status.containers == () and status.load is None
    assert status.memory.total_bytes == 130663165952  # the rest still parsed
    messages = {p.section: p.message for p in status.problems}
    assert messages["gpu"] == "nvidia-smi not found on the node"
    assert messages["docker"].startswith("docker failed (exit 1): permission denied")
    assert "docker' group" in messages["docker"]
    assert messages["loadavg"].startswith("/proc/loadavg: ")
    assert set(messages) == {"gpu", "gpu_processes", "docker", "loadavg"}


def test_parse_status_nvidia_driver_failure_and_timeout():
    status = parse_status(gb10_output(
        gpu=("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
             "Make sure that the latest NVIDIA driver is installed and running.", 9),
        docker=("", 124),
    ))
    messages = {p.section: p.message for p in status.problems}
    assert messages["gpu"].startswith("nvidia-smi failed (exit 9): NVIDIA-SMI has failed")
    assert "did not answer in time" in messages["docker"]


def test_parse_status_truncated_output():
    full = gb10_output()
    cut = full[: full.index("@@spark-control:docker@@") + len("@@spark-control:docker@@\n{\"ID\"")]
    status = parse_status(cut)
    assert status.memory is not None
    messages = {p.section: p.message for p in status.problems}
    assert "cut off" in messages["docker"]
    assert {"loadavg", "uptime", "nproc"} <= set(messages)


@pytest.mark.parametrize("text", ["", "bash: line 1: syntax error\n", "@@spark-control:rc=0@@\n"])
def test_parse_status_without_any_section(text):
    status = parse_status(text)
    assert status.hostname is None and status.memory is None
    assert [p.section for p in status.problems] == ["script"]


# ---------------------------------------------------------------- STATUS_SCRIPT in a real shell


def run_script(script: str, path_prefix: Path | None = None) -> str:
    env = dict(os.environ)
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}:{env['PATH']}"
    result = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # everything is merged into the sections
    return result.stdout


def test_status_script_on_this_machine():
    # No GPU here, and docker is missing or has no daemon: those become problems while
    # everything the kernel knows is still parsed.
    status = parse_status(run_script(STATUS_SCRIPT))
    assert status.hostname == os.uname().nodename
    meminfo_total_kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
    assert status.memory.total_bytes == meminfo_total_kb * 1024
    assert 0 < status.memory.available_bytes <= status.memory.total_bytes
    assert "/" in [d.mountpoint for d in status.disks]
    assert status.load is not None and status.load.total_tasks > 0
    assert status.uptime_seconds > 0
    assert status.cpu_count >= 1
    assert set(split_sections(run_script(STATUS_SCRIPT))) == set(ALL_SECTIONS)
    sections_with_problems = {p.section for p in status.problems}
    assert sections_with_problems <= {"gpu", "gpu_processes", "docker"}
    if not any(Path(d, "nvidia-smi").exists() for d in os.environ["PATH"].split(":")):
        assert Problem("gpu", "nvidia-smi not found on the node") in status.problems


def test_status_command_runs_the_same_script_under_sh():
    assert split_sections(run_script(STATUS_COMMAND)).keys() == split_sections(run_script(STATUS_SCRIPT)).keys()


def write_tool(directory: Path, name: str, body: str) -> None:
    tool = directory / name
    tool.write_text("#!/bin/sh\n" + body)
    tool.chmod(0o755)


def test_status_script_with_stand_in_gb10_tools(tmp_path):
    # nvidia-smi answers like a GB10; docker fails like a user outside the docker group
    # (message on stderr, exit 1): the script must carry both through to the parser.
    write_tool(tmp_path, "nvidia-smi", f"""\
case "$1" in
  --query-gpu=index,name,uuid,utilization.gpu,temperature.gpu,power.draw,clocks.sm,clocks.max.sm,pstate,memory.used,memory.total)
    cat '{FIXTURES / "status-query-gpu.txt"}' ;;
  --query-compute-apps=pid,process_name,used_memory) cat '{FIXTURES / "status-compute-apps.txt"}' ;;
  *) echo "unexpected arguments: $*" >&2; exit 2 ;;
esac
""")
    write_tool(tmp_path, "docker", """\
echo "permission denied while trying to connect to the Docker daemon socket at unix:///var/run/docker.sock" >&2
exit 1
""")
    status = parse_status(run_script(STATUS_SCRIPT, tmp_path))
    assert status.gpus == tuple(parse_gpu_query(fixture("status-query-gpu.txt")))
    assert status.gpu_process_memory_mib == 19135 + 4096
    assert [p.section for p in status.problems] == ["docker"]
    assert "permission denied" in status.problems[0].message


def test_status_script_kills_a_hanging_tool_and_carries_on(tmp_path):
    write_tool(tmp_path, "nvidia-smi", "sleep 30\n")
    started = time.monotonic()
    status = parse_status(run_script(build_status_script(command_timeout_s=1), tmp_path))
    assert time.monotonic() - started < 10
    messages = {p.section: p.message for p in status.problems}
    assert "did not answer in time" in messages["gpu"]
    assert status.memory is not None and status.cpu_count is not None
