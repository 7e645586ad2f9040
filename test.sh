#!/bin/sh
# The test suite from a fresh clone: sets up the Python environment if needed (bootstrap.py), then
# python -m pytest -q -m "not slow" "$@" (e.g. ./test.sh -m slow, ./test.sh tests/test_train.py).
here=$(dirname "$0")
for py in python3 python; do
    command -v "$py" >/dev/null 2>&1 && exec "$py" "$here/bootstrap.py" test "$@"
done
echo "error: no python3 on PATH; install Python 3.10 or newer" >&2
exit 1
