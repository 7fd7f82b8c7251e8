"""Entry point of ``tui-chat``."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print(
        "tui-chat: the client is not built yet; run `tui-chat-server` for the server.",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
