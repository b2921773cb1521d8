"""Route handles, one module per family; each registers itself (see `routing._registry`).

Nothing is listed here: `load_handles()` imports every module of this package.
"""
