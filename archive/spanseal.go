package archive

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Span seals. Hashing a 1 MiB span costs about 0.6 ms of CPU, so a
// mount that reads a gigabyte of cached spans would spend most of a
// second of each start re-checking bytes an earlier process checked
// already. A span file that has been checked (hashed on disk, or written
// from bytes that were) therefore carries a seal, an extended attribute
// naming its digest, size and modification time at the check. A process
// that finds the seal matching the file's digest (its name), size and
// modification time trusts the file without hashing it, as the process
// that checked it does for its own life (spanFiles); any write to the
// file changes its modification time and so breaks the seal, and the
// file is hashed again at its next use. Where the filesystem keeps no
// user extended attributes, every process hashes each span once, as
// before.
const sealXattr = "user.clipbuild.span"

// sealText is the seal of span digest sha whose file has state st.
func sealText(sha string, st os.FileInfo) string {
	return sha + " " + strconv.FormatInt(st.Size(), 10) + " " + strconv.FormatInt(st.ModTime().UnixNano(), 10)
}

// sealed reports whether f, a span file of digest sha in state st,
// carries the seal of that state.
func sealed(f *os.File, sha string, st os.FileInfo) bool {
	var buf [128]byte
	want := sealText(sha, st)
	n, err := unix.Fgetxattr(int(f.Fd()), sealXattr, buf[:])
	return err == nil && n == len(want) && string(buf[:n]) == want
}

// seal records on f that its bytes, in state st (taken before they were
// checked), were checked to be span sha's, and reports whether the file
// is still in that state (nothing wrote to it since). A seal that cannot
// be set (a filesystem without user extended attributes, a file of
// another user's) is no error: the next process hashes the file again.
func seal(f *os.File, sha string, st os.FileInfo) bool {
	_ = unix.Fsetxattr(int(f.Fd()), sealXattr, []byte(sealText(sha, st)), 0)
	return unchanged(f, st)
}

// unchanged reports whether f still has st's size and modification time.
func unchanged(f *os.File, st os.FileInfo) bool {
	now, err := f.Stat()
	return err == nil && now.Size() == st.Size() && now.ModTime().Equal(st.ModTime())
}
