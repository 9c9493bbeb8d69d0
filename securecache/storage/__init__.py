"""LMDB storage: the environment, the item record, expiry and eviction."""

from .env import SCHEMA_VERSION, Storage, StorageError
from .errors import OutOfSpace, StorageFault
from .records import EXPIRED, STALE, TOKEN_SENT, Record, absolute_exptime
from .txn import Txn

__all__ = ["EXPIRED", "OutOfSpace", "StorageFault", "STALE", "TOKEN_SENT", "Record", "SCHEMA_VERSION", "Storage", "StorageError",
           "Txn", "absolute_exptime"]
