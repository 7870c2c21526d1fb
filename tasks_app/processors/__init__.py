"""The built-in processors, and how the configured one is found and built.

``SCHEDULER_PROCESSOR`` names a class as ``package.module:ClassName``; it is built with
no arguments, once per process.
"""

from __future__ import annotations

import functools
import importlib

from django.core.exceptions import ImproperlyConfigured

from ..interfaces import Processor
from .command import CommandProcessor
from .echo import EchoProcessor
from .thumbnail import ThumbnailProcessor

__all__ = ["CommandProcessor", "EchoProcessor", "ThumbnailProcessor", "load_processor"]


@functools.cache
def load_processor(path: str) -> Processor:
    """Import and build the processor named ``package.module:ClassName``."""
    module_name, _, class_name = path.partition(":")
    if not module_name or not class_name:
        raise ImproperlyConfigured(
            f"SCHEDULER_PROCESSOR={path!r} must look like package.module:ClassName"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"SCHEDULER_PROCESSOR={path!r}: cannot import {module_name!r} ({exc}); "
            "is its folder on PYTHONPATH?"
        ) from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ImproperlyConfigured(
            f"SCHEDULER_PROCESSOR={path!r}: {module_name} has no {class_name}"
        )
    processor = cls()
    if not callable(getattr(processor, "process", None)):
        raise ImproperlyConfigured(
            f"SCHEDULER_PROCESSOR={path!r} has no process(data) method"
        )
    return processor
