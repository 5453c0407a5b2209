"""Drives the official Mixpanel Python library against a Veil collector.

The Go test TestPythonSDK starts Veil, runs this script with the venv's
python and then checks ClickHouse. Every call's outcome is printed as one
JSON line:
  {"kind":"result","op":"people_set","error":null}
and every HTTP exchange the library made as
  {"kind":"request","method":"POST","path":"/engage","query":[],
   "content_type":"application/x-www-form-urlencoded","auth":"","status":200,"body":"..."}
The script itself never judges: the Go test does.

Environment:
  VEIL_HOST      host:port of the collector, which serves HTTPS (the library
                 builds https:// URLs from api_host); REQUESTS_CA_BUNDLE
                 names the certificate to trust
  VEIL_TOKEN     project token
  VEIL_SECRET    project API secret (for /import)
  VEIL_NOW_MS    the test's clock, so that expected times are exact
  VEIL_SA_USER, VEIL_SA_SECRET, VEIL_PROJECT_ID
                 a service account allowed to import into the project
"""

import datetime
import json
import logging
import os
import sys
import urllib.parse

import requests

import mixpanel
from mixpanel import BufferedConsumer, Consumer, Mixpanel, ServiceAccountCredentials


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# Record each request the library makes and the answer it gets, by wrapping
# the requests session's send, which the library's consumers call.
_send = requests.Session.send


def _recording_send(self, request, **kwargs):
    url = urllib.parse.urlsplit(request.url)
    auth = request.headers.get("Authorization", "")
    rec = {
        "kind": "request",
        "method": request.method,
        "path": url.path,
        "query": sorted(set(urllib.parse.parse_qs(url.query, keep_blank_values=True))),
        "content_type": request.headers.get("Content-Type", ""),
        "auth": auth.split(" ")[0] if auth else "",
    }
    try:
        resp = _send(self, request, **kwargs)
    except Exception as e:
        rec["status"] = 0
        rec["body"] = "network error: %s" % e
        emit(rec)
        raise
    body = resp.text
    rec["status"] = resp.status_code
    rec["body"] = body[:300] + "…" if len(body) > 300 else body
    emit(rec)
    return resp


requests.Session.send = _recording_send

env = os.environ
host = env.get("VEIL_HOST")
token = env.get("VEIL_TOKEN")
secret = env.get("VEIL_SECRET")
now_ms = int(env.get("VEIL_NOW_MS", "0"))
sa_user = env.get("VEIL_SA_USER")
sa_secret = env.get("VEIL_SA_SECRET")
project_id = env.get("VEIL_PROJECT_ID")
if not all([host, token, secret, now_ms, sa_user, sa_secret, project_id]):
    sys.stderr.write("run.py: VEIL_HOST, VEIL_TOKEN, VEIL_SECRET, VEIL_NOW_MS, VEIL_SA_USER, "
                     "VEIL_SA_SECRET and VEIL_PROJECT_ID are required\n")
    sys.exit(2)

# The library warns through logging that API secrets are deprecated; keep
# stdout for results only.
logging.basicConfig(stream=sys.stderr, level=logging.WARNING)


def consumer(**kwargs):
    # api_host is the library's setting for where requests go.
    return Consumer(api_host=host, request_timeout=15, **kwargs)


mp = Mixpanel(token, consumer=consumer())
buffered = BufferedConsumer(max_size=50, api_host=host, request_timeout=15)
mp_buffered = Mixpanel(token, consumer=buffered)
# Service accounts, the library's recommended /import authentication.
mp_account = Mixpanel(token, consumer=consumer(
    credentials=ServiceAccountCredentials(sa_user, sa_secret, project_id)))
mp_wrong_account = Mixpanel(token, consumer=consumer(
    credentials=ServiceAccountCredentials(sa_user, "not-the-account-secret", project_id)))


def call(op, fn):
    """Runs one library call; its exception, if any, is its outcome."""
    try:
        fn()
        err = None
    except Exception as e:  # the library's MixpanelException, or anything it did not expect
        err = "%s: %s" % (type(e).__name__, e)
    emit({"kind": "result", "op": op, "error": err})


DAY_MS = 24 * 3600 * 1000


def seconds(ms):
    """A time in seconds, as the library's callers pass it: a float with
    the milliseconds in its fraction."""
    return ms / 1000


def main():
    # Events. Every event the library makes has a time (time.time(), a float
    # of seconds) and a $insert_id of its own, unless the caller gives them.
    call("track", lambda: mp.track("py-user-1", "py single", {"plan": "pro", "label": "party 🎉"}))
    call("track with time and insert_id", lambda: mp.track(
        "py-user-1", "py timed", {"time": seconds(now_ms - 60_000), "$insert_id": "py-timed-1"}))

    def track_batch():
        # 60 events: the buffer sends 50 when it is full, flush the other 10.
        for i in range(60):
            t = now_ms - i * 1000
            mp_buffered.track("py-user-%d" % (i % 3 + 1), "py batch", {
                # Floats with milliseconds, and whole seconds as ints.
                "time": seconds(t) if i % 2 == 0 else t // 1000,
                "$insert_id": "py-batch-%d" % i,
                "i": i,
            })
        buffered.flush()

    call("BufferedConsumer: track 60, flush", track_batch)
    # alias() is left out: it always sends through a Consumer of its own,
    # to api.mixpanel.com, whatever consumer the caller configured.

    # Imports.
    call("import_data with the API secret", lambda: mp.import_data(
        None, "py-user-2", "py imported", seconds(now_ms - 10 * DAY_MS),
        {"$insert_id": "py-import-1"}, api_secret=secret))

    def import_batch():
        for i in range(5):
            mp_buffered.import_data(None, "py-user-3", "py import batch",
                                    seconds(now_ms - 30 * DAY_MS + i * 1000),
                                    {"$insert_id": "py-import-batch-%d" % i}, api_secret=secret)
        buffered.flush()

    call("BufferedConsumer: import_data 5, flush", import_batch)
    call("import_data with a service account", lambda: mp_account.import_data(
        None, "py-user-4", "py service account import", seconds(now_ms - 3 * DAY_MS),
        {"$insert_id": "py-sa-1"}))
    # Wrong credentials must be refused, and nothing stored.
    call("import_data with a wrong secret", lambda: mp.import_data(
        None, "py-user-5", "py unauthorised import", seconds(now_ms - 3 * DAY_MS), api_secret="not-the-secret"))
    call("import_data with a wrong service account secret", lambda: mp_wrong_account.import_data(
        None, "py-user-5", "py unauthorised import", seconds(now_ms - 3 * DAY_MS)))

    # People: py-user-1 ends as
    #   {plan: "pro", first_seen: "2024-01-01", logins: 3, pages: ["home", "pricing"],
    #    tags: ["b"], $transactions: [{$amount: 29.99, $time: "2024-03-01T10:00:00"}]}
    call("people_set", lambda: mp.people_set("py-user-1", {"plan": "pro", "seats": 3, "tags": ["a"]}))
    call("people_set_once", lambda: mp.people_set_once("py-user-1", {"first_seen": "2024-01-01", "plan": "free"}))
    call("people_increment", lambda: mp.people_increment("py-user-1", {"logins": 2}))
    call("people_increment again", lambda: mp.people_increment("py-user-1", {"logins": 1}))
    call("people_append", lambda: mp.people_append("py-user-1", {"pages": "home"}))
    call("people_append again", lambda: mp.people_append("py-user-1", {"pages": "pricing"}))
    call("people_union", lambda: mp.people_union("py-user-1", {"tags": ["b", "a"]}))
    call("people_remove", lambda: mp.people_remove("py-user-1", {"tags": "a"}))
    call("people_unset", lambda: mp.people_unset("py-user-1", ["seats"]))
    call("people_track_charge", lambda: mp.people_track_charge(
        "py-user-1", 29.99, {"$time": datetime.datetime(2024, 3, 1, 10, 0, 0)}))
    # py-user-3: a charge, then cleared: $transactions is unset.
    call("people_track_charge user 3", lambda: mp.people_track_charge("py-user-3", 5))
    call("people_clear_charges", lambda: mp.people_clear_charges("py-user-3"))
    # py-user-2: set, then deleted: no profile.
    call("people_set user 2", lambda: mp.people_set("py-user-2", {"plan": "team"}))
    call("people_delete", lambda: mp.people_delete("py-user-2"))

    def people_batch():
        # py-user-4: {plan: "team", visits: 1}, in one request.
        mp_buffered.people_set("py-user-4", {"plan": "team"})
        mp_buffered.people_increment("py-user-4", {"visits": 1})
        buffered.flush()

    call("BufferedConsumer: people_set, people_increment, flush", people_batch)

    # Groups: company/py-acme ends as {industry: "widgets", founded: 1999, products: ["anvil"]}.
    call("group_set", lambda: mp.group_set("company", "py-acme", {"industry": "widgets", "size": 10}))
    call("group_set_once", lambda: mp.group_set_once("company", "py-acme", {"founded": 1999, "industry": "ignored"}))
    call("group_union", lambda: mp.group_union("company", "py-acme", {"products": ["anvil", "rocket"]}))
    call("group_remove", lambda: mp.group_remove("company", "py-acme", {"products": "rocket"}))
    call("group_unset", lambda: mp.group_unset("company", "py-acme", ["size"]))
    # company/py-gone: set, then deleted.
    call("group_set gone", lambda: mp.group_set("company", "py-gone", {"industry": "none"}))
    call("group_delete", lambda: mp.group_delete("company", "py-gone"))


if __name__ == "__main__":
    emit({"kind": "version", "version": mixpanel.__version__})
    main()
