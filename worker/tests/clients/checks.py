"""The client scripts' runner: each check is a function that raises on
failure; one line per check, then the closing `N passed, N failed` line CI
reads, and exit status 1 on any failure."""

import sys
import traceback


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
