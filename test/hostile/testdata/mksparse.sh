#!/bin/sh
# mksparse.sh regenerates the sparse-file layers in this directory with GNU
# tar (Go's archive/tar reads sparse files but cannot write them). Each
# layer holds the same files, in one of GNU tar's sparse encodings:
#
#   sparse-gnu.tar      --format=gnu (type 'S', the map in the header)
#   sparse-pax-0.0.tar  --format=posix --sparse-version=0.0 (GNU.sparse.offset/numbytes records)
#   sparse-pax-0.1.tar  --format=posix --sparse-version=0.1 (GNU.sparse.map record)
#   sparse-pax-1.0.tar  --format=posix --sparse-version=1.0 (the map at the start of the data)
#   sparse-mixed.tar    both kinds in one layer: mixed/gnu/* in --format=gnu, then mixed/pax/*
#                       in --format=posix (1.0), the same files as sparse/*
#
# The files (SparseFiles in sparse.go describes the same bytes):
#
#   sparse/hole-start   256 KiB: a hole, then 1000 bytes at 200000, then a hole to the end
#   sparse/hole-middle  3000 bytes at 0, a hole, 3000 bytes at 150000 (the end)
#   sparse/hole-end     3000 bytes at 0, then a hole to 262144
#   sparse/all-hole     100000 bytes, all hole
#   sparse/after        a regular file after the sparse ones
#
# Run it from this directory: sh mksparse.sh. The 0.1 and 1.0 layers name
# their stand-in header GNUSparseFile.<pid>, so they differ from run to run.
set -eu
tar --version | head -n 1 | grep -q 'GNU tar' || { echo "mksparse.sh needs GNU tar" >&2; exit 1; }
out=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/sparse"
cd "$work/sparse"
pattern() { yes "$1" | head -c "$2"; }
truncate -s 262144 hole-start
pattern hole-start 1000 | dd of=hole-start bs=1 seek=200000 conv=notrunc status=none
pattern hole-middle-a 3000 | dd of=hole-middle bs=1 status=none
pattern hole-middle-b 3000 | dd of=hole-middle bs=1 seek=150000 conv=notrunc status=none
pattern hole-end 3000 | dd of=hole-end bs=1 status=none
truncate -s 262144 hole-end
truncate -s 100000 all-hole
printf 'a regular file after the sparse ones\n' >after
chmod 0644 hole-start hole-middle hole-end all-hole after
cd "$work"
touch -d @1700000000 sparse sparse/*
chmod 0755 sparse
list() { for n in hole-start hole-middle hole-end all-hole after; do printf '%s/%s ' "$1" "$n"; done; }
files="sparse/ $(list sparse)"
common="--sparse --no-recursion --owner=0 --group=0 --numeric-owner --mtime=@1700000000"
tar -cf "$out/sparse-gnu.tar" $common --format=gnu $files
for v in 0.0 0.1 1.0; do
	# Fixed PAX header names and no atime/ctime records: only the
	# GNUSparseFile.<pid> names change from one run to the next.
	tar -cf "$out/sparse-pax-$v.tar" $common --format=posix --sparse-version=$v \
		--pax-option='exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime' $files
done
mkdir mixed
cp -a --sparse=always sparse mixed/gnu
cp -a --sparse=always sparse mixed/pax
touch -d @1700000000 mixed
tar -cf "$out/sparse-mixed.tar" $common --format=gnu mixed/ mixed/gnu/ $(list mixed/gnu)
tar -cf "$work/pax.tar" $common --format=posix --sparse-version=1.0 \
	--pax-option='exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime' mixed/pax/ $(list mixed/pax)
tar -Af "$out/sparse-mixed.tar" "$work/pax.tar"
