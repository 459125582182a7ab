"""The ``inf-embed`` command line. Only code under this package writes to stdout."""
