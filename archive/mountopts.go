package archive

// mountOptions configure MountArchive.
type mountOptions struct {
	allowOther bool
	mapOwner   bool
	uid, gid   uint32
}

// MountOption configures MountArchive.
type MountOption func(*mountOptions) error

// WithAllowOther lets users other than the one who mounts use the mount
// (FUSE's allow_other); for a user other than root, /etc/fuse.conf must
// say user_allow_other. The default is true for root, which mounts for
// container runtimes, and false for other users, whose mount only they
// can enter.
func WithAllowOther(allow bool) MountOption {
	return func(o *mountOptions) error {
		if allow {
			o.allowOther = true
		}
		return nil
	}
}

// WithOwnerMap presents the files and directories that the archive says
// uid 0 (gid 0) owns as owned by uid (gid): a user who mounts an archive
// for a rootless runtime, whose container root is that user, can then read
// the root-owned files that are not world-readable. Other owners are shown
// as the archive has them, as host ids. The default shows every owner as
// the archive has it.
func WithOwnerMap(uid, gid uint32) MountOption {
	return func(o *mountOptions) error {
		o.mapOwner, o.uid, o.gid = true, uid, gid
		return nil
	}
}

// mapRootOwner gives the nodes that root owns in the tree under d the
// owner o names, once per inode (hard links share theirs).
func (o mountOptions) mapRootOwner(d *fsNode) {
	if !o.mapOwner {
		return
	}
	seen := map[*fsNode]bool{}
	var walk func(n *fsNode)
	walk = func(n *fsNode) {
		if seen[n] {
			return
		}
		seen[n] = true
		if n.attr.Uid == 0 {
			n.attr.Uid = o.uid
		}
		if n.attr.Gid == 0 {
			n.attr.Gid = o.gid
		}
		for _, c := range n.children {
			walk(c.node)
		}
	}
	walk(d)
}
