#!/usr/bin/env bash
# Download, here (where PyPI is reachable), the wheels the GPU machine lacks: it has Python 3.12, torch,
# triton, numpy, sentencepiece, pyyaml, psutil, tensorboard, pyarrow, ... but no network and none of these:
#   megatron-core  the model (pin: requirements/base.txt)
#   zstandard      imported by data_prep, which pipeline.config imports (pin: requirements/base.txt)
#   liger-kernel   the Liger rows of `make gpu-check` (pin: requirements/gpu.txt)
# They go to .gpu-wheels/ (git-ignored, so the device tool must be told to `carry` it), replaced whole so
# it never holds two versions of a package (that stops the install there). Checks the size and prints the
# install line to put first in the GPU command (benchmarks/README.md, "GPU window").
#
#   bash scripts/gpu_wheels.sh          (make gpu-wheels)
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${GPU_WHEELS_DIR:-.gpu-wheels}
MAX_MB=${GPU_WHEELS_MAX_MB:-60}   # what may travel in all is 64 MiB, the repository included
PY=${PYTHON:-python3}
WANT=("megatron-core requirements/base.txt" "zstandard requirements/base.txt" "liger-kernel requirements/gpu.txt")

specs=()
for item in "${WANT[@]}"; do
  read -r name file <<<"$item"
  spec=$(grep -iE "^${name}==[^ ;#]+" "$file" | head -1 | sed -E 's/[ ;#].*//') || true
  [[ -n $spec ]] || { echo "error: $file has no '$name==<version>' pin" >&2; exit 1; }
  specs+=("$spec")
done

tmp=$(mktemp -d "${DEST%/}.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  platforms+=(--platform "${tag}_x86_64")
done
echo "downloading ${specs[*]} (Python 3.12, manylinux x86_64) ..."
"$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --abi cp312 --abi abi3 --abi none "${platforms[@]}" -d "$tmp" "${specs[@]}"

count=$(find "$tmp" -name '*.whl' | wc -l)
[[ $count -eq ${#specs[@]} ]] || { echo "error: expected ${#specs[@]} wheels, got $count: $(ls "$tmp")" >&2; exit 1; }
bytes=$(du -cb "$tmp"/*.whl | tail -1 | cut -f1)
if (( bytes > MAX_MB * 1024 * 1024 )); then
  echo "error: the wheels take $((bytes / 1024 / 1024)) MiB, over the ${MAX_MB} MiB that may travel" >&2
  exit 1
fi
rm -rf "$DEST"
mv "$tmp" "$DEST"
trap - EXIT
chmod 755 "$DEST"

echo "wheels in $DEST ($((bytes / 1024)) KiB):"
ls -l "$DEST" | awk 'NR > 1 {printf "  %8d KiB  %s\n", $5 / 1024, $9}'
# What the device tool sends: tracked + untracked-not-ignored files, plus the carried wheels (64 MiB cap).
tree=$(git ls-files -z --cached --others --exclude-standard 2>/dev/null | du -cb --files0-from=- 2>/dev/null \
       | tail -1 | cut -f1 || echo 0)
echo "working tree that travels: $(((tree + bytes) / 1024 / 1024)) MiB of 64 (wheels included)"
(( tree + bytes <= 64 * 1024 * 1024 )) || { echo "error: over the 64 MiB the device tool sends" >&2; exit 1; }
cat <<EOF

Carry it: run(carry=["$DEST"], ...). First line of the GPU command:
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $DEST/*.whl && export PYTHONPATH=/tmp/site\${PYTHONPATH:+:\$PYTHONPATH} || exit 1
EOF
