"""The asset pipeline: sidecars and Live-Photo pairs as dependencies with dirty propagation,
and one registry of everything that derives data from a file.

    sidecars.py  which names are sidecars, whose they are, what they say (safe parsers)
    safexml.py   expat without DTDs or entities, for untrusted XMP / NFO / AAE
    deps.py      the `dep:` keys: sidecar nodes, dependency edges, dirty marks
    derive.py    one record's sidecar fields from its sidecars and partner
    engine.py    AssetPipeline: record-store listener, scan hook, re-derivation loop
    registry.py  extractors (probe, analyzers, sidecars, thumbnails, plugins) by name+version
"""
