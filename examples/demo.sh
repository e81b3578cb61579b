#!/usr/bin/env bash
# The main job on the embedded default: serve the embedded registry under a
# temporary root, build examples/hello into a v2 clip archive through it,
# mount the archive, read one file lazily, and print sizes and timings.
# Everything it starts is stopped, and everything it makes removed, on exit.
# Usage: examples/demo.sh [path/to/clipbuild]
set -euo pipefail
BIN="$(realpath "${1:-bin/clipbuild}")"
HERE="$(cd "$(dirname "$0")" && pwd)"
WORK="$(mktemp -d /tmp/clipbuild-demo-XXXXXX)"
IMAGE="localhost/clipbuild-demo-$$:latest"
MNT="$WORK/mnt"
CACHE="$WORK/cache"
SPANS="$WORK/spans"
STATS="$WORK/mount-stats.json"
MOUNT_PID=""
REGISTRY_PID=""

cleanup() {
  if [ -n "$MOUNT_PID" ] && kill -0 "$MOUNT_PID" 2>/dev/null; then
    kill -TERM "$MOUNT_PID"; wait "$MOUNT_PID" || true
  fi
  if mountpoint -q "$MNT" 2>/dev/null; then fusermount3 -u -z "$MNT" || true; fi
  if [ -n "$REGISTRY_PID" ] && kill -0 "$REGISTRY_PID" 2>/dev/null; then
    kill -TERM "$REGISTRY_PID"; wait "$REGISTRY_PID" || true
  fi
  buildah rmi -f "$IMAGE" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: mounting needs root; run it as root (sudo make demo)" >&2
  exit 1
fi

cp -r "$HERE/hello" "$WORK/ctx"
cp /bin/busybox "$WORK/ctx/busybox"
mkdir -p "$MNT"

echo "== serve the embedded registry (root $WORK/registry)"
"$BIN" registry serve --addr 127.0.0.1:0 --root "$WORK/registry" 2> "$WORK/registry.log" &
REGISTRY_PID=$!
ADDR=""
for _ in $(seq 1 100); do
  ADDR="$(sed -n 's|.*registry serving on http://\([0-9.:]*\).*|\1|p' "$WORK/registry.log" | head -1)"
  [ -n "$ADDR" ] && break
  kill -0 "$REGISTRY_PID" 2>/dev/null || { cat "$WORK/registry.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$ADDR" ] || { echo "demo: registry did not start" >&2; cat "$WORK/registry.log" >&2; exit 1; }
echo "registry at $ADDR"

echo
echo "== build examples/hello as a v2 archive"
"$BIN" build --layers --clip-version 2 --registry "$ADDR/demo" --json \
  -t "$IMAGE" -o "$WORK/hello.clip" "$WORK/ctx" > "$WORK/result.json"
cat "$WORK/result.json"
echo
echo "== inspect"
"$BIN" inspect "$WORK/hello.clip"
echo
echo "== mount and read one file"
"$BIN" mount --cache-dir "$CACHE" --span-cache-dir "$SPANS" --stats "$STATS" "$WORK/hello.clip" "$MNT" &
MOUNT_PID=$!
for _ in $(seq 1 100); do mountpoint -q "$MNT" && break; sleep 0.1; done
mountpoint -q "$MNT" || { echo "demo: mount did not come up" >&2; exit 1; }
start=$(date +%s%N)
content="$(cat "$MNT/app/hello.txt")"
end=$(date +%s%N)
echo "read /app/hello.txt in $(( (end - start) / 1000 )) us: $content"
ls -l "$MNT/app" "$MNT/app/data"
kill -TERM "$MOUNT_PID"; wait "$MOUNT_PID"; MOUNT_PID=""
echo
python3 - "$WORK/result.json" "$STATS" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
st = json.load(open(sys.argv[2]))
print(f"archive: clip v{r['clipVersion']}, {r['archiveBytes']} bytes, pinned to {r['imageRef']}")
print(f"image layers: {r['imageBytes']} bytes; archive/image = {r['archiveBytes']/max(r['imageBytes'],1):.4%}")
print(f"bytes fetched from the registry for the mount (compressed, by range): {st['bytes_fetched']} in {st['requests']} request(s), {st['spans_fetched']} span(s)")
for s in r["stages"]:
    print(f"  {s['name']:<8} {s['seconds']:.3f}s")
if r.get("fallbackReason"):
    print("fell back to v1:", r["fallbackReason"])
PY
