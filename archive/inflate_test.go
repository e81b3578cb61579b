package archive

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"
	"time"
)

// memberOf returns b as one gzip member written with hdr, and its Member.
func memberOf(t *testing.T, b []byte, hdr gzip.Header) ([]byte, Member) {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Header = hdr
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return buf.Bytes(), Member{CLen: int64(buf.Len()), ULen: int64(len(b)), SHA256: hex.EncodeToString(sum[:])}
}

// TestInflateMemberHeaders inflates members whose headers carry each
// optional field, which the length of the header depends on, and refuses
// headers that are not gzip's.
func TestInflateMemberHeaders(t *testing.T) {
	data := bytes.Repeat([]byte("every header field shifts where the deflate stream starts\n"), 500)
	full := gzip.Header{Name: "layer.tar", Comment: "a comment", Extra: []byte("xx\x04\x00abcd"), ModTime: time.Unix(1700000000, 0)}
	for _, tt := range []struct {
		name string
		hdr  gzip.Header
	}{
		{"plain", gzip.Header{}},
		{"name", gzip.Header{Name: "layer.tar"}},
		{"comment", gzip.Header{Comment: "a comment"}},
		{"extra", gzip.Header{Extra: []byte("xx\x04\x00abcd")}},
		{"all", full},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src, m := memberOf(t, data, tt.hdr)
			got, err := InflateMember(src, m)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("InflateMember = %d bytes, %v; want the %d bytes written", len(got), err, len(data))
			}
		})
	}
	t.Run("header CRC", func(t *testing.T) {
		src := gzipFHCRC(t, data, 6)
		sum := sha256.Sum256(data)
		m := Member{CLen: int64(len(src)), ULen: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
		if got, err := InflateMember(src, m); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("InflateMember = %d bytes, %v; want the %d bytes written", len(got), err, len(data))
		}
		bad := bytes.Clone(src)
		bad[10] ^= 1 // the CRC-16 itself
		if got, err := InflateMember(bad, m); !errors.Is(err, errGzipHeader) || got != nil {
			t.Errorf("wrong header CRC: InflateMember = %d bytes, %v; want errGzipHeader", len(got), err)
		}
	})

	src, m := memberOf(t, data, full)
	for _, tt := range []struct {
		name string
		edit func(b []byte) []byte
	}{
		{"reserved flag", func(b []byte) []byte { b[3] |= 0x20; return b }},
		{"not deflate", func(b []byte) []byte { b[2] = 7; return b }},
		{"no magic", func(b []byte) []byte { b[1] = 0; return b }},
		{"extra longer than the member", func(b []byte) []byte { b[10], b[11] = 0xff, 0xff; return b }},
		{"name never ends", func(b []byte) []byte {
			hdr := []byte{0x1f, 0x8b, 8, gzFlagName, 0, 0, 0, 0, 0, 0xff}
			return append(hdr, bytes.Repeat([]byte{'a'}, len(b)-len(hdr))...)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := InflateMember(tt.edit(bytes.Clone(src)), m); !errors.Is(err, errGzipHeader) || got != nil {
				t.Errorf("InflateMember = %d bytes, %v; want errGzipHeader", len(got), err)
			}
		})
	}
}
