"""spark_embed: the embeddings container of spark-control (docs/EMBEDDINGS.md).

An OpenAI-compatible `/v1/embeddings` server around a sentence-transformers model that is
mounted into the container (EMBED_MODEL_PATH), never downloaded at run time. Concurrent
requests are grouped into one encode call (batching.py). Importing this package loads
nothing heavy: torch and the model come in with `encoder.py`, at startup.

    config.py      every EMBED_* variable, read once
    validation.py  the request body -> an EmbeddingRequest, or an OpenAI-shaped 400 (pure)
    encoder.py     the model: load by path, encode + count tokens, decode token ids
    batching.py    the micro-batcher: requests arriving within a few ms share one encode call
    app.py         the FastAPI app: /v1/embeddings, /v1/models, /health, /stats
"""

__version__ = "0.1.0"
