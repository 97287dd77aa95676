"""`make demo`: two simulated Sparks and spark-control on http://127.0.0.1:9999. Ctrl-C stops all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from sparksim.cluster import SimCluster

IMAGE_DIR = Path(__file__).resolve().parent.parent


def _exit_once(*_) -> None:
    # A second signal must not interrupt the clean-up the first one started.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(0)


def main() -> int:
    if os.geteuid() != 0:
        print("make demo needs root: the simulated Sparks are real sshd servers with their own users.",
              file=sys.stderr)
        return 2
    port = os.environ.get("BIND_PORT", "9999")
    data_dir = Path(tempfile.mkdtemp(prefix="spark-control-demo-"))
    cluster = SimCluster(2)
    app = None
    signal.signal(signal.SIGTERM, _exit_once)  # `kill` cleans up like Ctrl-C does
    try:
        cluster.start()
        for n in cluster.nodes:
            print(f"  {n.name}: simulated DGX Spark at {n.user}@{n.address}:{n.port} (real sshd)")
        # A placeholder NGC key, so "Launch" on a NIM works against the simulated nodes (they
        # accept any key); a real one in the environment is used as it is.
        env = {"NGC_API_KEY": "nvapi-demo-placeholder", **os.environ, **cluster.app_env(),
               "DATA_DIR": str(data_dir), "BIND_PORT": port}
        app = subprocess.Popen([sys.executable, "-m", "uvicorn", "app.server:app", "--host", "127.0.0.1",
                                "--port", port, "--timeout-graceful-shutdown", "3"], cwd=IMAGE_DIR, env=env)
        for _ in range(100):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        print(f"\n  spark-control is up: http://127.0.0.1:{port}   (Ctrl-C stops the app and both Sparks)\n",
              flush=True)
        return app.wait()
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return 0
    finally:
        if app is not None and app.poll() is None:
            app.terminate()
            app.wait(timeout=10)
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
