"""syncd's performance bench: syncd and its peers (curl, rclone, rsync, lsyncd, Syncthing, and
syncd itself at a baseline commit) side by side.

Run it through ``scripts/bench`` (which sets up the venv and the peers); ``--quick`` scales
every data set down so the whole run takes about a minute. Everything runs against servers the
bench starts on free 127.0.0.1 ports (``syncd serve`` and nginx WebDAV with a private
nginx.conf) and stops at exit; every subprocess has a deadline. The data is generated with a
fixed seed into ``<dir>/data`` and kept between runs; ``<dir>/run`` is rebuilt every run. The
table goes to stdout and the same figures to ``<dir>/results.json``.

The bench does not import syncd: it drives the ``syncd`` command line like a user would, so that
what it times is the installed command, and the harness (this package) stays out of syncd's
process and imports.

Rooms, bottom to top:
    procs        running and timing subprocesses (deadlines, peak RSS, CPU of the servers)
    workloads    the sizes and the data sets: generated with a fixed seed, cached by a stamp
    peers        the servers (syncd serve, nginx WebDAV) and the peers' commands (curl, rclone,
                 rsync, lsyncd), their versions
    report       Result and Floor, the table, ratios, pass / MISS, results.json
    session      one bench run's directories, logs, timed commands and results
    syncd_runs   how syncd itself is driven: its config files, `syncd sync`, `syncd run`
    gentree      the million-file tree, written fast (one process per core)
    measure_big, measure_cpu, measure_small, measure_live
                 the measurements: one big file (wall clock; CPU against its floor) and medium
                 files; many small files; `syncd run`
    measure_baseline
                 the small files' first sync by syncd at the baseline commit (--baseline REV)
    measure_syncthing, syncthing_peer
                 Syncthing, two instances in a loopback-only network namespace (`unshare -n`)
    measure_million
                 the million-file tree: first sync, `syncd run` warm start, idle, latency,
                 no-op against rsync and rclone
    countproxy   a counting TCP proxy (bytes each way, per connection): resets, stalls, pacing
    measure_bigfile, measure_delta, measure_resume, bigfile_rig, bigfile_peers
                 one large file over a link that fails or is slow: resumed uploads (syncd
                 serve, S3 on moto_server), deltas (a 4 KiB insert, a 1 MiB append), chunking
                 speed; vs an rsync daemon and rclone, bytes counted by countproxy
    main         the command line and the order of the workloads
"""
