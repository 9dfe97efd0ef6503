"""The end of a sweep: a table of its points, the counts, and every failure with its run id."""
from __future__ import annotations

import json
import sys


def print_summary(rows: list[dict], sweep: str, stream=None, results=(), runs=()) -> int:
    """The end summary: a table of points (the swept keys, then the experiment's ``results``,
    its SWEEP_RESULTS), counts, what was redone (``runs``: the store's (point key, run id,
    status) of this sweep, earlier attempts included), the runs recorded in a fallback
    directory, and failures with run ids. Returns the exit code."""
    stream = stream or sys.stdout
    swept = sorted({k for row in rows for k in row["point"].updates
                    if len({json.dumps(r["point"].updates.get(k)) for r in rows}) > 1})
    shown = [key for key in results if any(key in (r.get("result") or {}) for r in rows)]
    lines = [["status", "run"] + swept + shown]
    for row in rows:
        result = row.get("result") or {}
        lines.append([row["status"], str(row.get("run"))] + [str(row["point"].updates.get(k)) for k in swept]
                     + [str(result.get(key, "")) for key in shown])
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip(), file=stream)
    counts = {status: sum(r["status"] == status for r in rows) for status in ("COMPLETED", "SKIPPED", "FAILED")}
    print(f"sweep {sweep}: {len(rows)} points: {counts['COMPLETED']} run now, {counts['SKIPPED']} already "
          f"COMPLETED (skipped), {counts['FAILED']} failed", file=stream)
    for key in shown:  # counts of the categorical results (e.g. phases) of the runs done now
        values = [(r.get("result") or {}).get(key) for r in rows if r["status"] == "COMPLETED"]
        values = [v for v in values if isinstance(v, str)]
        if values:
            tally = {value: values.count(value) for value in sorted(set(values))}
            print(f"{key} of the runs done now: " + ", ".join(f"{k} {v}" for k, v in tally.items()), file=stream)
    keys = {row["point"].key for row in rows}
    unfinished = [(run, status) for key, run, status in runs if key in keys and status != "COMPLETED"]
    redone = {key for key, run, status in runs if key in keys and status != "COMPLETED"} & {
        row["point"].key for row in rows if row["status"] in ("COMPLETED", "SKIPPED")}
    if redone:  # a run was interrupted, its worker killed, or it failed: the point ran again
        print(f"redone: {len(redone)} points whose earlier runs did not complete (" +
              ", ".join(f"run {run} {status}" for run, status in sorted(unfinished, key=str)) + ")", file=stream)
    fallback = sorted({row["fallback"].rsplit("/", 1)[0] for row in rows if row.get("fallback")})
    if fallback:
        n = sum(bool(row.get("fallback")) for row in rows)
        print(f"MongoDB was unreachable: {n} runs recorded in fallback file storage {', '.join(fallback)}; "
              f"upload them with: python -m observers sync {' '.join(fallback)}", file=stream)
    for row in rows:
        if row["status"] == "FAILED":
            print(f"FAILED: run {row.get('run')} ({row['point'].describe()}): {row.get('error')}", file=stream)
    return 1 if counts["FAILED"] else 0
