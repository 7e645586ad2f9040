"""Data: the challenge's shard format, loaders, export from text, the published download, the sample corpus."""
