"""The compiled (mypyc) redaction detector: `make venv` builds it, the app runs it, it finds exactly
what its .py sources find, and a build that no longer matches the sources is never loaded."""

from __future__ import annotations

import inspect
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import app.redaction
from app.redaction import native, structured
from app.redaction.detect import Detector

IMAGE = Path(__file__).resolve().parents[1]
PACKAGE = IMAGE / "app" / "redaction"
COMPILE = IMAGE / "scripts" / "compile_native.py"
REBUILD = "run `make venv` (or: cd image && .venv/bin/python scripts/compile_native.py)"

# Detector settings whose code paths differ: all entities, an allowlist (no skipping of contained
# candidates), subsets (outranking spans absent).
CONFIGS = [
    {"ner": False},
    {"ner": False, "allowlist": ["Main Street", "john@x.io", "10.0.0.1", "4111 1111 1111 1111"]},
    {"ner": False, "entities": ["CREDIT_CARD", "IBAN", "PHONE"]},
    {"ner": False, "entities": ["IP_ADDRESS", "MAC_ADDRESS", "ADDRESS"]},
    {},  # with person names: names.py (not compiled) answers the compiled detect
]
_PIECES = [
    "john@x.io", "+1 (415) 555-0132", "4111 1111 1111 1111", "123-45-6789", "SSN 123456789", "10.0.0.1",
    "fe80::1ff:fe23:4567:890a", "00:1A:2B:3C:4D:5E", "born 1/2/1990", "DE89 3704 0044 0532 0130 00",
    "12 Main Street", "1600 Amphitheatre Parkway, Mountain View, CA 94043", "Hauptstraße 5, 10115 Berlin",
    "SW1A 1AA", "PO Box 123", "Apt 4, 12 Oak Ave", "x://u:p@h", "AKIAIOSFODNN7EXAMPLE", "password: Secr3t!!",
    "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx123", "v1.2.3.4", "ext. 12", " ", "\n", ", ", "-", ".", ":", "a", "Z9",
    "\u2019", "\u0142", "\u0663", "\u2003", "\u0130", "é",
]


def _texts() -> list[str]:
    """The labelled corpus's conversations, PII-free prompts and random splices of hard pieces."""
    sys.path.insert(0, str(IMAGE / "redaction_suites"))
    try:
        from corpus import generate
    finally:
        sys.path.remove(str(IMAGE / "redaction_suites"))
    texts = [t for case in generate(300, 100, seed=29) for t in case.texts]
    rng = random.Random(29)
    texts += ["".join(rng.choice(_PIECES) if rng.random() < 0.7 else rng.choice("0123456789 -.:+()abXY")
                      for _ in range(rng.randint(1, 25))) for _ in range(1500)]
    return texts


def _spans(texts: list[str]) -> list[list[list[list[object]]]]:
    return [[[list(s) for s in Detector(**cfg).detect(t)] for t in texts] for cfg in CONFIGS]  # type: ignore[arg-type]


def test_the_app_runs_the_compiled_detector() -> None:
    assert app.redaction.COMPILED, f"no compiled redaction detector matching the sources in {PACKAGE / '_native'}: {REBUILD}"
    shared_lib = Path(sys.modules[f"{native.GROUP}__mypyc"].__file__ or "")
    assert shared_lib.parent == PACKAGE / native.NATIVE_DIR, shared_lib
    assert not inspect.isfunction(structured.find_structured), "structured.py was loaded from its source"


def test_compiled_and_source_detectors_find_the_same_spans(tmp_path: Path) -> None:
    assert app.redaction.COMPILED, REBUILD  # else both sides below would be the sources
    texts = _texts()
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    probe = (
        "import json, sys, inspect; sys.path.insert(0, 'tests'); import app.redaction.structured as s; "
        "from test_redaction_native import _spans; assert inspect.isfunction(s.find_structured); "
        f"print(json.dumps(_spans(json.load(open({str(tmp_path / 'texts.json')!r})))))"
    )
    env = {**os.environ, native.PURE_PYTHON_ENV: "1"}
    source = subprocess.run([sys.executable, "-c", probe], cwd=IMAGE, env=env, capture_output=True, text=True,
                            timeout=600)
    assert source.returncode == 0, source.stderr
    expected = json.loads(source.stdout)
    compiled = _spans(texts)
    for cfg, want, got in zip(CONFIGS, expected, compiled, strict=True):
        differ = [(t, w, g) for t, w, g in zip(texts, want, got, strict=True) if w != g]
        assert not differ, f"{len(differ)} texts differ with {cfg}, first: {differ[0]}"
    assert sum(map(len, compiled[0])) > 2000  # the corpus holds values: spans were compared, not empty lists


def _package_copy(tmp_path: Path) -> Path:
    """app/redaction and its build, alone under tmp_path/app (an empty app/__init__.py)."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__init__.py").write_text("")
    shutil.copytree(PACKAGE, tmp_path / "app" / "redaction", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "app" / "redaction"


def _loaded_from(root: Path, env: dict[str, str] | None = None) -> tuple[bool, str]:
    """(structured.py ran compiled?, what the import logged) for the package under root."""
    probe = ("import inspect, logging; logging.basicConfig(); import app.redaction.structured as s; "
             "print(not inspect.isfunction(s.find_structured))")
    env = {k: v for k, v in (env or os.environ).items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", probe], cwd=root, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip() == "True", proc.stderr


def test_a_build_of_other_sources_or_another_python_is_ignored(tmp_path: Path) -> None:
    copy = _package_copy(tmp_path)
    assert _loaded_from(tmp_path) == (True, "")  # the copy's build matches its sources

    # An edited source: its .py runs, and the log says why and how to rebuild.
    structured_py = copy / "structured.py"
    structured_py.write_text(structured_py.read_text() + "\n# edited\n")
    compiled, log = _loaded_from(tmp_path)
    assert not compiled
    assert "ignoring the compiled redaction detector" in log and "make venv" in log, log
    structured_py.write_text(structured_py.read_text().removesuffix("\n# edited\n"))
    assert _loaded_from(tmp_path) == (True, "")

    # An edited names.py: mypy read its annotations into the compiled detect.
    names_py = copy / "names.py"
    names_py.write_text(names_py.read_text() + "\n# edited\n")
    assert _loaded_from(tmp_path)[0] is False
    names_py.write_text(names_py.read_text().removesuffix("\n# edited\n"))
    assert _loaded_from(tmp_path) == (True, "")

    # A build that lost a module (a copy cut short): never half loaded.
    shared_lib = next((copy / native.NATIVE_DIR).glob("detection__mypyc*"))
    shared_lib.rename(tmp_path / shared_lib.name)
    compiled, log = _loaded_from(tmp_path)
    assert not compiled and "incomplete" in log, log
    (tmp_path / shared_lib.name).rename(shared_lib)
    assert _loaded_from(tmp_path) == (True, "")

    # A build for another interpreter (its manifest says so).
    manifest = copy / native.NATIVE_DIR / native.MANIFEST
    recorded = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**recorded, "cache_tag": "cpython-399"}))
    assert _loaded_from(tmp_path)[0] is False
    manifest.write_text("{not json")
    compiled, log = _loaded_from(tmp_path)
    assert not compiled and "ignoring the compiled redaction detector" in log, log

    # No build at all: the sources, silently. And SPARK_CONTROL_PURE_PYTHON=1 ignores a good build.
    manifest.write_text(json.dumps(recorded))
    assert _loaded_from(tmp_path, {**os.environ, native.PURE_PYTHON_ENV: "1"}) == (False, "")
    shutil.rmtree(copy / native.NATIVE_DIR)
    assert _loaded_from(tmp_path) == (False, "")


def test_compiling_a_current_build_is_a_quick_no_op() -> None:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(COMPILE)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "up to date" in proc.stdout and time.monotonic() - t0 < 10, proc.stdout
