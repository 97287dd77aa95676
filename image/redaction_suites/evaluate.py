"""Run the Detector on the labelled corpus and print what leaks.

    cd image && .venv/bin/python redaction_suites/evaluate.py [--cases 10000] [--no-ner] [--show 5]

A labelled value counts as caught only if every one of its characters is inside some detected
span (of any entity: what matters is that it never reaches the model). Columns:
  recall        labelled values fully covered / labelled values
  precision     detected spans that overlap a labelled value / detected spans (PII-free prompts
                included, so false alarms there count)
  char leak     labelled characters not covered / labelled characters
Targets (issue #6): 0 checksum-valid cards/IBANs leaked, person recall >= 98%, addresses fully
covered >= 90%, PII-free prompts altered <= 1%.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the image/ folder: `app` imports

from app.redaction.detect import Detector, Span  # noqa: E402
from corpus import generate  # noqa: E402

CHECKSUMMED = ("CREDIT_CARD", "IBAN")


def _covered(spans: list[Span], s: int, e: int) -> int:
    """How many characters of [s, e) the spans cover (spans are sorted and disjoint)."""
    n = 0
    for sp in spans:
        if sp.end <= s or sp.start >= e:
            continue
        n += min(e, sp.end) - max(s, sp.start)
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--pii-free", type=int, default=1_000)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--no-ner", action="store_true", help="structured entities only")
    ap.add_argument("--show", type=int, default=3, help="print this many misses per entity")
    a = ap.parse_args()

    cases = generate(a.cases, a.pii_free, a.seed)
    det = Detector(ner=not a.no_ner)
    labelled = defaultdict(int)
    caught = defaultdict(int)
    chars = defaultdict(int)
    leaked_chars = defaultdict(int)
    found = defaultdict(int)
    found_true = defaultdict(int)
    misses: dict[str, list[str]] = defaultdict(list)
    false_alarms: list[str] = []
    free_total = free_altered = 0
    t0 = time.perf_counter()
    for case in cases:
        per_text = det.detect_many(case.texts)
        for text, labels, spans in zip(case.texts, case.labels, per_text, strict=True):
            if case.pii_free:
                free_total += 1
                if spans:
                    free_altered += 1
                    if len(false_alarms) < a.show * 3:
                        false_alarms.append(f"{[(s.entity, s.text) for s in spans]} in {text!r}")
            for s, e, ent in labels:
                if a.no_ner and ent == "PERSON":
                    continue
                labelled[ent] += 1
                cov = _covered(spans, s, e)
                chars[ent] += e - s
                leaked_chars[ent] += (e - s) - cov
                if cov == e - s:
                    caught[ent] += 1
                elif len(misses[ent]) < a.show:
                    misses[ent].append(f"{text[s:e]!r} -> {[(x.entity, x.text) for x in spans if x.end > s and x.start < e]}")
            for sp in spans:
                found[sp.entity] += 1
                if any(sp.start < e and sp.end > s for s, e, _ in labels):
                    found_true[sp.entity] += 1
    elapsed = time.perf_counter() - t0

    print(f"\n{len(cases) - a.pii_free} PII cases + {a.pii_free} PII-free prompts, NER {'off' if a.no_ner else 'on'}, {elapsed:.1f} s\n")
    print(f"{'entity':16s} {'labelled':>8s} {'recall':>8s} {'precision':>9s} {'char leak':>9s}")
    for ent in sorted(set(labelled) | set(found)):
        rec = caught[ent] / labelled[ent] if labelled[ent] else float("nan")
        prec = found_true[ent] / found[ent] if found[ent] else float("nan")
        leak = leaked_chars[ent] / chars[ent] if chars[ent] else 0.0
        print(f"{ent:16s} {labelled[ent]:8d} {rec:8.2%} {prec:9.2%} {leak:9.3%}")
    total_chars = sum(chars.values())
    print(f"{'ALL':16s} {sum(labelled.values()):8d} {sum(caught.values()) / max(1, sum(labelled.values())):8.2%} "
          f"{sum(found_true.values()) / max(1, sum(found.values())):9.2%} {sum(leaked_chars.values()) / max(1, total_chars):9.3%}")

    checksum_leaks = sum(labelled[e] - caught[e] for e in CHECKSUMMED)
    person = caught["PERSON"] / labelled["PERSON"] if labelled["PERSON"] else float("nan")
    addr = caught["ADDRESS"] / labelled["ADDRESS"] if labelled["ADDRESS"] else float("nan")
    altered = free_altered / free_total if free_total else 0.0
    print("\ntarget                                   measured     goal    met")
    rows = [
        ("checksum-valid cards/IBANs leaked", f"{checksum_leaks}", "0", checksum_leaks == 0),
        ("person recall", "n/a" if a.no_ner else f"{person:.2%}", ">= 98%", a.no_ner or person >= 0.98),
        ("addresses fully covered", f"{addr:.2%}", ">= 90%", addr >= 0.90),
        ("PII-free prompts altered", f"{altered:.2%}", "<= 1%", altered <= 0.01),
    ]
    for name, got, goal, ok in rows:
        print(f"{name:40s} {got:>9s} {goal:>8s}    {'-' if got == 'n/a' else 'yes' if ok else 'NO'}")
    if a.show:
        print("\nmisses (value -> overlapping detections):")
        for ent, lst in sorted(misses.items()):
            for m in lst:
                print(f"  {ent:14s} {m}")
        for fa in false_alarms:
            print(f"  PII-free altered: {fa}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
