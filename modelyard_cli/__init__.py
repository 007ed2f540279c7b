"""Layer 4, the command line and the local stack: the only layer that imports the services.

`modelyard` (the console script) is `modelyard_cli.main:main`; `python -m modelyard_cli`
is the same. Services are imported lazily, inside the command that runs them, so `--help`
and the `up` supervisor stay light.
"""
