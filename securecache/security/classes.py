"""The catalogue of securecache's object classes and permissions.

One place names every class and permission the object manager checks, in the
order policy/securecache.cil declares them (the order is also the bit order
of the `off` security server's access vectors).  Code that checks a
permission uses these constants, never string literals, so a typo is an
import error instead of a silent denial.

The request -> permission table is docs/design.md section 3 ("What each
request needs").
"""

# ------------------------------------------------------------------ classes
KV_CACHE = "kv_cache"
KV_ITEM = "kv_item"

# ------------------------------------------------------ kv_cache permissions
CACHE_CONNECT = "connect"    # accept a connection
CACHE_GETATTR = "getattr"    # stats
CACHE_SETATTR = "setattr"    # verbosity, stats reset, runtime settings
CACHE_FLUSH = "flush"        # flush_all

KV_CACHE_PERMS = (CACHE_CONNECT, CACHE_GETATTR, CACHE_SETATTR, CACHE_FLUSH)

# ------------------------------------------------------- kv_item permissions
ITEM_CREATE = "create"            # set/add creating an item, auto-create
ITEM_GETATTR = "getattr"          # metadata only: mg without v, getlabel
ITEM_SETATTR = "setattr"          # touch, gat, relabel (with relabelfrom)
ITEM_REMOVE = "remove"            # delete, flush_all per item
ITEM_RELABELFROM = "relabelfrom"  # relabel: on the old label
ITEM_RELABELTO = "relabelto"      # relabel: on the new label
ITEM_READ = "read"                # get, gets, mg with value, gat
ITEM_WRITE = "write"              # set/replace/cas over an existing item
ITEM_APPEND = "append"            # append, prepend
ITEM_CALCULATE = "calculate"      # incr, decr

KV_ITEM_PERMS = (
    ITEM_CREATE, ITEM_GETATTR, ITEM_SETATTR, ITEM_REMOVE, ITEM_RELABELFROM,
    ITEM_RELABELTO, ITEM_READ, ITEM_WRITE, ITEM_APPEND, ITEM_CALCULATE,
)

# class -> its permissions, in policy order
CATALOGUE = {
    KV_CACHE: KV_CACHE_PERMS,
    KV_ITEM: KV_ITEM_PERMS,
}


def perm_bit(tclass, perm):
    """The catalogue bit of `perm` in `tclass` (1 << index), or None.

    Only the `off` server uses catalogue bits; the other servers take bits
    from the loaded policy.
    """
    perms = CATALOGUE.get(tclass)
    if perms is None or perm not in perms:
        return None
    return 1 << perms.index(perm)


def all_perms():
    """Every (class, permission) pair of the catalogue, in policy order."""
    return [(tclass, perm) for tclass, perms in CATALOGUE.items() for perm in perms]
