"""Analyzers: describe media files as record fields (summary, tags, transcript, keywords).

`registry` picks analyzers by media type / extension (entry points `kvmedia.analyzers`),
`offline` is the built-in one, `remote` speaks the OpenAI-compatible API through
`apiclient` (retries, Retry-After), `cache` keeps outputs by content hash, `queue` keeps
retry state, and `pipeline` runs them over library items.
"""
