"""What docker shows about containers and images: `ps`/`images` rows, `inspect`
objects, and `--format` handling (Go templates, `table`, `json`)."""

from __future__ import annotations

import time

from . import images, state
from .dockerfmt import ago, ellipsis, go_quote, go_time_string, human_duration, human_size, rfc3339nano, tabwrite
from .gotemplate import render

IMAGE_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]

PS_TABLE = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
PS_HEADERS = {
    "ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
    "RunningFor": "CREATED", "Ports": "PORTS", "State": "STATE", "Status": "STATUS", "Size": "SIZE",
    "Names": "NAMES", "Labels": "LABELS", "Mounts": "MOUNTS", "Networks": "NETWORKS",
    "LocalVolumes": "LOCAL VOLUMES", "Label": lambda *_: "LABEL",
}
IMAGES_TABLE = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
IMAGES_HEADERS = {
    "Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID", "Digest": "DIGEST",
    "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE", "Containers": "CONTAINERS",
    "SharedSize": "SHARED SIZE", "UniqueSize": "UNIQUE SIZE", "VirtualSize": "SIZE",
}


def format_rows(template: str | None, rows: list[dict], headers: dict, default_table: str) -> str:
    """docker's formatter: `table` prefix -> header row + tabwriter; `json` -> {{json .}}."""
    template = template or default_table
    if template == "json":
        template = "{{json .}}"
    elif template == "table":
        template = default_table
    is_table = template.startswith("table")
    if is_table:
        template = template[len("table") :]
    template = template.strip(" ").replace("\\t", "\t").replace("\\n", "\n")
    body = "".join(render(template, row, strict=True) + "\n" for row in rows)
    if not is_table:
        return body
    header = render(template, headers, strict=True) + "\n"
    return tabwrite((header + body).splitlines())


# ---- containers -----------------------------------------------------------------------


def _port_bindings(container: state.Container) -> list[tuple[str, str, str]]:
    """(host ip, host port, "container port/proto") for each -p."""
    return [tuple(spec.split(":", 2)) for spec in container.config.get("publish", [])]


def _port_text(host_ip: str, host_port: str, inner: str) -> str:
    """Docker 26+ lists a 0.0.0.0 binding twice, for IPv4 and IPv6."""
    text = f"{host_ip}:{host_port}->{inner}"
    return f"{text}, [::]:{host_port}->{inner}" if host_ip == "0.0.0.0" else text


def status_text(container: state.Container) -> str:
    status, now = container.status(), time.time()
    code = container.effective_exit_code()
    if status == "running":
        return "Up " + human_duration(now - (container.number("started_at") or now))
    if status == "restarting":
        return f"Restarting ({code}) " + ago(container.number("finished_at") or now)
    if status == "exited":
        return f"Exited ({code}) " + ago(container.number("finished_at") or now)
    return "Created"


def ps_row(container: state.Container, trunc: bool = True) -> dict:
    config = container.config
    command = " ".join(images.container_argv(config))
    labels = config.get("labels", {})
    mounts = [m.get("Name") or m["Source"] for m in config.get("mounts", [])]
    return {
        "Command": go_quote(ellipsis(command, 20) if trunc else command),
        "CreatedAt": go_time_string(config["created"]),
        "ID": container.id[:12] if trunc else container.id,
        "Image": config["image"],
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        "LocalVolumes": str(sum(1 for m in config.get("mounts", []) if m["Type"] == "volume")),
        "Mounts": ",".join(ellipsis(m, 15) if trunc else m for m in mounts),
        "Names": container.name,
        "Networks": config.get("network", "bridge"),
        "Ports": ", ".join(_port_text(*binding) for binding in _port_bindings(container)),
        "RunningFor": ago(config["created"]),
        "Size": "0B",
        "State": container.status(),
        "Status": status_text(container),
        "Label": lambda key: labels.get(key, ""),
    }


def _host_config(config: dict) -> dict:
    policy, _, retries = config.get("restart", "no").partition(":")
    binds = [
        f"{m.get('Name') or m['Source']}:{m['Destination']}" + (f":{m['Mode']}" if m["Type"] == "bind" and m["Mode"] else "")
        for m in config.get("mounts", [])
    ]
    gpus = config.get("gpus")
    device_requests = None
    if gpus:
        count = int(gpus) if gpus.isdigit() else -1  # "all" or "device=..."
        device_requests = [{"Driver": "", "Count": count, "DeviceIDs": None, "Capabilities": [["gpu"]], "Options": {}}]
    return {
        "Binds": binds or None,
        "NetworkMode": config.get("network", "bridge"),
        "PortBindings": {inner: [{"HostIp": ip, "HostPort": host}] for ip, host, inner in
                         (tuple(s.split(":", 2)) for s in config.get("publish", []))},
        "RestartPolicy": {"Name": policy, "MaximumRetryCount": int(retries or 0)},
        "AutoRemove": config.get("auto_remove", False),
        "IpcMode": config.get("ipc", "private"),
        "ShmSize": config.get("shm_size", 67108864),
        "Privileged": config.get("privileged", False),
        "Runtime": config.get("runtime", "runc"),
        "DeviceRequests": device_requests,
        "Ulimits": config.get("ulimits") or None,
    }


def inspect_container(container: state.Container) -> dict:
    config = container.config
    status = container.status()
    argv = images.container_argv(config)
    running = status in ("running", "restarting")
    return {
        "Id": container.id,
        "Created": rfc3339nano(config["created"]),
        "Path": argv[0],
        "Args": argv[1:],
        "State": {
            "Status": status, "Running": running, "Paused": False, "Restarting": status == "restarting",
            "OOMKilled": False, "Dead": False, "Pid": (container.pid() or 0) if running else 0,
            "ExitCode": 0 if running else container.effective_exit_code(),
            "Error": container.read("error") or "",
            "StartedAt": rfc3339nano(container.number("started_at")),
            "FinishedAt": rfc3339nano(None if running else container.number("finished_at")),
        },
        "Image": "sha256:" + config.get("image_id", ""),
        "LogPath": str(container.path / "log"),
        "Name": "/" + container.name,
        "RestartCount": int(container.number("restart_count") or 0),
        "Driver": "overlay2",
        "Platform": "linux",
        "HostConfig": _host_config(config),
        "Mounts": config.get("mounts", []),
        "Config": {
            "Hostname": config.get("hostname") or container.id[:12],
            "User": config.get("user", ""),
            "Env": config.get("env", []) + IMAGE_ENV,
            "Cmd": config.get("cmd") or (None if config.get("entrypoint") else argv),
            "Image": config["image"],
            "WorkingDir": config.get("workdir", ""),
            "Entrypoint": config.get("entrypoint"),
            "Labels": config.get("labels", {}),
        },
        "NetworkSettings": {"Networks": {config.get("network", "bridge"): {}}, "Ports": {}},
    }


# ---- images ---------------------------------------------------------------------------


def image_row(image: dict, trunc: bool = True) -> dict:
    return {
        "Containers": "N/A",
        "CreatedAt": go_time_string(image["created"]),
        "CreatedSince": ago(image["created"]),
        "Digest": "<none>",
        "ID": image["id"][:12] if trunc else "sha256:" + image["id"],
        "Repository": image["repository"],
        "SharedSize": "N/A",
        "Size": human_size(image["size"]),
        "Tag": image["tag"],
        "UniqueSize": "N/A",
        "VirtualSize": human_size(image["size"]),
    }


def inspect_image(image: dict) -> dict:
    ref = f"{image['repository']}:{image['tag']}"
    return {
        "Id": "sha256:" + image["id"],
        "RepoTags": [ref],
        "RepoDigests": [f"{image['repository']}@sha256:{images.digest_of('digest:' + ref)}"],
        "Created": rfc3339nano(image["created"]),
        "Size": image["size"],
        "Architecture": "arm64",
        "Os": "linux",
        "Config": {"Env": IMAGE_ENV, "Cmd": images.rule_for(ref).default_cmd, "Entrypoint": None, "Labels": {}},
    }
