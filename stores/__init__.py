"""The Zarr schema of avfix's stores, opening, atomic per-video writes, completion markers, provenance.

Nothing here knows about models; nothing in models/ knows about this package.
"""
