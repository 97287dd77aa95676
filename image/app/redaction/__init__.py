"""Reversible PII pseudonymization for the redaction gateway (app/redaction_gateway.py).

detect: finds the values; placeholders: the one tag grammar; store: the encrypted map DB;
restore: tags back to originals, streamed or not; payload/sse: the OpenAI request and response
shapes walked. Nothing is created at import time.
"""
