"""The baselines' own apps, imported by their worker processes.

Each reads its broker and database from the environment the benchmark sets, and keeps
the library's defaults otherwise: the point is to measure them as users meet them.
"""
