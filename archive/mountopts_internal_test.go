package archive

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestMapRootOwner checks that WithOwnerMap gives what uid and gid 0 own
// to the caller, leaves other owners as they are, and maps a hard-linked
// inode once under all its names.
func TestMapRootOwner(t *testing.T) {
	type owner struct{ Uid, Gid uint32 }
	build := func() (*fsNode, map[string]*fsNode) {
		n := func(uid, gid uint32) *fsNode {
			node := &fsNode{}
			node.attr.Uid, node.attr.Gid = uid, gid
			return node
		}
		root, sub := n(0, 0), n(0, 1000)
		rootFile, userFile, mixed, link := n(0, 0), n(1000, 1000), n(123, 0), n(0, 0)
		sub.children = []fsChild{{"user", userFile}, {"mixed", mixed}, {"link-2", link}}
		root.children = []fsChild{{"sub", sub}, {"file", rootFile}, {"link-1", link}}
		return root, map[string]*fsNode{"/": root, "sub": sub, "file": rootFile, "sub/user": userFile, "sub/mixed": mixed, "link": link}
	}
	owners := func(nodes map[string]*fsNode) map[string]owner {
		got := map[string]owner{}
		for p, n := range nodes {
			got[p] = owner{n.attr.Uid, n.attr.Gid}
		}
		return got
	}
	for _, tc := range []struct {
		name string
		opts []MountOption
		want map[string]owner
	}{
		{
			name: "default keeps owners",
			want: map[string]owner{"/": {0, 0}, "sub": {0, 1000}, "file": {0, 0}, "sub/user": {1000, 1000}, "sub/mixed": {123, 0}, "link": {0, 0}},
		},
		{
			name: "map to caller",
			opts: []MountOption{WithOwnerMap(1001, 1002)},
			want: map[string]owner{"/": {1001, 1002}, "sub": {1001, 1000}, "file": {1001, 1002}, "sub/user": {1000, 1000}, "sub/mixed": {123, 1002}, "link": {1001, 1002}},
		},
		{
			name: "map to root is no change",
			opts: []MountOption{WithOwnerMap(0, 0)},
			want: map[string]owner{"/": {0, 0}, "sub": {0, 1000}, "file": {0, 0}, "sub/user": {1000, 1000}, "sub/mixed": {123, 0}, "link": {0, 0}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mo mountOptions
			for _, o := range tc.opts {
				if err := o(&mo); err != nil {
					t.Fatal(err)
				}
			}
			root, nodes := build()
			mo.mapRootOwner(root)
			if d := cmp.Diff(tc.want, owners(nodes)); d != "" {
				t.Errorf("owners after mapping (-want +got):\n%s", d)
			}
		})
	}
}

// TestWithAllowOther checks that the option only ever adds allow_other:
// root's default stays on.
func TestWithAllowOther(t *testing.T) {
	for _, tc := range []struct {
		name          string
		start, option bool
		want          bool
	}{
		{"user default", false, false, false},
		{"user asks", false, true, true},
		{"root default", true, false, true},
		{"root asks", true, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mo := mountOptions{allowOther: tc.start}
			if err := WithAllowOther(tc.option)(&mo); err != nil {
				t.Fatal(err)
			}
			if got := mo.allowOther; got != tc.want {
				t.Errorf("allowOther: got %t, want %t", got, tc.want)
			}
		})
	}
}
