"""Who spoke when: speaker turns from resemblyzer's speaker embeddings.

  1. Speech: webrtcvad on 30 ms frames, gated by energy (40 dB under the loudest frames), gaps
     under 0.2 s filled and specks under 0.1 s dropped.
  2. Chunks: each stretch of speech cut into equal chunks of at most DIARIZE_WINDOW_S (a change
     of speaker without a pause is found at a chunk boundary).
  3. Embeddings: resemblyzer's voice encoder (a 3-layer LSTM over a 40-band mel spectrogram,
     256-d) on every chunk, all chunks in one packed batch. The embeddings are centred (the
     duration-weighted mean removed) and renormalised: every voice shares a large common
     component (raw cosine 0.7-0.8 between different speakers), and what is left separates them.
  4. Clusters: average-linkage agglomerative clustering on cosine distance of the chunks of at
     least 0.5 s, into `num_speakers` when the caller says how many; otherwise into the most
     clusters (up to DIARIZE_MAX_SPEAKERS) whose voices, the raw (uncentred) mean embeddings, are
     all at least DIARIZE_THRESHOLD apart in cosine distance (espeak-ng's two test voices: 0.114;
     one voice split in two: 0.06-0.09) and each hold at least 2 s and 5% of the speech. Then
     two rounds of reassigning every chunk (short ones too) to the nearest centroid.
  5. Turns: consecutive chunks of one speaker with less than 0.5 s between them become one turn.
     Speakers are named speaker_0, speaker_1... in order of first appearance.

One speaker per instant: overlapping speech goes to the voice that dominates its chunk.
`diarize()` is synchronous (a worker thread) and serialised by a lock.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("spark_audio.diarize")

SAMPLE_RATE = 16000
FRAME_S = 0.01           # resemblyzer's mel hop: one speech flag per 10 ms
_VAD_FRAME = 480         # 30 ms at 16 kHz, one of webrtcvad's three frame sizes
_FILL_GAP_FRAMES = 20    # silences shorter than 0.2 s inside speech count as speech
_MIN_SPEECH_FRAMES = 10  # speech specks shorter than 0.1 s are dropped
_RELIABLE_FRAMES = 50    # chunks shorter than 0.5 s are placed after clustering, not clustered
_JOIN_GAP_FRAMES = 50    # one speaker's chunks less than 0.5 s apart form one turn
_MIN_SPEAKER_FRAMES = 200  # speakers unknown: a cluster with less than 2 s of speech is not a voice


class Diarizer:
    def __init__(self, weights_path: Path | None = None, device: str = "auto", window_s: float = 1.5,
                 threshold: float = 0.1, max_speakers: int = 8, torch_threads: int = 0) -> None:
        import torch
        from resemblyzer import VoiceEncoder

        if torch_threads:
            torch.set_num_threads(torch_threads)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        started = time.monotonic()
        self.encoder = VoiceEncoder(device=device, verbose=False, weights_fpath=weights_path)
        self.encoder.eval()
        self.device = device
        self.chunk_frames = max(10, round(window_s / FRAME_S))
        self.threshold, self.max_speakers = threshold, max_speakers
        self._lock = threading.Lock()
        self.diarize(np.zeros(SAMPLE_RATE, dtype=np.float32))  # first kernels here, not in a request
        self.load_seconds = time.monotonic() - started
        log.info("loaded resemblyzer's voice encoder on %s in %.2f s", device, self.load_seconds)

    def diarize(self, wav: np.ndarray, num_speakers: int | None = None) -> dict[str, Any]:
        """{duration, segments: [{start, end, speaker}]} for 16 kHz mono float32 samples."""
        with self._lock:
            duration = round(len(wav) / SAMPLE_RATE, 3)
            from resemblyzer.audio import wav_to_mel_spectrogram

            mel = wav_to_mel_spectrogram(wav) if len(wav) else np.zeros((0, 40), dtype=np.float32)
            speech = speech_frames(wav)[:len(mel)]
            chunks = _chunks(speech, self.chunk_frames)
            if not chunks:
                return {"duration": duration, "segments": []}
            embeddings = self._embed(mel, chunks)
            labels = self._cluster(embeddings, np.array([b - a for a, b in chunks]), num_speakers)
            return {"duration": duration, "segments": _turns(chunks, labels)}

    def _embed(self, mel: np.ndarray, chunks: list[tuple[int, int]]) -> np.ndarray:
        """resemblyzer's forward pass (LSTM -> linear -> ReLU -> unit length) on all chunks at
        once: padded to the longest, packed so each chunk's state is taken at its own end."""
        import torch
        from torch.nn.utils.rnn import pack_padded_sequence, pad_sequence

        encoder = self.encoder
        out = []
        with torch.no_grad():
            for i in range(0, len(chunks), 128):
                part = chunks[i:i + 128]
                batch = pad_sequence([torch.from_numpy(mel[a:b]) for a, b in part], batch_first=True)
                packed = pack_padded_sequence(batch.to(self.device), [b - a for a, b in part], batch_first=True,
                                              enforce_sorted=False)
                _, (hidden, _) = encoder.lstm(packed)
                raw = encoder.relu(encoder.linear(hidden[-1]))
                out.append((raw / torch.norm(raw, dim=1, keepdim=True).clamp_min(1e-9)).cpu().numpy())
        return np.concatenate(out)

    def _cluster(self, embeddings: np.ndarray, frames: np.ndarray, num_speakers: int | None) -> np.ndarray:
        from sklearn.cluster import AgglomerativeClustering

        n = len(embeddings)
        if n == 1 or num_speakers == 1:
            return np.zeros(n, dtype=int)
        centred = embeddings - np.average(embeddings, axis=0, weights=frames)
        centred /= np.linalg.norm(centred, axis=1, keepdims=True).clip(1e-9)
        reliable = np.flatnonzero(frames >= _RELIABLE_FRAMES)
        if len(reliable) < 2:
            reliable = np.arange(n)

        def split(k: int) -> np.ndarray:
            return AgglomerativeClustering(n_clusters=k, metric="cosine", linkage="average").fit_predict(
                centred[reliable])

        if num_speakers:
            labels = split(min(num_speakers, len(reliable)))
        else:  # the most clusters whose voices (raw mean embeddings) are all `threshold` apart
            labels = np.zeros(len(reliable), dtype=int)
            for k in range(2, min(self.max_speakers, len(reliable)) + 1):
                candidate = split(k)
                raw = _centroids(embeddings[reliable], candidate)
                closest = np.max(raw @ raw.T - 2 * np.eye(len(raw)))
                speech = np.bincount(candidate, weights=frames[reliable])
                if 1 - closest < self.threshold or speech.min() < max(_MIN_SPEAKER_FRAMES, 0.05 * speech.sum()):
                    break
                labels = candidate
            if labels.max() == 0:
                return np.zeros(n, dtype=int)
        centroids = _centroids(centred[reliable], labels)
        result = np.argmax(centred @ centroids.T, axis=1)
        for _ in range(2):
            result = np.argmax(centred @ _centroids(centred, result).T, axis=1)
        return result


def _centroids(vectors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Unit-length mean per label, labels renumbered 0..k-1 in order (empty ones dropped)."""
    means = np.stack([vectors[labels == c].mean(axis=0) for c in np.unique(labels)])
    return means / np.linalg.norm(means, axis=1, keepdims=True).clip(1e-9)


def _chunks(speech: np.ndarray, longest: int) -> list[tuple[int, int]]:
    """Each run of speech frames cut into equal chunks (frame ranges) of at most `longest`."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], speech.astype(np.int8), [0]))))
    chunks: list[tuple[int, int]] = []
    for a, b in zip(edges[::2], edges[1::2]):
        cuts = np.linspace(a, b, int(np.ceil((b - a) / longest)) + 1).round().astype(int)
        chunks += [(int(x), int(y)) for x, y in zip(cuts[:-1], cuts[1:]) if y > x]
    return chunks


def _turns(chunks: list[tuple[int, int]], labels: np.ndarray) -> list[dict[str, Any]]:
    names: dict[int, str] = {}
    turns: list[dict[str, Any]] = []
    last_label, last_end = None, None
    for (a, b), label in zip(chunks, labels.tolist()):
        speaker = names.setdefault(label, f"speaker_{len(names)}")
        if label == last_label and a - last_end < _JOIN_GAP_FRAMES:
            turns[-1]["end"] = round(b * FRAME_S, 3)
        else:
            turns.append({"start": round(a * FRAME_S, 3), "end": round(b * FRAME_S, 3), "speaker": speaker})
        last_label, last_end = label, b
    return turns


def speech_frames(wav: np.ndarray) -> np.ndarray:
    """One bool per 10 ms frame: speech (webrtcvad, when installed, and an energy gate)."""
    n_frames = len(wav) // 160
    frames = wav[:n_frames * 160].reshape(n_frames, 160)
    energy_db = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    loud = np.percentile(energy_db, 95) if n_frames else 0.0
    speech = energy_db > max(loud - 40.0, -60.0)
    try:
        import webrtcvad
    except ImportError:
        webrtcvad = None
    if webrtcvad is not None and n_frames >= 3:
        vad = webrtcvad.Vad(2)
        pcm = (np.clip(wav, -1, 1) * 32767).astype("<i2")
        voiced = np.zeros(n_frames, dtype=bool)
        for i in range(0, n_frames - 2, 3):
            chunk = pcm[i * 160:i * 160 + _VAD_FRAME].tobytes()
            voiced[i:i + 3] = vad.is_speech(chunk, SAMPLE_RATE)
        speech &= voiced
    speech = _fill_runs(speech, False, _FILL_GAP_FRAMES)
    return _fill_runs(speech, True, _MIN_SPEECH_FRAMES)


def _fill_runs(mask: np.ndarray, value: bool, shorter_than: int) -> np.ndarray:
    """Runs of `value` shorter than `shorter_than` frames (not touching the ends) flipped."""
    out = mask.copy()
    edges = np.flatnonzero(np.diff(np.concatenate(([False], mask == value, [False])).astype(int)))
    for start, end in zip(edges[::2], edges[1::2]):
        inner = start > 0 and end < len(mask)
        if end - start < shorter_than and (inner or value):
            out[start:end] = not value
    return out
