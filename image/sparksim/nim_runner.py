"""How a simulated node runs an NVIDIA NIM image (`nvcr.io/nim/*`, images.RULES).

A NIM's entrypoint (`/opt/nim/start_server.sh`) needs NGC_API_KEY in its environment, reads its
port from NIM_SERVER_PORT (default 8000), serves an OpenAI-compatible API under the model's
`org/name`, and answers `/v1/health/ready` once the model is loaded (`/v1/health/live` too).
Here the sim vLLM server (sparksim/vllm_server.py, real tokens from llama.cpp) does the serving,
with the two NIM health paths mapped onto its /health. The served name comes from the image:
`nvcr.io/nim/meta/llama-3.1-8b-instruct-dgx-spark:latest` -> `meta/llama-3.1-8b-instruct`.
Other commands in the image (bash, sleep, ...) run as they are.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and not __package__:  # run as a file: make the package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from sparksim.nim_runner import main as _main

    sys.exit(_main(sys.argv[1:]))

from pathlib import Path

ENTRYPOINT = "/opt/nim/start_server.sh"
DEFAULT_PORT = "8000"
NIM_HEALTH_PATHS = ("/v1/health/ready", "/v1/health/live")
_SPARK_SUFFIX = "-dgx-spark"
# A NIM sizes its own KV cache; the simulated one takes a modest share so models fit beside it.
GPU_MEMORY_UTILIZATION = "0.3"


def served_name(image: str) -> str:
    """`nvcr.io/nim/meta/llama-3.1-8b-instruct-dgx-spark:1.0` -> `meta/llama-3.1-8b-instruct`."""
    path = image.split("@", 1)[0]
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path = path.rsplit(":", 1)[0]
    path = path.removeprefix("nvcr.io/nim/")
    return path.removesuffix(_SPARK_SUFFIX)


def resolve(argv: list[str], config: dict) -> list[str]:
    """images.RULES resolver: the NIM entrypoint runs this module under the sim venv's Python."""
    if argv[:1] != [ENTRYPOINT]:
        return argv
    from .vllm_server import venv_python

    host_env = config.get("host_env", {})
    python = venv_python(host_env.get("SPARKSIM_VENV") or os.environ.get("SPARKSIM_VENV"))
    package_parent = str(Path(__file__).resolve().parent.parent)
    return ["/usr/bin/env", f"SPARKSIM_VLLM_IMAGE={config.get('image', '')}", "SPARKSIM_VLLM_REEXEC=1",
            f"PYTHONPATH={package_parent}", str(python or sys.executable), str(Path(__file__).resolve()),
            *argv[1:]]


def main(argv: list[str]) -> int:
    image = os.environ.get("SPARKSIM_VLLM_IMAGE", "")
    if not os.environ.get("NGC_API_KEY"):
        # What a real NIM prints when started without the key, then it exits.
        print("ERROR: NGC_API_KEY is not set. Set NGC_API_KEY to an NGC API key with access to this NIM "
              "(docker run -e NGC_API_KEY ...).", file=sys.stderr, flush=True)
        return 1
    from . import vllm_api, vllm_server

    dispatch = vllm_api.OpenAIApi.dispatch

    def nim_dispatch(self, handler, method):
        if handler.path.split("?", 1)[0] in NIM_HEALTH_PATHS:
            handler.path = "/health"
        return dispatch(self, handler, method)

    vllm_api.OpenAIApi.dispatch = nim_dispatch
    name = served_name(image)
    port = os.environ.get("NIM_SERVER_PORT") or DEFAULT_PORT
    print(f"INFO NIM (sparksim) starting {name} on port {port}", flush=True)
    return vllm_server.main(["serve", name, "--port", port, "--served-model-name", name,
                             "--gpu-memory-utilization", GPU_MEMORY_UTILIZATION, "--max-model-len", "4096"])
