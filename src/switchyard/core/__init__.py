"""Domain types and the Protocols (ports) the gateway pipeline depends on.

Nothing here does I/O or imports from outer layers.
"""
