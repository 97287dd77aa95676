"""Black-box leak test of the running redaction gateway with pii-leak-benchmark (PyPI).

    cd image && .venv/bin/python redaction_suites/leak_benchmark.py [--iterations N] [--keep]

What it does, end to end, with nothing faked:

1. picks two free loopback ports: one for the benchmark's capture server (the fake model
   provider, started by the benchmark's own CLI for each run), one for spark-control;
2. starts spark-control as a user does (`uvicorn app.server:app` from image/, this venv), in a
   temporary DATA_DIR, NER on, with REDACTION_UPSTREAM_URL=http://127.0.0.1:<capture>/v1: the
   gateway's upstream *is* the capture, which records every byte the gateway sends it and answers
   with an SSE stream echoing what it received (so the restore duty checks that the client gets
   the original values back, event by event);
3. runs `pii-leak-benchmark selfcheck --target-base-url http://127.0.0.1:<app>/redact/v1` for each
   profile (pii-v1: e-mail, SSN, card; pii-secrets-v1: the same plus AWS, GitHub and Slack
   credential specimens) and duty (restore: nothing raw upstream AND values restored to the
   client; anonymize: nothing raw upstream);
4. runs the negative control (`--target-base-url capture://self`, no gateway): it must LEAK,
   otherwise the capture is not seeing traffic and a CLEAN above would mean nothing;
5. prints one table and exits 0 only when every gateway run is CLEAN and the control LEAKs.

The benchmark lives in its own venv (bench/.venv-pii, git-ignored; created with pip if missing,
or pass --benchmark PATH). Only its `selfcheck` subcommand is used: loopback only, nothing is
submitted anywhere. The CLI's full output of every run that is not as expected is printed
below the table: it names the values that reached the capture (the JSON reports leave them out).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

IMAGE = Path(__file__).resolve().parents[1]
ROOT = IMAGE.parent
PII_VENV = ROOT / "bench" / ".venv-pii"
PII_PACKAGE = "pii-leak-benchmark==0.6.0"
PROFILES = ("pii-v1", "pii-secrets-v1")
DUTIES = ("restore", "anonymize")
# selfcheck's documented exit codes; the printed verdict line is read too (1 covers two verdicts).
VERDICTS = ("CLEAN", "LEAK", "CHECK FAILED", "NOT MEASURED")


@dataclass
class Run:
    profile: str
    duty: str
    target: str
    exit_code: int
    verdict: str
    report: dict
    output: str

    @property
    def boundary(self) -> dict:
        return self.report.get("checks", {}).get("configured_upstream_boundary", {})

    def failed_checks(self) -> list[str]:
        return sorted(k for k, c in self.report.get("checks", {}).items() if isinstance(c, dict) and not c.get("passed"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def benchmark_cli(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    cli = PII_VENV / "bin" / "pii-leak-benchmark"
    if not cli.exists():
        print(f"installing {PII_PACKAGE} into {PII_VENV} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(PII_VENV)], check=True)
        subprocess.run([str(PII_VENV / "bin" / "pip"), "install", "-q", PII_PACKAGE], check=True)
    return cli


def start_gateway(port: int, capture_port: int, data_dir: Path, log: Path) -> subprocess.Popen:
    # The environment a user would have, minus anything that would point the app at real Sparks
    # or require a key from the benchmark client.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SPARK", "SSH_", "REDACTION_", "PROXY_API_KEYS"))}
    env.update({
        "DATA_DIR": str(data_dir),
        "REDACTION_UPSTREAM_URL": f"http://127.0.0.1:{capture_port}/v1",
        "CONNECTIVITY_INTERVAL_S": "60",
    })
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.server:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=IMAGE, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"spark-control exited ({proc.returncode}) before it was ready; its log:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    raise SystemExit(f"spark-control was not ready on port {port} within 90 s; its log:\n{log.read_text()}")


def selfcheck(cli: Path, target: str, profile: str, duty: str, capture_port: int, iterations: int, out: Path) -> Run:
    report_path = out / f"{profile}-{duty}-{'control' if target.startswith('capture:') else 'gateway'}.json"
    cmd = [str(cli), "selfcheck", "--target-base-url", target, "--profile", profile, "--duty", duty,
           "--capture-host", "127.0.0.1", "--capture-port", str(capture_port),
           "--iterations", str(iterations), "--json-out", str(report_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    output = r.stdout + r.stderr
    verdict = next((line.strip() for line in output.splitlines() if line.strip() in VERDICTS), f"exit {r.returncode}")
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return Run(profile, duty, target, r.returncode, verdict, report, output)


def evidence(output: str) -> str:
    """The part of the CLI's report that names the values that got through (the JSON report omits
    them on purpose), or the whole output when it has no such part (CHECK FAILED, NOT MEASURED)."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().startswith("What leaked")), None)
    if start is None:
        return output.rstrip()
    end = next((i for i in range(start, len(lines)) if lines[i].strip().startswith("The values above")), len(lines))
    head = [line for line in lines[:start] if line.strip().startswith("Raw fixture values")]
    return "\n".join(head + lines[start + 1 : end]).rstrip()


def table(runs: list[Run], expected: dict[int, str]) -> str:
    head = f"{'target':9s} {'profile':15s} {'duty':10s} {'verdict':13s} {'requests':>8s} {'correl.':>8s}  leaked / failed checks"
    lines = [head, "-" * len(head)]
    for i, run in enumerate(runs):
        b = run.boundary
        leaked = ",".join(b.get("leaked_entity_types", [])) or "-"
        failed = [c for c in run.failed_checks() if c != "configured_upstream_boundary"]
        mark = "" if run.verdict == expected[i] else f"   <- expected {expected[i]}"
        lines.append(f"{'control' if run.target.startswith('capture:') else 'gateway':9s} {run.profile:15s} {run.duty:10s} "
                     f"{run.verdict:13s} {b.get('captured_requests', '-'):>8} {b.get('correlated_requests', '-'):>8}  "
                     f"{leaked}{' / ' + ','.join(failed) if failed else ''}{mark}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmark", help="path of the pii-leak-benchmark CLI (default: bench/.venv-pii, installed if missing)")
    ap.add_argument("--iterations", type=int, default=3, help="requests per selfcheck run (the CLI's default: 3)")
    ap.add_argument("--profile", action="append", choices=PROFILES, help="repeatable; default: both")
    ap.add_argument("--duty", action="append", choices=DUTIES, help="repeatable; default: both")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (JSON reports, app log)")
    a = ap.parse_args()

    cli = benchmark_cli(a.benchmark)
    work = Path(tempfile.mkdtemp(prefix="leak-benchmark-"))
    capture_port, app_port = free_port(), free_port()
    gateway = start_gateway(app_port, capture_port, work / "data", work / "app.log")
    runs: list[Run] = []
    try:
        target = f"http://127.0.0.1:{app_port}/redact/v1"
        for profile in a.profile or PROFILES:
            for duty in a.duty or DUTIES:
                runs.append(selfcheck(cli, target, profile, duty, capture_port, a.iterations, work))
        # The floor: with no gateway in the way the same specimens must be seen by the capture.
        runs.append(selfcheck(cli, "capture://self", "pii-secrets-v1", "restore", capture_port, a.iterations, work))
    finally:
        gateway.terminate()
        try:
            gateway.wait(10)
        except subprocess.TimeoutExpired:
            gateway.kill()

    expected = {i: ("LEAK" if r.target.startswith("capture:") else "CLEAN") for i, r in enumerate(runs)}
    print(f"\npii-leak-benchmark selfcheck against spark-control /redact/v1 (NER on), {a.iterations} iterations per run")
    print(table(runs, expected))
    unexpected = [r for i, r in enumerate(runs) if r.verdict != expected[i]]
    for r in unexpected:
        if not r.target.startswith("capture:"):
            print(f"\n----- {r.profile} / {r.duty}: {r.verdict}, the benchmark says -----\n{evidence(r.output)}")
    ok = not unexpected
    print(f"\n{'PASS' if ok else 'FAIL'}: gateway runs {'all CLEAN' if ok else 'not all CLEAN'}, negative control "
          f"{runs[-1].verdict}" + ("" if ok else f" (reports and app log in {work})"))
    if ok and not a.keep:
        for p in sorted(work.rglob("*"), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
        work.rmdir()
    elif a.keep:
        print(f"kept: {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
