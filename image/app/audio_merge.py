"""Who said which word: a transcript's words merged with a diarizer's speaker turns. Pure functions.

A transcription service gives words with times (or, Whisper served by vLLM, only segments); a
diarization service gives speaker turns `{start, end, speaker}`. The rules, all deterministic:

  1. A word gets the speaker whose turns overlap it the most (overlaps of one speaker's turns
     summed, as WhisperX does). Overlapping speech (two turns cover the word): the larger
     summed overlap wins; a tie goes to the speaker whose overlapping turn started first, then
     to the smaller speaker label.
  2. A word that overlaps no turn (it falls in a pause) gets the nearest turn, by the gap
     between them; a tie goes to the turn before the word.
  3. A zero-length word (start == end) or one without times (start or end None, or end < start)
     takes its neighbours' speaker: the previous word's, else the next word's. Only when no
     word at all could be placed do such words fall back to the turn nearest their time (zero
     length) or to the first turn (no time).
  4. Segment-only transcripts: each segment's text is cut into words at whitespace, and the
     segment's time shared out over them in proportion to their characters; those estimated
     words then go through the rules above, so a segment that spans a change of speaker is
     split at the word boundary nearest the change.
  5. Output: speaker turns, i.e. runs of consecutive words (in the transcript's order) with one
     speaker, with their text and times.

Cost: O((n + m) log(n + m)) for n words and m turns: one sort of each, then a single sweep in
time with the list of the turns active at the current word (no n*m scan). The sweep looks at the
turns active during a word, which is the number of people speaking at once (a constant: real
diarizers report at most a few); bench/merge_scaling.py measures it against a WhisperX-style
scan.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from itertools import compress
from operator import le, lt, ne
from typing import Any, NamedTuple

_TOKEN = re.compile(r"\S+")


class SpeakerTurn(NamedTuple):
    """Consecutive words of one speaker: words[first:last] of the transcript. (A NamedTuple:
    a merge of 10^6 words makes 10^5 of them, and a frozen dataclass costs 5x more to build.)"""

    speaker: str | None
    start: float
    end: float
    text: str
    first: int
    last: int


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


class _Turns:
    """The diarizer's turns sorted by (start, end, speaker), with what the sweep and the
    nearest-turn look-ups need precomputed."""

    __slots__ = ("starts", "ends", "speakers", "best_end_upto")

    def __init__(self, turns: Sequence[Mapping[str, Any]]) -> None:
        starts = [turn.get("start") for turn in turns]
        ends = [turn.get("end") for turn in turns]
        if (set(map(type, starts)) | set(map(type, ends))) - {float}:
            starts, ends = [_number(v) for v in starts], [_number(v) for v in ends]
        speakers = [str(turn.get("speaker")) for turn in turns]
        order = [k for k in range(len(turns)) if starts[k] is not None and ends[k] is not None and ends[k] > starts[k]]
        # Sorted by (start, end, speaker) as three stable sorts of indices: no key tuple per turn.
        for key in (speakers, ends, starts):
            order.sort(key=key.__getitem__)
        self.starts = [starts[k] for k in order]
        self.ends = [ends[k] for k in order]
        self.speakers = [speakers[k] for k in order]
        # best_end_upto[k]: the turn with the latest end among turns 0..k (the first such on ties):
        # the candidate "turn before" a word that no turn overlaps.
        best, best_k, upto = float("-inf"), -1, []
        for k, end in enumerate(self.ends):
            if end > best:
                best, best_k = end, k
            upto.append(best_k)
        self.best_end_upto = upto

    def __len__(self) -> int:
        return len(self.starts)

    def nearest(self, a: float, b: float) -> str:
        """The speaker of the turn nearest [a, b], which no turn overlaps: the smaller gap, the
        turn before on a tie. Needs at least one turn."""
        starts, ends = self.starts, self.ends
        after = bisect_left(starts, b)  # the first turn starting at or after the word's end
        before = self.best_end_upto[after - 1] if after > 0 else -1  # the one ending last before it
        if after >= len(starts) or (before >= 0 and a - ends[before] <= starts[after] - b):
            return self.speakers[before]
        return self.speakers[after]

    def at_points(self, points: list[tuple[float, int]]) -> dict[int, str]:
        """{word index: speaker} for zero-length words (time, index): the turn containing the time
        (earliest start, then label, when several do), else the nearest. A sweep, like words'."""
        found: dict[int, str] = {}
        active: list[int] = []
        j, m = 0, len(self.starts)
        for time_, i in sorted(points):
            while j < m and self.starts[j] <= time_:
                active.append(j)
                j += 1
            active = [k for k in active if self.ends[k] > time_]
            if active:
                k = min(active, key=lambda k: (self.starts[k], self.speakers[k]))
                found[i] = self.speakers[k]
            else:
                found[i] = self.nearest(time_, time_)
        return found


def assign_speakers(words: Sequence[Mapping[str, Any]], turns: Sequence[Mapping[str, Any]]) -> list[str | None]:
    """One speaker per word, in the words' order (rules 1-3 of the module doc). With no valid
    turn every speaker is None."""
    starts, ends = _times(words)
    return _assign(starts, ends, _Turns(turns))


def _times(words: Sequence[Mapping[str, Any]]) -> tuple[list[float | None], list[float | None]]:
    starts = [w.get("start") for w in words]
    ends = [w.get("end") for w in words]
    # JSON numbers arrive as int or float; anything else (a string, a bool) counts as no time.
    # (Type checks through map/set run at C speed: this is on the 10^6-word path.)
    if not set(map(type, starts)) | set(map(type, ends)) <= {float, type(None)}:
        starts = [_number(v) for v in starts]
        ends = [_number(v) for v in ends]
    return starts, ends


def _assign(starts: list[float | None], ends: list[float | None], table: _Turns) -> list[str | None]:
    n = len(starts)
    result: list[str | None] = [None] * n
    if not len(table):
        return result
    if None in starts or None in ends:
        timed = [i for i in range(n) if starts[i] is not None and ends[i] is not None and ends[i] > starts[i]]
    else:
        timed = list(compress(range(n), map(lt, starts, ends)))
    timed_starts = list(map(starts.__getitem__, timed))
    if not all(map(le, timed_starts, timed_starts[1:])):
        timed.sort(key=starts.__getitem__)  # transcripts come sorted; sort only when not

    t_starts, t_ends, t_speakers, m = table.starts, table.ends, table.speakers, len(table)
    nearest = table.nearest
    # The turns that started before the latest word end seen and had not ended at the last word's
    # start, and the earliest end among them: the list is filtered only when that end is passed,
    # which removes at least one turn each time (a plain list, not a heap of tuples: nothing is
    # allocated per turn, which on 10^5 turns is what the garbage collector would be busy with).
    active: list[int] = []
    soonest_end = float("inf")
    j = 0
    for i in timed:
        a, b = starts[i], ends[i]
        while j < m and t_starts[j] < b:
            active.append(j)
            if t_ends[j] < soonest_end:
                soonest_end = t_ends[j]
            j += 1
        if soonest_end <= a:
            active = [k for k in active if t_ends[k] > a]
            soonest_end = min(map(t_ends.__getitem__, active), default=float("inf"))
        if len(active) == 1:
            k = active[0]
            result[i] = t_speakers[k] if t_starts[k] < b else nearest(a, b)
        elif active:
            result[i] = _most_overlap(active, a, b, t_starts, t_ends, t_speakers) or nearest(a, b)
        else:
            result[i] = nearest(a, b)
    _fill_from_neighbours(result, starts, ends, table)
    return result


def _most_overlap(active: list[int], a: float, b: float, t_starts: list[float], t_ends: list[float],
                  t_speakers: list[str]) -> str | None:
    """Rule 1 among the turns active during [a, b]: summed overlap, then earliest turn start, then label."""
    total: dict[str, float] = {}
    first: dict[str, float] = {}
    for k in active:
        start = t_starts[k]
        overlap = min(b, t_ends[k]) - max(a, start)
        if overlap > 0:
            speaker = t_speakers[k]
            total[speaker] = total.get(speaker, 0.0) + overlap
            first[speaker] = min(first.get(speaker, start), start)
    if not total:
        return None
    return min(total, key=lambda s: (-total[s], first[s], s))


def _fill_from_neighbours(result: list[str | None], starts: list[float | None], ends: list[float | None],
                          table: _Turns) -> None:
    """Rule 3: words the sweep left without a speaker take the previous word's, else the next's.
    When no word was placed by its times, zero-length words are placed by their time first (and
    their neighbours follow them); with no time at all, every word goes to the first turn."""
    if all(s is None for s in result):
        points = [(starts[i], i) for i in range(len(result))
                  if starts[i] is not None and ends[i] is not None and ends[i] >= starts[i]]
        for i, speaker in table.at_points(points).items():
            result[i] = speaker
    previous = next((s for s in result if s is not None), table.speakers[0])
    for i, speaker in enumerate(result):
        if speaker is None:
            result[i] = previous
        else:
            previous = speaker


def _joiner(texts: Sequence[str]) -> str:
    """How words become text: Whisper's words carry their own leading space (" Hello", and
    " don" + "'t"), so they are concatenated; OpenAI-style bare words ("Hello") get one space
    between them. Decided once per transcript, from its first words."""
    return "" if any(t[:1].isspace() for t in texts[:100]) else " "


def _group(words: Sequence[Mapping[str, Any]], starts: list[float | None], ends: list[float | None],
           speakers: Sequence[str | None]) -> list[SpeakerTurn]:
    """Rule 5: runs of consecutive words with one speaker. A run's times are its timed words'
    earliest start and latest end; a run without any timed word takes the previous run's end
    (0.0 at the start)."""
    texts = [w.get("word") for w in words]
    if set(map(type, texts)) - {str}:
        texts = ["" if t is None else str(t) for t in texts]
    glue = _joiner(texts)
    n = len(words)
    cuts = list(compress(range(1, n), map(ne, speakers[1:], speakers[:-1])))
    untimed = None in starts or None in ends
    turns: list[SpeakerTurn] = []
    last_end = 0.0
    for i, k in zip([0, *cuts], [*cuts, n]) if n else ():
        run_starts = [s for s in starts[i:k] if s is not None] if untimed else starts[i:k]
        run_ends = [e for e in ends[i:k] if e is not None] if untimed else ends[i:k]
        start = min(run_starts) if run_starts else last_end
        end = max(max(run_ends) if run_ends else start, start)
        pieces = texts[i:k] if glue == "" else [t for t in texts[i:k] if t]
        turns.append(SpeakerTurn(speakers[i], start, end, glue.join(pieces).strip(), i, k))
        last_end = end
    return turns


def _merge_words_with_speakers(words: Sequence[Mapping[str, Any]],
                               turns: Sequence[Mapping[str, Any]]) -> list[SpeakerTurn]:
    """The transcript's words (`{word, start, end}`) and the diarizer's turns (`{start, end,
    speaker}`) merged into speaker turns (see the module doc for the rules)."""
    starts, ends = _times(words)
    return _group(words, starts, ends, _assign(starts, ends, _Turns(turns)))


def words_from_segments(segments: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rule 4: estimated words for a transcript that has segments only (vLLM's Whisper): each
    segment's time shared over its words in proportion to their characters."""
    words: list[dict[str, Any]] = []
    for segment in segments:
        text = str(segment.get("text") or "")
        tokens = _TOKEN.findall(text)
        start, end = _number(segment.get("start")), _number(segment.get("end"))
        if not tokens:
            continue
        if start is None or end is None or end < start:
            words.extend({"word": token, "start": None, "end": None} for token in tokens)
            continue
        total = sum(len(token) for token in tokens)
        span = end - start
        done = 0
        for token in tokens:
            word_start = start + span * done / total
            done += len(token)
            words.append({"word": token, "start": word_start, "end": start + span * done / total})
    return words


def merge_segments_with_speakers(segments: Sequence[Mapping[str, Any]],
                                 turns: Sequence[Mapping[str, Any]]) -> list[SpeakerTurn]:
    """Speaker turns for a segment-only transcript (rule 4, then rules 1-3 and 5)."""
    return _merge_words_with_speakers(words_from_segments(segments), turns)
