"""Test conversations with exact ground truth: two espeak-ng voices, placed and mixed with sox.

Each turn is spoken to its own file (espeak-ng), resampled to 16 kHz mono and trimmed of its
leading and trailing silence (sox), so a turn's start and end are where its speech starts and
ends; the turns are then padded to their offsets and mixed into one WAV (sox -m). The offsets
are chosen here, so the ground truth (who speaks when, and which words) is exact: per-turn
(start, end, speaker, text) and an RTTM file. One turn starts before the previous one ends
(an overlap, as in a real meeting); the others follow a pause.

Also the metrics the audio tests print: WER, cpWER (concatenated minimum-permutation WER) and
WDER (of the words recognised correctly, the fraction given the wrong speaker).

    python tests/audio_gen.py OUT_DIR     # writes conversation.wav, .rttm, .json
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

SAMPLE_RATE = 16000
VOICES = {"speaker_0": "en-us+m3", "speaker_1": "en-gb+f4"}
# (speaker, text, gap before this turn in seconds; negative: starts before the previous turn ends).
# Plain words without digits or abbreviations, so the reference text is what Whisper writes.
SCRIPT: tuple[tuple[str, str, float], ...] = (
    ("speaker_0", "Good morning. Did you get a chance to read the report I sent yesterday?", 0.5),
    ("speaker_1", "Yes, I read it last night. The numbers for the northern region look much better.", 0.7),
    ("speaker_0", "They do. The new warehouse opened in March and the delivery times dropped.", 0.6),
    ("speaker_1", "That is great news. What about the costs?", 0.8),
    ("speaker_0", "The costs went up a little, mostly because of the extra drivers we hired.", 0.6),
    ("speaker_1", "Exactly, that was expected.", -0.6),
    ("speaker_0", "We should present this to the board next week.", 0.9),
    ("speaker_1", "I agree. I will prepare the slides and send them to you on Friday.", 0.7),
    ("speaker_0", "Thank you. Let us meet again on Monday morning.", 0.6),
)


@dataclass(frozen=True)
class Turn:
    start: float
    end: float
    speaker: str
    text: str


@dataclass(frozen=True)
class Conversation:
    wav: Path
    rttm: Path
    duration: float
    turns: list[Turn]

    @property
    def speakers(self) -> list[str]:
        return sorted({t.speaker for t in self.turns})

    def reference_words(self) -> list[tuple[str, str]]:
        """(normalised word, speaker) in the order spoken (turns by start time)."""
        return [(w, t.speaker) for t in sorted(self.turns, key=lambda t: t.start) for w in normalise(t.text)]

    def turn_dicts(self) -> list[dict]:
        return [{"start": t.start, "end": t.end, "speaker": t.speaker} for t in self.turns]


def tools_missing() -> str | None:
    for tool in ("espeak-ng", "sox", "soxi"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install espeak-ng sox; `make apt` does it)"
    return None


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _duration(path: Path) -> float:
    # Samples / rate, exactly (soxi -D rounds to microseconds, which is fine, but -s is exact).
    return int(_run("soxi", "-s", str(path)).strip()) / SAMPLE_RATE


def speak(text: str, voice: str, out: Path, words_per_minute: int = 160) -> float:
    """One turn: espeak-ng -> 16 kHz mono 16-bit, leading/trailing silence trimmed. Its duration."""
    raw = out.with_suffix(".raw.wav")
    _run("espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(raw), text)
    _run("sox", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(out),
         "silence", "1", "0.02", "0.5%", "reverse", "silence", "1", "0.02", "0.5%", "reverse")
    raw.unlink()
    return _duration(out)


def generate(out_dir: Path, script=SCRIPT, tail_s: float = 0.5) -> Conversation:
    """The conversation in `out_dir` (made if needed): conversation.wav, .rttm and .json."""
    problem = tools_missing()
    if problem:
        raise RuntimeError(problem)
    out_dir.mkdir(parents=True, exist_ok=True)
    turns: list[Turn] = []
    padded: list[Path] = []
    cursor = 0.0
    for i, (speaker, text, gap) in enumerate(script):
        clip = out_dir / f"turn{i:02d}.wav"
        length = speak(text, VOICES[speaker], clip)
        start = round(max(0.0, cursor + gap), 3)
        turns.append(Turn(start, round(start + length, 4), speaker, text))
        shifted = out_dir / f"turn{i:02d}.padded.wav"
        _run("sox", str(clip), str(shifted), "pad", f"{start}")
        padded.append(shifted)
        cursor = max(cursor, start + length)
    wav = out_dir / "conversation.wav"
    mix = ["sox", "-m"] + [arg for p in padded for arg in ("-v", "1", str(p))] if len(padded) > 1 else ["sox", str(padded[0])]
    _run(*mix, str(wav), "pad", "0", f"{tail_s}")
    for p in padded:
        p.unlink()
    duration = _duration(wav)
    rttm = out_dir / "conversation.rttm"
    rttm.write_text("".join(f"SPEAKER conversation 1 {t.start:.3f} {t.end - t.start:.3f} <NA> <NA> {t.speaker} <NA> <NA>\n"
                            for t in turns))
    (out_dir / "conversation.json").write_text(json.dumps(
        {"duration": duration, "turns": [asdict(t) for t in turns]}, indent=1))
    return Conversation(wav, rttm, duration, turns)


# ---------------------------------------------------------------- metrics

_PUNCT = re.compile(r"[^a-z0-9' ]+")


def normalise(text: str) -> list[str]:
    """Lower case, punctuation dropped (hyphens split words), apostrophes kept."""
    return _PUNCT.sub(" ", text.lower().replace("-", " ")).split()


def _alignment(ref: list[str], hyp: list[str]) -> tuple[int, list[tuple[int, int]]]:
    """Levenshtein distance between two word lists and the (ref index, hyp index) pairs of the
    words that match exactly on one minimum-edit path."""
    n, m = len(ref), len(hyp)
    d = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        d[i][0] = i
    for j in range(m + 1):
        d[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]))
    pairs: list[tuple[int, int]] = []
    i, j = n, m
    while i > 0 and j > 0:
        if ref[i - 1] == hyp[j - 1] and d[i][j] == d[i - 1][j - 1]:
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif d[i][j] == d[i - 1][j - 1] + 1:
            i, j = i - 1, j - 1
        elif d[i][j] == d[i - 1][j] + 1:
            i -= 1
        else:
            j -= 1
    return d[n][m], pairs[::-1]


def wer(reference: list[str], hypothesis: list[str]) -> float:
    """Word error rate: (substitutions + deletions + insertions) / reference words."""
    return _alignment(reference, hypothesis)[0] / max(1, len(reference))


def cpwer(reference: dict[str, list[str]], hypothesis: dict[str, list[str]]) -> float:
    """Concatenated minimum-permutation WER: each reference speaker's words against one
    hypothesis speaker's words, under the speaker mapping with the fewest errors (extra
    hypothesis speakers count as insertions, missing ones as deletions)."""
    refs, hyps = list(reference.values()), list(hypothesis.values())
    size = max(len(refs), len(hyps))
    refs += [[]] * (size - len(refs))
    hyps += [[]] * (size - len(hyps))
    best = min(sum(_alignment(refs[i], hyps[p[i]])[0] for i in range(size))
               for p in itertools.permutations(range(size)))
    return best / max(1, sum(len(r) for r in reference.values()))


def wder(reference: list[tuple[str, str]], hypothesis: list[tuple[str, str | None]]) -> tuple[float, int]:
    """Word diarization error rate: of the hypothesis words that match a reference word (on a
    minimum-edit alignment), the fraction whose speaker is wrong, with hypothesis speaker labels
    mapped to reference ones the way that makes the fewest such errors. Returns (rate, words
    matched)."""
    _, pairs = _alignment([w for w, _ in reference], [w for w, _ in hypothesis])
    if not pairs:
        return 1.0, 0
    ref_speakers = sorted({s for _, s in reference})
    hyp_speakers = sorted({str(hypothesis[j][1]) for _, j in pairs})
    best = len(pairs)
    for chosen in itertools.permutations(ref_speakers + [None] * len(hyp_speakers), len(hyp_speakers)):
        mapping = dict(zip(hyp_speakers, chosen))
        wrong = sum(mapping[str(hypothesis[j][1])] != reference[i][1] for i, j in pairs)
        best = min(best, wrong)
    return best / len(pairs), len(pairs)


def frame_agreement(reference: list[dict], hypothesis: list[dict], step: float = 0.01) -> float:
    """DER-like agreement: of the 10 ms frames where exactly one reference speaker talks, the
    fraction where the hypothesis names that speaker (under the best speaker mapping)."""
    end = max([t["end"] for t in reference] + [0.0])
    frames = [i * step + step / 2 for i in range(int(end / step))]

    def who(turns: list[dict], t: float) -> set[str]:
        return {x["speaker"] for x in turns if x["start"] <= t < x["end"]}

    pairs = [(next(iter(r)), who(hypothesis, t)) for t in frames if len(r := who(reference, t)) == 1]
    if not pairs:
        return 0.0
    ref_speakers = sorted({r for r, _ in pairs})
    hyp_speakers = sorted({s for t in hypothesis for s in [t["speaker"]]})
    best = 0
    for chosen in itertools.permutations(hyp_speakers + [None] * len(ref_speakers), len(ref_speakers)):
        mapping = dict(zip(ref_speakers, chosen))
        best = max(best, sum(mapping[r] in h for r, h in pairs))
    return best / len(pairs)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/audio_gen.py OUT_DIR")
    made = generate(Path(sys.argv[1]))
    print(f"{made.wav} ({made.duration:.2f} s, {len(made.turns)} turns)\n{made.rttm.read_text()}", end="")
