"""The HTTP API: django-ninja routes over the Scheduler, mounted at ``/api/``.

``routes`` holds the operations, ``schemas`` their JSON shapes, ``errors`` the one
mapping from exceptions to status codes, ``auth`` the scope each route needs, and
``probes`` the health endpoints that live outside ``/api/``.
"""
