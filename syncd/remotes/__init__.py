"""Remotes: one module per kind (syncd.py, webdav.py, s3.py, http.py), the Remote protocol and
its Features (base.py), what the HTTP kinds share (_http.py), and the registry (kinds.py)."""
