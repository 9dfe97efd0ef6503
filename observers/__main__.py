"""Command line of the observers package.

    python -m observers sync [DIR ...]   upload file-storage and fallback runs to MongoDB, each once

(The local MongoDB-compatible server + Omniboard are not observers: python -m localboard start|stop, make board.)
"""
import sys


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv else ""
    if command == "sync":
        from observers.sync import main as sync_main

        return sync_main(argv)
    if command in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    print(f"python -m observers: unknown command {command!r}: use sync [DIR ...] (--help)" if command
          else "python -m observers: give a command: sync [DIR ...] (--help)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
