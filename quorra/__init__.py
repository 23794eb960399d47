"""Quorra: a job queue server. REST for clients, gRPC for workers, SQL for state."""

__version__ = "0.1.0"
