"""The gRPC service over the Scheduler, derived from its public methods.

``schema`` reads the methods and their type hints, ``generate`` writes the ``.proto`` and
the Python modules from it, and ``server`` serves every RPC through one generic servicer.
"""
