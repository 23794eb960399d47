"""The worker protocol: the generated messages and stubs (quorra_pb2*, from
proto/quorra.proto by `make proto`), the servicer and the server. This package imports
nothing itself, so the worker SDK can load the generated modules without the server."""
