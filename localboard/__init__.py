"""Browse runs without Docker: a local MongoDB-compatible server and Omniboard (``make board``).

    python -m localboard start   # start both (or reuse them), sync ./runs and follow it, print URL + login
    python -m localboard stop    # stop both, and the watcher

Not an observer: the runs are recorded by the observers package (live to the server through
``TOYLAB_MONGO_URL``, or to file storage and uploaded by ``observers.sync``); this package
only runs the processes that store and show them. Its assets stay in ``board/``.

- ``localboard.server``: the server, mongoeco's wire-protocol server (``board/server.py``),
  run by its own Python >= 3.13 venv ``.board/venv`` (``make board-deps`` builds it); its
  data is the SQLite file ``<runs dir>/board/mongo.sqlite3``, so it survives restarts.
  ``LocalMongo`` is that server as a process the tests also use: start on a free port with
  a temporary SQLite file, stop, kill, restart on the same port and file.
- ``localboard.omniboard``: Omniboard, from ``board/package.json`` + ``package-lock.json``
  (``npm ci``). It is started with ``board/localhost.js`` preloaded, which binds it to
  127.0.0.1 and passes its login without putting the password on the command line.
- ``localboard.watcher``: the process that follows ./runs (``TOYLAB_RUNS_DIR``) and the
  fallback directory while the board is up: every 2 s it stats the files of each run
  directory and uploads the runs that changed (new ones, RUNNING ones, ones that ended)
  through ``observers.sync``, which updates a run uploaded before in place (one document per
  run, each metric point once). ``start`` stops it before its own sync and starts it again
  after (one uploader at a time); ``stop`` stops it first.
- ``localboard.board``: all three as the one board of ``make board``: credentials, ports,
  pid files, start (upload the runs, then follow them) / stop. ``localboard.processes``:
  what they share (127.0.0.1 ports, waiting for a process to come up, pid files).
- Credentials: ``TOYLAB_BOARD_USER`` / ``TOYLAB_BOARD_PASSWORD`` when set, otherwise
  generated once into ``.board/credentials`` (mode 0600, git-ignored). The same user and
  password log in to the server and to Omniboard. They are passed to both processes in
  their environment, never printed.
- Ports: ``TOYLAB_BOARD_PORT`` (Omniboard, default 9000) and ``TOYLAB_BOARD_MONGO_PORT``
  (server, default 27018), both on 127.0.0.1. A value that is not a port (1-65535), the
  same port twice, or a port another program holds: one line saying so, exit 1, nothing
  started or written.
- Failures: ``start`` holds ``.board/lock`` (flock), so two ``make board`` at once start one
  board and the second reuses it. A server that is gone (SIGKILL, crash, reboot) or not
  listening is started again on the same SQLite file (WAL: a kill mid-write loses no
  acknowledged write and corrupts nothing), and Omniboard with it: its pool to the server
  never recovers once it gave up ('pool is draining'). An Omniboard whose logged-in API
  query fails or hangs is restarted too.
"""
