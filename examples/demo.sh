#!/usr/bin/env bash
# The main job on the embedded default: build examples/hello into a clip
# archive, mount it, read a file lazily, and print sizes and timings.
# Usage: examples/demo.sh [path/to/clipbuild]
set -euo pipefail
BIN="$(realpath "${1:-bin/clipbuild}")"
HERE="$(cd "$(dirname "$0")" && pwd)"
WORK="$(mktemp -d /tmp/clipbuild-demo-XXXXXX)"
IMAGE="localhost/clipbuild-demo-$$:latest"
MNT="$WORK/mnt"
MOUNT_PID=""

cleanup() {
  if [ -n "$MOUNT_PID" ] && kill -0 "$MOUNT_PID" 2>/dev/null; then
    kill -TERM "$MOUNT_PID"; wait "$MOUNT_PID" || true
  fi
  mountpoint -q "$MNT" 2>/dev/null && fusermount3 -u -z "$MNT" || true
  buildah rmi -f "$IMAGE" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: mounting needs root; run as root (sudo make demo)" >&2
  exit 1
fi

cp -r "$HERE/hello" "$WORK/ctx"
cp /bin/busybox "$WORK/ctx/busybox"
mkdir -p "$MNT"

echo "== build examples/hello"
"$BIN" build --json -t "$IMAGE" -o "$WORK/hello.clip" "$WORK/ctx" > "$WORK/result.json"
cat "$WORK/result.json"
echo
echo "== inspect"
"$BIN" inspect "$WORK/hello.clip"
echo
echo "== mount and read"
"$BIN" mount "$WORK/hello.clip" "$MNT" &
MOUNT_PID=$!
for _ in $(seq 1 100); do mountpoint -q "$MNT" && break; sleep 0.1; done
mountpoint -q "$MNT" || { echo "demo: mount did not come up" >&2; exit 1; }
start=$(date +%s%N)
content="$(cat "$MNT/app/hello.txt")"
end=$(date +%s%N)
echo "read /app/hello.txt in $(( (end - start) / 1000 )) us: $content"
ls -l "$MNT/app"
kill -TERM "$MOUNT_PID"; wait "$MOUNT_PID"; MOUNT_PID=""
echo
python3 - "$WORK/result.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"archive: {r['archive']} (clip v{r['clipVersion']})")
print(f"archive bytes: {r['archiveBytes']}  image layer bytes: {r['imageBytes']}  ratio: {r['archiveBytes']/max(r['imageBytes'],1):.4f}")
for s in r["stages"]:
    print(f"  {s['name']:<8} {s['seconds']:.3f}s")
if r.get("fallbackReason"):
    print("fell back to v1:", r["fallbackReason"])
PY
