"""Command line of the local board (``make board`` / ``make board-stop``).

    python -m localboard start   start the server + Omniboard (or reuse them), sync ./runs, follow it, print URL + login
    python -m localboard stop    stop the runs watcher, Omniboard and the server

Any other command line, and a bad TOYLAB_BOARD_PORT / TOYLAB_BOARD_MONGO_PORT, gets one
line on stderr saying what is wrong and what is allowed, and a non-zero exit (2: usage,
1: the board could not start), with nothing started.
"""
import sys

from localboard.board import BoardError, password_hint, start, stop
from localboard.server import mongo_url

COMMANDS = ("start", "stop")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv in (["-h"], ["--help"], ["help"]):
        print(__doc__.strip())
        return 0
    if len(argv) != 1 or argv[0] not in COMMANDS:
        given = f"unknown command {' '.join(argv)!r}" if argv else "no command given"
        print(f"board: {given}: use 'python -m localboard start' or 'python -m localboard stop' "
              "(make board / make board-stop)", file=sys.stderr)
        return 2
    try:
        if argv == ["start"]:
            up = start()
            for run_dir, reason in up["sync"].skipped:
                print(f"sync: skipped {run_dir}: {reason}", file=sys.stderr)
            print(up["sync"].summary())
            print(f"Following {' and '.join(up['watched'])}: new and running runs reach the board within "
                  "seconds (make board-stop stops that too)")
            print(f"Omniboard: {up['url']}  (log in as {up['user']}; password in {password_hint()})")
            print("Record live to it: TOYLAB_MONGO_URL='" + mongo_url(up['mongo_port'], up['user'], 'PASSWORD') + "'")
            return 0
        stopped = stop()
        print("stopped " + " and ".join([", ".join(stopped[:-1]), stopped[-1]] if len(stopped) > 1 else stopped)
              if stopped else "board was not running")
        return 0
    except BoardError as error:
        print(f"board: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
