"""LMDB storage: the environment (env.py), key encodings (keys.py), the record write path
(recordstore.py) and the audit log (audit.py)."""
