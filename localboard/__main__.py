"""Command line of the local board (``make board`` / ``make board-stop``).

    python -m localboard start   start the server + Omniboard (or reuse them), sync ./runs, print URL + login
    python -m localboard stop    stop both
"""
import sys

from localboard.board import BoardError, password_hint, start, stop
from localboard.server import mongo_url


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv == ["start"]:
            up = start()
            for run_dir, reason in up["sync"].skipped:
                print(f"sync: skipped {run_dir}: {reason}", file=sys.stderr)
            print(up["sync"].summary())
            print(f"Omniboard: {up['url']}  (log in as {up['user']}; password in {password_hint()})")
            print("Record live to it: TOYLAB_MONGO_URL='" + mongo_url(up['mongo_port'], up['user'], 'PASSWORD') + "'")
            return 0
        if argv == ["stop"]:
            stopped = stop()
            print("stopped " + " and ".join(stopped) if stopped else "board was not running")
            return 0
    except BoardError as error:
        print(f"board: {error}", file=sys.stderr)
        return 1
    print("usage: python -m localboard start|stop", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
