"""Benchmarks: our platform against Celery, Procrastinate and Dramatiq on one machine.

``python -m bench`` (``make bench``) runs every system in a process of its own, each on a
fresh PostgreSQL database and a private redis-server, prints the table of figures and
writes the raw numbers to ``bench/results/latest.json``. ``BENCH_QUICK=1`` shortens it.
"""
