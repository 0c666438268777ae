"""Application layer of the Cosmos Policy flywheel: typed config, workspace, ingestion and the CLI."""

__version__ = "0.1.0"
