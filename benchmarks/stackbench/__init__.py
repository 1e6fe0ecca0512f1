"""The stack benchmark's parts; benchmarks/stack.py is its command line."""
