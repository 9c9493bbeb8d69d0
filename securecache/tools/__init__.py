"""The offline tools: dump, restore, check, relabel, stats, policy why.

Library code (the CLI wiring is tools/cli.py).  Every tool opens the same
LMDB environment as a running daemon may have open: reads are one
consistent read transaction, writes go in batches of whole write
transactions, so the daemon keeps serving meanwhile.
"""
