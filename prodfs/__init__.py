"""ProdFS: the FUSE filesystem over PVC.

Four subpackages, each a layer that imports only those below it (and
`pvc_client`, under all of them)::

    prodfs.mount       the mount itself: the pyfuse3 adapter (fs), the daemon,
         |             the namespace, the resolved state, control files,
         |             options
    prodfs.kernel      fast paths the kernel takes without Python: zero-message
         |             opens, C reads and lookups, passthrough, readahead (C
         |             sources and their ctypes side)
    prodfs.storage     local state on disk: the blob cache and its ledger,
         |             version manifests, offline contexts, prefetch
    prodfs.resolution  which version a name means: graph, context, resolver,
                       strategies (also the plugin API), cycles, snapshots

`prodfs.stats` (the counters every layer adds to) sits beside them, below all.
`prodfs.strategies` is the stable import path for third-party strategies.
"""
