"""Offline signals: speech, on-screen text, text embeddings."""
