#!/usr/bin/python3
"""Drives Debian's python3-stomp (stomp.py 8) against a broker for the conformance suite.

Usage: stomp_client.py HOST PORT SCENARIO=DESTINATION...
Runs the scenarios in order in one interpreter (starting Python is the slow part) and prints one
JSON object {scenario: what the client observed}; the TypeScript tests assert on it. A scenario
that raised is reported as {"error": ...}.
"""
import hashlib
import json
import queue
import sys
import threading

import stomp

TIMEOUT = 10.0


class Inbox(stomp.ConnectionListener):
    def __init__(self):
        self.messages = queue.Queue()
        self.errors = []
        self.receipts = set()
        self.receipt_seen = threading.Condition()
        self.version = None

    def on_connected(self, frame):
        self.version = frame.headers.get("version")

    def on_message(self, frame):
        self.messages.put(frame)

    def on_error(self, frame):
        self.errors.append(frame.headers.get("message", "") + ": " + str(frame.body))

    def on_receipt(self, frame):
        with self.receipt_seen:
            self.receipts.add(frame.headers.get("receipt-id"))
            self.receipt_seen.notify_all()

    def next(self):
        return self.messages.get(timeout=TIMEOUT)

    def wait_receipt(self, rid):
        with self.receipt_seen:
            if not self.receipt_seen.wait_for(lambda: rid in self.receipts, timeout=TIMEOUT):
                raise TimeoutError("no RECEIPT " + rid + "; errors: " + repr(self.errors))


def connect(host, port, login="guest", passcode="guest", auto_decode=True):
    # vhost: stomp.py would send the TCP host name as `host`, which RabbitMQ reads as a vhost.
    conn = stomp.Connection12([(host, port)], reconnect_attempts_max=1, auto_decode=auto_decode, heartbeats=(0, 0), vhost="/")
    inbox = Inbox()
    conn.set_listener("inbox", inbox)
    conn.connect(login, passcode, wait=True)
    return conn, inbox


def subscribe(conn, inbox, dest, sub_id, ack="auto"):
    rid = "sub-" + sub_id
    conn.subscribe(dest, id=sub_id, ack=ack, headers={"receipt": rid})
    inbox.wait_receipt(rid)


def send(conn, inbox, dest, body, rid, **headers):
    conn.send(dest, body, headers=dict(headers, receipt=rid))
    inbox.wait_receipt(rid)


def scenario_connect(host, port, dest):
    conn, inbox = connect(host, port)
    out = {"connected": conn.is_connected(), "version": inbox.version}
    conn.disconnect()
    try:
        bad, _ = connect(host, port, passcode="wrong-passcode")
        out["wrongPasscodeConnected"] = bad.is_connected()
        bad.disconnect()
    except stomp.exception.ConnectFailedException as e:
        out["wrongPasscodeConnected"] = False
        out["wrongPasscodeError"] = type(e).__name__
    return out


def scenario_sendrecv(host, port, dest):
    conn, inbox = connect(host, port)
    subscribe(conn, inbox, dest, "s1")
    send(conn, inbox, dest, '{"type":"HELLO"}', "r1", **{"content-type": "application/json", "x-from": "python"})
    m = inbox.next()
    conn.disconnect()
    return {"body": m.body, "contentType": m.headers.get("content-type"), "xFrom": m.headers.get("x-from"), "destination": m.headers.get("destination")}


def scenario_acknack(host, port, dest):
    conn, inbox = connect(host, port)
    subscribe(conn, inbox, dest, "s1", ack="client-individual")
    send(conn, inbox, dest, "work", "r1")
    first = inbox.next()
    conn.nack(first.headers["ack"], receipt="nack-1")
    inbox.wait_receipt("nack-1")
    again = inbox.next()
    conn.ack(again.headers["ack"], receipt="ack-1")
    inbox.wait_receipt("ack-1")
    send(conn, inbox, dest, "marker", "r2")
    marker = inbox.next()
    conn.ack(marker.headers["ack"])
    conn.disconnect()
    return {
        "first": first.body,
        "firstRedelivered": first.headers.get("redelivered"),
        "again": again.body,
        "againRedelivered": again.headers.get("redelivered"),
        "afterAck": marker.body,
    }


def scenario_binary(host, port, dest):
    conn, inbox = connect(host, port, auto_decode=False)
    subscribe(conn, inbox, dest, "s1")
    body = bytes((i * 13 + 7) % 256 for i in range(70000)) + b"\x00\x00end"
    send(conn, inbox, dest, body, "r1", **{"content-type": "application/octet-stream"})
    m = inbox.next()
    conn.disconnect()
    got = m.body if isinstance(m.body, bytes) else m.body.encode("latin-1")
    return {"sentSha": hashlib.sha256(body).hexdigest(), "gotSha": hashlib.sha256(got).hexdigest(), "length": len(got), "contentLength": m.headers.get("content-length")}


def scenario_transaction(host, port, dest):
    conn, inbox = connect(host, port)
    subscribe(conn, inbox, dest, "s1")
    tx = conn.begin()
    conn.send(dest, "tx-1", transaction=tx)
    conn.send(dest, "tx-2", transaction=tx)
    send(conn, inbox, dest, "outside", "r1")
    before_commit = inbox.next().body
    conn.commit(tx, headers={"receipt": "commit-1"})
    inbox.wait_receipt("commit-1")
    committed = [inbox.next().body, inbox.next().body]
    tx2 = conn.begin()
    conn.send(dest, "aborted", transaction=tx2)
    conn.abort(tx2, headers={"receipt": "abort-1"})
    inbox.wait_receipt("abort-1")
    send(conn, inbox, dest, "marker", "r2")
    after_abort = inbox.next().body
    conn.disconnect()
    return {"beforeCommit": before_commit, "committed": committed, "afterAbort": after_abort}


SCENARIOS = {
    "connect": scenario_connect,
    "sendrecv": scenario_sendrecv,
    "acknack": scenario_acknack,
    "binary": scenario_binary,
    "transaction": scenario_transaction,
}


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    results = {}
    for arg in sys.argv[3:]:
        name, dest = arg.split("=", 1)
        try:
            results[name] = SCENARIOS[name](host, port, dest)
        except Exception as e:  # reported to the test, which fails with the reason
            results[name] = {"error": type(e).__name__ + ": " + str(e)}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
