"""securecache: a memcached-compatible cache on LMDB with SELinux MAC on every request."""

__version__ = "0.1.0"
