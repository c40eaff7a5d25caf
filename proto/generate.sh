#!/usr/bin/env bash
# Regenerates the Python modules of the wire contract (facewire/) from proto/.
# `proto/generate.sh --check` fails when the committed modules differ from the .proto files.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
py=${PYTHON:-python}
out=$root
if [[ "${1:-}" == "--check" ]]; then
  out=$(mktemp -d)
fi
"$py" -m grpc_tools.protoc -I "$here" --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  "$here"/facewire/v1/*.proto "$here"/facewire/v2/*.proto
touch "$out/facewire/__init__.py" "$out/facewire/v1/__init__.py" "$out/facewire/v2/__init__.py"
if [[ "${1:-}" == "--check" ]]; then
  diff -r -x __pycache__ -x ids.py "$out/facewire" "$root/facewire" || { echo "generated code drifted: run proto/generate.sh"; exit 1; }
  rm -rf "$out"
fi
