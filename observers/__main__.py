"""Command line of the observers package.

    python -m observers sync [DIR ...]   upload file-storage and fallback runs to MongoDB, each once
    python -m observers board start|stop the local MongoDB-compatible server + Omniboard (make board)
"""
import sys


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv else ""
    if command == "sync":
        from observers.sync import main as sync_main

        return sync_main(argv)
    if command == "board":
        from observers.board import main as board_main

        return board_main(argv)
    print(__doc__.strip(), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
