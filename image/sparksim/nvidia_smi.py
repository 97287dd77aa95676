"""`nvidia-smi` on a simulated DGX Spark (one NVIDIA GB10, unified memory).

Faithful to captured GB10 output (see tests/fixtures/gb10/): every framebuffer
memory field answers [N/A] and the table says "Not Supported"; utilization,
temperature, power and clocks report. Load follows the node's simulated docker
state: running containers started with --gpus raise utilization, power and
temperature, and appear as compute processes with the GPU memory they declare
in <container dir>/gpu_memory_mib (optional `gpu_util`, a percentage, overrides
the utilization they cause).
"""

from __future__ import annotations

import hashlib
import math
import os
import signal
import sys
import time

from . import state

DRIVER_VERSION, CUDA_VERSION = "580.126.09", "13.0"
GPU_NAME, BUS_ID = "NVIDIA GB10", "0000000F:01:00.0"
NA = "[N/A]"
WIDTH = 89  # inner width of the table, between the outer bars


class Reading:
    """One sample of the GPU's live values; defaults are an idle GB10."""

    def __init__(self, utilization: int = 0, power_w: float = 3.2, temperature_c: int = 36, pstate: str = "P8",
                 sm_clock_mhz: int = 208, processes: list[tuple[int, str, int]] | None = None):
        self.utilization, self.power_w, self.temperature_c = utilization, power_w, temperature_c
        self.pstate, self.sm_clock_mhz = pstate, sm_clock_mhz
        self.processes = processes or []  # (pid, process name, GPU MiB)


def gpu_uuid() -> str:
    if os.environ.get("SPARKSIM_GPU_UUID"):
        return os.environ["SPARKSIM_GPU_UUID"]
    digest = hashlib.sha256(f"sparksim-gb10:{state.node_addr()}".encode()).hexdigest()
    return f"GPU-{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def process_name(pid: int) -> str:
    """argv[0] as /proc shows it (vLLM retitles its engine "VLLM::EngineCore" this way)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().split(b"\0", 1)[0].decode() or "[unknown]"
    except OSError:
        return "[unknown]"


def current_reading() -> Reading:
    busy = [c for c in state.all_containers() if c.uses_gpu() and c.status() == "running"]
    drift = math.sin(time.time() / 7)  # slow wobble so a dashboard looks alive
    if not busy:
        return Reading(power_w=round(3.2 + 0.25 * drift, 2), temperature_c=36 if drift > -0.5 else 35)
    declared = [int(c.number("gpu_util") or 0) for c in busy if c.number("gpu_util") is not None]
    utilization = max(0, min(100, max(declared) if declared else round(45 + 5 * drift)))
    return Reading(
        utilization=utilization,
        power_w=round(9.5 + 0.55 * utilization + drift, 2),
        temperature_c=round(40 + 0.22 * utilization),
        pstate="P0",
        sm_clock_mhz=2405,
        processes=[(c.pid() or 0, process_name(c.pid() or 0), c.gpu_memory_mib()) for c in busy],
    )


# ---- --query-gpu / --query-compute-apps -------------------------------------------------

# field -> (canonical header name, unit or "", value getter)
GPU_FIELDS = {
    "timestamp": ("timestamp", "", lambda r: time.strftime("%Y/%m/%d %H:%M:%S.") + f"{int(time.time() * 1000) % 1000:03d}"),
    "driver_version": ("driver_version", "", lambda r: DRIVER_VERSION),
    "count": ("count", "", lambda r: 1),
    "index": ("index", "", lambda r: 0),
    "name": ("name", "", lambda r: GPU_NAME),
    "serial": ("serial", "", lambda r: NA),
    "uuid": ("uuid", "", lambda r: gpu_uuid()),
    "pci.bus_id": ("pci.bus_id", "", lambda r: BUS_ID),
    "pcie.link.gen.current": ("pcie.link.gen.current", "", lambda r: 1),
    "pcie.link.gen.max": ("pcie.link.gen.max", "", lambda r: 1),
    "pcie.link.width.current": ("pcie.link.width.current", "", lambda r: 1),
    "pcie.link.width.max": ("pcie.link.width.max", "", lambda r: 1),
    "compute_cap": ("compute_cap", "", lambda r: "12.1"),
    "persistence_mode": ("persistence_mode", "", lambda r: "Enabled"),
    "compute_mode": ("compute_mode", "", lambda r: "Default"),
    "fan.speed": ("fan.speed", "%", lambda r: NA),
    "pstate": ("pstate", "", lambda r: r.pstate),
    "memory.total": ("memory.total", "MiB", lambda r: NA),
    "memory.reserved": ("memory.reserved", "MiB", lambda r: NA),
    "memory.used": ("memory.used", "MiB", lambda r: NA),
    "memory.free": ("memory.free", "MiB", lambda r: NA),
    "utilization.gpu": ("utilization.gpu", "%", lambda r: r.utilization),
    "utilization.memory": ("utilization.memory", "%", lambda r: 0),  # as captured: 0, not [N/A]
    "temperature.gpu": ("temperature.gpu", "", lambda r: r.temperature_c),
    "temperature.memory": ("temperature.memory", "", lambda r: NA),
    "power.draw": ("power.draw", "W", lambda r: f"{r.power_w:.2f}"),
    "power.limit": ("power.limit", "W", lambda r: NA),
    "enforced.power.limit": ("enforced.power.limit", "W", lambda r: NA),
    "power.default_limit": ("power.default_limit", "W", lambda r: NA),
    "power.max_limit": ("power.max_limit", "W", lambda r: NA),
    "clocks.current.graphics": ("clocks.current.graphics", "MHz", lambda r: r.sm_clock_mhz),
    "clocks.current.sm": ("clocks.current.sm", "MHz", lambda r: r.sm_clock_mhz),
    "clocks.current.memory": ("clocks.current.memory", "MHz", lambda r: NA),
    "clocks.max.graphics": ("clocks.max.graphics", "MHz", lambda r: 3003),
    "clocks.max.sm": ("clocks.max.sm", "MHz", lambda r: 3003),
    "clocks.max.memory": ("clocks.max.memory", "MHz", lambda r: NA),
}
GPU_ALIASES = {
    "gpu_name": "name", "gpu_serial": "serial", "gpu_uuid": "uuid", "gpu_bus_id": "pci.bus_id",
    "clocks.gr": "clocks.current.graphics", "clocks.sm": "clocks.current.sm",
    "clocks.mem": "clocks.current.memory", "clocks.max.gr": "clocks.max.graphics",
    "clocks.max.mem": "clocks.max.memory",
}
APP_FIELDS = {
    "timestamp": GPU_FIELDS["timestamp"],
    "gpu_name": ("gpu_name", "", lambda p: GPU_NAME),
    "gpu_bus_id": ("gpu_bus_id", "", lambda p: BUS_ID),
    "gpu_serial": ("gpu_serial", "", lambda p: NA),
    "gpu_uuid": ("gpu_uuid", "", lambda p: gpu_uuid()),
    "pid": ("pid", "", lambda p: p[0]),
    "process_name": ("process_name", "", lambda p: p[1]),
    "used_gpu_memory": ("used_gpu_memory", "MiB", lambda p: p[2]),
}
APP_ALIASES = {"name": "process_name", "used_memory": "used_gpu_memory"}


def query(spec: str, fmt: str, table: dict, aliases: dict, rows: list) -> int:
    """CSV the way nvidia-smi prints it: ", "-separated, units in header and values."""
    options = fmt.split(",")
    if options[0] != "csv":
        print(f'"{fmt}" is not a valid format.\n')
        return 2
    names = [name.strip() for name in spec.split(",") if name.strip()]
    for name in names:
        if aliases.get(name, name) not in table:
            print(f'Field "{name}" is not a valid field to query.\n')
            return 2
    columns = [table[aliases.get(name, name)] for name in names]
    with_units = "nounits" not in options
    out = []
    if "noheader" not in options:
        out.append(", ".join(f"{h} [{u}]" if u else h for h, u, _ in columns))
    for row in rows:
        values = []
        for _, unit, getter in columns:
            value = str(getter(row))
            values.append(f"{value} {unit}" if unit and with_units and value != NA else value)
        out.append(", ".join(values))
    sys.stdout.write("".join(line + "\n" for line in out))
    return 0


# ---- the default table ------------------------------------------------------------------


def _line(text: str) -> str:
    return "|" + text.ljust(WIDTH) + "|"


def _process_row(pid: int, name: str, mib: int) -> str:
    memory = f"{mib}MiB"
    room = 46 - len(memory) - 1
    if len(name) > room:
        name = "..." + name[-(room - 3) :]
    return f"|    0   N/A  N/A  {pid:>14}      C   {name:<{46 - len(memory)}}{memory} |"


def table(reading: Reading) -> str:
    sep = "+-----------------------------------------+------------------------+----------------------+"
    header = f" NVIDIA-SMI {DRIVER_VERSION}             Driver Version: {DRIVER_VERSION}     CUDA Version: {CUDA_VERSION}"
    power = f"{round(reading.power_w)}W".rjust(16)
    lines = [
        time.strftime("%a %b %e %H:%M:%S %Y") + "       ",
        "+" + "-" * WIDTH + "+",
        _line(header),
        sep,
        "| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |",
        "| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |",
        "|                                         |                        |               MIG M. |",
        "|=========================================+========================+======================|",
        f"|   0  {GPU_NAME}                    On  |   {BUS_ID} Off |                  N/A |",
        f"| N/A   {reading.temperature_c}C    {reading.pstate}{power} /  N/A  | Not Supported          "
        f"|{reading.utilization:>7}%      Default |",
        "|                                         |                        |                  N/A |",
        sep,
        "",
        "+" + "-" * WIDTH + "+",
        _line(" Processes:"),
        "|  GPU   GI   CI              PID   Type   Process name                        GPU Memory |",
        "|        ID   ID                                                               Usage      |",
        "|" + "=" * WIDTH + "|",
    ]
    lines += [_process_row(*p) for p in reading.processes] or [_line("  No running processes found")]
    lines.append("+" + "-" * WIDTH + "+")
    return "".join(line + "\n" for line in lines)


# ---- command line -------------------------------------------------------------------------


def _option(argv: list[str], name: str) -> str | None:
    """Value of `--name=value` or `--name value`; None when absent."""
    for i, arg in enumerate(argv):
        if arg.startswith(name + "="):
            return arg[len(name) + 1 :]
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
    return None


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # like the C binary when its reader goes away
    if (state.state_dir() / "nvidia_smi_fault").exists():  # failure injection for tests
        print("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
              "Make sure that the latest NVIDIA driver is installed and running.\n")
        return 9
    device = _option(argv, "--id") or _option(argv, "-i")
    if device not in (None, "0", gpu_uuid(), BUS_ID):
        print("No devices were found")
        return 6
    if "-L" in argv or "--list-gpus" in argv:
        print(f"GPU 0: {GPU_NAME} (UUID: {gpu_uuid()})")
        return 0
    gpu_spec, apps_spec = _option(argv, "--query-gpu"), _option(argv, "--query-compute-apps")
    if gpu_spec is not None or apps_spec is not None:
        fmt = _option(argv, "--format")
        if fmt is None:
            print("Invalid combination of input arguments. Please run 'nvidia-smi -h' for help.\n")
            return 2
        reading = current_reading()
        if gpu_spec is not None:
            return query(gpu_spec, fmt, GPU_FIELDS, GPU_ALIASES, [reading])
        return query(apps_spec, fmt, APP_FIELDS, APP_ALIASES, reading.processes)
    known = {"-i", "--id", "-L", "--list-gpus"}
    if any(arg.startswith("-") and arg.split("=")[0] not in known for arg in argv):
        print("Invalid combination of input arguments. Please run 'nvidia-smi -h' for help.\n")
        return 2
    sys.stdout.write(table(current_reading()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
