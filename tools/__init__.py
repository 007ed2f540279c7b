"""Developer tools run from the Makefile (stub generation, the demo's tiny checkpoints).

Nothing in a production package imports them."""
