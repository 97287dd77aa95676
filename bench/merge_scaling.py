"""How does the word/speaker merge scale? Ours (sort + sweep) beside a WhisperX-style overlap scan.

    python bench/merge_scaling.py            (from the repository root; stdlib only)

For 10^3 .. 10^6 words (one diarizer turn per 10 words, three speakers, about one turn in ten
overlapping the next, the way real conversations and diarizers look), it times:

  ours      app/audio_merge._merge_words_with_speakers: assign + regroup into speaker turns;
  scan      WhisperX's `assign_word_speakers` rule done the way it does it: for every word,
            the intersection with EVERY turn, summed per speaker, the largest wins (the nearest
            turn when none intersects) - O(n*m). Written here in plain Python (WhisperX uses
            pandas; the work per pair is the same), without the regrouping.

The scan is run only where its estimate (its cost per word-turn pair at the previous size)
stays under 60 s; otherwise the row says "skipped (>60 s est.)". "agree" is the share of words
both give the same speaker (they differ by design on zero-length words and on exact ties).
Times are CPU seconds of this process (time.process_time): both are single-threaded, so on an
idle machine that is the wall time, and other work on the machine does not inflate it.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "image"))

from app.audio_merge import _merge_words_with_speakers, assign_speakers  # noqa: E402

SIZES = (1_000, 10_000, 100_000, 1_000_000)
WORDS_PER_TURN = 10
SCAN_BUDGET_S = 60.0


def make_inputs(n_words: int, seed: int = 7) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    words, now = [], 0.0
    for i in range(n_words):
        length = rng.uniform(0.12, 0.6)
        words.append({"word": f" w{i}", "start": round(now, 3), "end": round(now + length, 3)})
        now += length + rng.choice((0.0, 0.02, 0.05, 0.3))
    n_turns = max(1, n_words // WORDS_PER_TURN)
    step = now / n_turns
    turns = []
    for k in range(n_turns):
        start = k * step
        end = start + step * (1.15 if rng.random() < 0.1 else rng.uniform(0.85, 1.0))  # some overlap the next
        turns.append({"start": round(start, 3), "end": round(end, 3), "speaker": f"SPEAKER_{rng.randrange(3):02d}"})
    return words, turns


def whisperx_scan(words: list[dict], turns: list[dict]) -> list[str]:
    """Every word against every turn (WhisperX's assign_word_speakers, fill_nearest=True)."""
    speakers = []
    for word in words:
        a, b = word["start"], word["end"]
        totals: dict[str, float] = {}
        best_gap, nearest = float("inf"), turns[0]["speaker"]
        for turn in turns:
            intersection = min(b, turn["end"]) - max(a, turn["start"])
            if intersection > 0:
                totals[turn["speaker"]] = totals.get(turn["speaker"], 0.0) + intersection
            elif -intersection < best_gap:
                best_gap, nearest = -intersection, turn["speaker"]
        speakers.append(max(totals, key=totals.__getitem__) if totals else nearest)
    return speakers


def main() -> None:
    print(f"Python {sys.version.split()[0]}; {WORDS_PER_TURN} words per turn, 3 speakers; times in CPU seconds\n")
    header = f"{'words':>9} {'turns':>7} | {'ours':>8} | {'WhisperX-style scan':>22} | {'speed-up':>9} | {'agree':>6}"
    print(header)
    print("-" * len(header))
    pair_cost = None  # seconds per word-turn pair, from the last scan that ran
    for n in SIZES:
        words, turns = make_inputs(n)
        started = time.process_time()
        merged = _merge_words_with_speakers(words, turns)
        ours = time.process_time() - started
        assert merged[-1].last == n
        pairs = n * len(turns)
        if pair_cost is not None and pair_cost * pairs > SCAN_BUDGET_S:
            scan_cell, speedup, agree = f"skipped (>{SCAN_BUDGET_S:.0f} s est.)", "-", "-"
        else:
            started = time.process_time()
            baseline = whisperx_scan(words, turns)
            scan = time.process_time() - started
            pair_cost = scan / pairs
            ours_speakers = assign_speakers(words, turns)
            same = sum(x == y for x, y in zip(ours_speakers, baseline)) / n
            scan_cell, speedup, agree = f"{scan:.3f}", f"{scan / ours:.0f}x", f"{same:.1%}"
        print(f"{n:>9,} {len(turns):>7,} | {ours:>8.3f} | {scan_cell:>22} | {speedup:>9} | {agree:>6}")


if __name__ == "__main__":
    main()
