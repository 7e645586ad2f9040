"""Quantization and the artifact format: what ships and how many bytes it costs."""
