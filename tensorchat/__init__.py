"""tensorchat: the command line, the generated gRPC code (`tensorchat.v1`), the load generator."""

__version__ = "0.1.0"
