"""Serving library: image validation, prediction records, predictor backends, health, the KServe transformer
(`transformer`, kserve imported lazily), the local Triton launcher and supervisor, the client.
"""
