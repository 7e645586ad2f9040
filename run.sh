#!/bin/sh
# The main job from a fresh clone: sets up the Python environment if needed (bootstrap.py), then python train_gpt.py "$@".
here=$(dirname "$0")
for py in python3 python; do
    command -v "$py" >/dev/null 2>&1 && exec "$py" "$here/bootstrap.py" run "$@"
done
echo "error: no python3 on PATH; install Python 3.10 or newer" >&2
exit 1
