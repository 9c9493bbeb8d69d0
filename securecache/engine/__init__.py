"""The object manager: permission checks and storage, one transaction a batch."""

from .access import AccessDenied, Session
from .core import Engine

__all__ = ["AccessDenied", "Engine", "Session"]
