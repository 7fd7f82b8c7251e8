"""The PostgreSQL store of a multi-node service (``serve --store postgresql://…``).

Imported only when ``--store`` is given: the base install works without psycopg.
``conn`` adapts a psycopg connection to the subset of ``sqlite3.Connection`` the writer and
the read functions use; ``schema`` creates, versions and migrates the store; ``writer`` is
the writer of one node; ``batch`` is the one-round-trip function for batches of direct sends.
"""
