"""Command modules of the `kvmedia` CLI, one per verb family. Each imports `cli` from
kvmedia.cli and registers its commands on it; kvmedia/cli.py imports them all at its end.
Keep top-level imports to click only: heavy modules are imported inside the command."""
