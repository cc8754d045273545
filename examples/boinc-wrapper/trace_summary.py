#!/usr/bin/python3
"""Prints a trace written by `boinc_wrapper.py --trace` as one line per message, in order:

    +  63.731 s  →  #7 cmd.run {"target": "boinc-1", "argv": [...], "wait": false}
    +  63.773 s  ←  #7 {"id": "k-mwvln8rf-Ts7CYZC4", "state": "running", ...}
    +  82.829 s  ←  cmd.output stdout @0 "progress 0.0000 1.47\\nprogress 0.0625 1.95\\n"

usage: trace_summary.py TRACE [--width N] [--all]   (--all keeps agent.changed notifications)
"""

import base64
import json
import sys


def short(value, width):
    text = json.dumps(value, separators=(", ", ": "), ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def main(argv):
    if not argv or argv[0].startswith("-"):
        sys.exit(__doc__)
    width = int(argv[argv.index("--width") + 1]) if "--width" in argv else 160
    keep_all = "--all" in argv
    with open(argv[0], encoding="utf-8") as f:
        for line in f:
            entry = json.loads(line)
            msg, arrow = entry["msg"], "→" if entry["dir"] == ">" else "←"
            head = "+%8.3f s  %s  " % (entry["t"] / 1000, arrow)
            method = msg.get("method")
            if method == "agent.changed" and not keep_all:
                continue
            if method == "cmd.output":
                p = msg["params"]
                data = base64.b64decode(p["data"]).decode("utf-8", "replace")
                print(head + "cmd.output %s %s @%d %s" % (p["id"], p["stream"], p["offset"], short(data, width)))
            elif method and "id" in msg:
                print(head + "#%s %s %s" % (msg["id"], method, short(msg.get("params"), width)))
            elif method:
                print(head + "%s %s" % (method, short(msg.get("params"), width)))
            elif "error" in msg:
                print(head + "#%s error %s" % (msg.get("id"), short(msg["error"], width)))
            else:
                print(head + "#%s %s" % (msg.get("id"), short(msg.get("result"), width)))


if __name__ == "__main__":
    main(sys.argv[1:])
