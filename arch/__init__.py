"""The model: GPT, blocks, attention, and the registry of MLP-slot mixers."""
