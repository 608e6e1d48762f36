"""The Zarr schema of avfix's stores, opening, atomic per-video writes, completion markers, provenance.

Nothing here knows about models; nothing in models/ knows about this package.
"""

from stores import codecs as _codecs

# zarr reads the frames arrays' "avfix.jpeg" codec by name: known from here on in any process that
# imports avfix's stores (an installed avfix also declares it under the `zarr.codecs` entry point).
_codecs.register()
