"""Optimizers: Muon for matrices, Adam for the rest, and the parameter grouping between them."""
