package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/beam-cloud/clip/pkg/common"
	digest "github.com/opencontainers/go-digest"

	"github.com/clipbuild/clipbuild/archive"
)

// forgedV2Archive writes a v2 archive of one file whose layer sits at host,
// with a trailer that claims plain HTTP, and saves credentials for host
// where `buildah login` would.
func forgedV2Archive(t *testing.T, host string) string {
	t.Helper()
	run := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", run)
	t.Setenv("HOME", t.TempDir())
	t.Setenv("REGISTRY_AUTH_FILE", "")
	if err := os.MkdirAll(filepath.Join(run, "containers"), 0o700); err != nil {
		t.Fatal(err)
	}
	auth := `{"auths":{"` + host + `":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("user:pass")) + `"}}}`
	if err := os.WriteFile(filepath.Join(run, "containers", "auth.json"), []byte(auth), 0o600); err != nil {
		t.Fatal(err)
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	if err := tw.WriteHeader(&tar.Header{Name: "f.txt", Typeflag: tar.TypeReg, Mode: 0o644, Size: 2, ModTime: time.Unix(1700000000, 0)}); err != nil {
		t.Fatal(err)
	}
	tw.Write([]byte("hi"))
	tw.Close()
	dg := digest.FromBytes(layer.Bytes()).String()
	ix := archive.NewIndexer()
	if err := ix.AddLayer(context.Background(), dg, bytes.NewReader(layer.Bytes())); err != nil {
		t.Fatal(err)
	}
	oci := &common.OCIStorageInfo{RegistryURL: host, Repository: "victim/img", Reference: "1", Layers: []string{dg},
		DecompressedHashByLayer: map[string]string{dg: digest.FromBytes(layer.Bytes()).Encoded()}}
	p := filepath.Join(t.TempDir(), "forged.clip")
	err := archive.WriteFileAtomic(p, func(f *os.File) error {
		return archive.WriteV2(f, ix.Nodes(), oci, archive.Trailer{Tool: "clipbuild", PlainHTTP: true, ImageRef: host + "/victim/img@" + dg})
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestVerifyIgnoresForgedPlainHTTP checks that verify (which opens an
// archive's storage as mount does) does not take the archive's word for
// plain HTTP to a registry that is not loopback, and that --tls-verify=false
// still allows it. The host is one go-containerregistry would try plain HTTP
// on by itself; nothing need listen there.
func TestVerifyIgnoresForgedPlainHTTP(t *testing.T) {
	const host = "registry.localhost:1"
	forged := forgedV2Archive(t, host)
	rootfs := t.TempDir()
	_, _, err := execute(t, "verify", forged, "--rootfs", rootfs, "--cache-dir", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "refusing plain HTTP to "+host) {
		t.Errorf("verify of a forged archive = %v, want the plain-HTTP attempt refused", err)
	}
	_, _, err = execute(t, "verify", forged, "--rootfs", rootfs, "--cache-dir", t.TempDir(), "--tls-verify=false")
	if err == nil || strings.Contains(err.Error(), "refusing plain HTTP") {
		t.Errorf("verify --tls-verify=false = %v, want plain HTTP tried (and failing, nothing listens)", err)
	}
}
