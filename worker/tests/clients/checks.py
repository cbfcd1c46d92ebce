"""What the client scripts share: the worker's own API for cross-checks
(`ours`, `job_until_done`), and the runner: each check is a function that
raises on failure; one line per check, then the closing `N passed, N failed`
line CI reads, and exit status 1 on any failure."""

import json
import sys
import time
import traceback
import urllib.request


def ours(url, method, path, body=None, token=None):
    """The worker's own API at `url`, with the bearer `token` when given:
    parsed JSON, or the raw bytes of any other answer."""
    req = urllib.request.Request(url + path, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, data, timeout=300) as res:
        raw = res.read()
        return json.loads(raw) if res.headers.get_content_type() == "application/json" else raw


def job_until_done(url, token, job_id):
    """Polls `/v1/jobs/{job_id}` until it ends (5 minutes at most); its snapshot."""
    for _ in range(3000):
        snap = ours(url, "GET", f"/v1/jobs/{job_id}", token=token)
        if snap["status"] in ("completed", "failed", "cancelled"):
            return snap
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end")


def run(checks, label):
    passed = failed = 0
    for fn in checks:
        try:
            fn()
            passed += 1
            print(f"ok   {fn.__name__}")
        except Exception:  # noqa: BLE001 - every failure is reported, then counted
            failed += 1
            print(f"FAIL {fn.__name__}")
            traceback.print_exc()
    print(f"{label}: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
