"""Phase-1 ranking sweeps: embedding share x expansion x mixer kind, each point sized to a byte budget by
arch.budget and trained by train_gpt.py for a short fixed wall-clock budget (python -m sweep --help)."""
