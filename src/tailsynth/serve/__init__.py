"""Serving library: image validation, prediction records, predictor backends, the local Triton launcher, the client.

The KServe adapter (a kserve.Model subclass) lives in serving/transformer.py; nothing here imports kserve.
"""
