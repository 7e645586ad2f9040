"""Evaluation: tokenizer-agnostic bits per byte, exact-coverage scoring, legality checks."""
