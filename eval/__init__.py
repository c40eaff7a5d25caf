"""Evaluation harness: LFW rate-accuracy and rate-distortion (see ``python -m eval --help``)."""
