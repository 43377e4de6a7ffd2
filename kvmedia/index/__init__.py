"""The search index: text analysis, immutable checksummed segments, the LMDB delta, merges."""
