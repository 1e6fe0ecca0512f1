"""tensorchat: the command line, the generated gRPC contract (`tensorchat.v1`) and the load generator."""

__version__ = "0.1.0"
