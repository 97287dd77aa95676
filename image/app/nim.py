"""NVIDIA NIM containers: services of kind `nim` in services.yaml, started with NGC_API_KEY.

A NIM needs the key twice: `docker login nvcr.io` (user `$oauthtoken`) to pull the image, and
the container's own NGC_API_KEY to fetch its model. The key must never be on a command line
(`ps` on the node shows every argument, and commands are logged), so the command reads it from
its standard input into a shell variable and uses it only through shell builtins:

    IFS= read -r NGC_API_KEY && export NGC_API_KEY &&
    printf '%s\\n' "$NGC_API_KEY" | docker login nvcr.io --username '$oauthtoken' --password-stdin &&
    docker run -d ... -e NGC_API_KEY ... <image>

`read`, `export` and `printf` are builtins (no process, nothing in `ps`); `docker login` gets the
key on stdin; `docker run -e NGC_API_KEY` copies it by name from the environment. The key is sent
over the SSH channel as the command's stdin. It ends up inside the container (NIM needs it there)
and in docker's credential store on the node (what `docker login` always does).

An image pull (app/service_pull.py) runs for minutes as a detached job: the key must not live in
any of its processes' environments (/proc/<pid>/environ, `ps eww` show those to the node user).
So the login is done first, as its own short command with the key in an unexported variable
(`login_from_stdin_command`), and the pull job starts with no secret at all: it uses the
credentials docker stored.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from app import shellsafe
from app.errors import ServiceUnavailable

NGC_REGISTRY = "nvcr.io"
NGC_USERNAME = "$oauthtoken"  # NGC's fixed user name for API-key logins (a literal, not a variable)
KEY_ENV = "NGC_API_KEY"


def login_command(variable: str = KEY_ENV) -> str:
    """`docker login nvcr.io` with the node-side shell's $`variable` on its stdin (printf is a builtin)."""
    login = shellsafe.quote_args(["docker", "login", NGC_REGISTRY, "--username", NGC_USERNAME, "--password-stdin"])
    return f"printf '%s\\n' \"${shellsafe.validate_env_name(variable)}\" | {login} >/dev/null"


# Not NGC_API_KEY: a name the SSH session could have inherited exported; this one stays a plain
# shell variable, in no process's environment.
_LOGIN_VAR = "SC_NGC_KEY_IN"


def login_from_stdin_command() -> str:
    """Only `docker login nvcr.io`, the key read from stdin into an unexported variable. Its
    stderr (docker's reason, scrubbed by the caller) says why nvcr.io refused."""
    return f"unset {_LOGIN_VAR}; IFS= read -r {_LOGIN_VAR} && {login_command(_LOGIN_VAR)}"


def login_and_run_command(run_command: str) -> str:
    """Wrap a `docker run ... -e NGC_API_KEY ...` command: read the key from stdin, log in, run."""
    return f"IFS= read -r {KEY_ENV} && export {KEY_ENV} && {login_command()} && {run_command}"


REFUSED_HINT = ("nvcr.io refused NGC_API_KEY: create a new key at ngc.nvidia.com, set NGC_API_KEY and restart "
                "spark-control (docs/NIM.md).")


def refused(output: str) -> bool:
    """docker's words for a registry that refused the credentials."""
    return any(s in output for s in ("unauthorized", "authentication required"))


def key_input(settings) -> str:
    """The command's stdin: the key and a newline. 503 (the server's setup, not the request) when
    no usable key is configured."""
    key = getattr(settings, "ngc_api_key", None)
    if not key or not key.strip():
        raise ServiceUnavailable("NGC_API_KEY is not set: a NIM needs an NGC API key to pull its image and model. "
                                 "Set NGC_API_KEY in spark-control's environment (docs/NIM.md) and restart it.",
                                 field="NGC_API_KEY", code="ngc_api_key_missing")
    if any(c in key for c in "\r\n\0"):
        raise ServiceUnavailable("NGC_API_KEY contains a line break or NUL; copy the key again and restart",
                                 field="NGC_API_KEY", code="ngc_api_key_invalid")
    return key.strip() + "\n"


def scrub(text: str, settings) -> str:
    """Remove the key from text that may be shown (a node's error output), whatever echoed it."""
    key = (getattr(settings, "ngc_api_key", None) or "").strip()
    return text.replace(key, "[NGC_API_KEY]") if key else text


class NimLaunchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    node: str | None = Field(None, description="the node to run on; default: the entry's `node`")


def build_router() -> APIRouter:
    """/api/nim: the NIM entries of the services catalog; the work is done by app.state.services."""
    router = APIRouter(tags=["nim"])

    @router.get("/api/nim", summary="NIM entries of the services catalog: state, node, readiness (/v1/health/ready)")
    async def list_nims(request: Request) -> dict[str, Any]:
        services = await request.app.state.services.statuses(kind="nim")
        return {"nims": services, "ngc_api_key_set": bool(getattr(request.app.state.settings, "ngc_api_key", None))}

    @router.post("/api/nim/{name}/launch", status_code=202,
                 summary="docker login nvcr.io with NGC_API_KEY, then start the NIM (answers `pulling` at once "
                         "while its image is pulled first)")
    async def launch(request: Request, name: str, body: NimLaunchRequest | None = None) -> dict[str, Any]:
        return await request.app.state.services.start(name, (body or NimLaunchRequest()).node, kind="nim")

    @router.post("/api/nim/{name}/stop", summary="Stop a NIM and remove its container, or cancel its image pull")
    async def stop(request: Request, name: str) -> dict[str, Any]:
        return await request.app.state.services.stop(name, kind="nim")

    return router
