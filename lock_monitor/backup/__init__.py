"""Backups and restores, a second product beside the exporter: imported only by their commands.

files: atomic writes, scratch files, stamps and retention; redis_rdb: an RDB fetched over SYNC
and checked; sqlite: online backups and checked restores.
"""
