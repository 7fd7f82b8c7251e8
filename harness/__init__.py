"""The test harness: chaos runs, the checker, broken variants, fault proxy, server processes.

It lives at the repository root, outside ``tui_chat``, so the wheel does not ship it and the
product cannot import it (``lint-imports`` forbids ``tui_chat`` → ``harness``). Tests and
benchmarks import it from a checkout; subprocesses it starts get the checkout on
``PYTHONPATH`` through :func:`harness.env.subprocess_env`.
"""
