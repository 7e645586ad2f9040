"""The seeds' claims, measured at CPU scale: python -m bench.claims (see bench/results/README.md)."""
