"""LMDB storage: the environment, the item record, expiry and eviction."""

from .env import SCHEMA_VERSION, Storage, StorageError
from .records import EXPIRED, Record, absolute_exptime
from .txn import Txn

__all__ = ["EXPIRED", "Record", "SCHEMA_VERSION", "Storage", "StorageError",
           "Txn", "absolute_exptime"]
