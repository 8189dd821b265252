"""The ``regtune`` command: one thin module per command over the library (see :mod:`regtune.cli.main`)."""
