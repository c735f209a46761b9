package pki

import (
	"context"
	"os"
	"path/filepath"
	"time"
)

// Watch reloads the certificates when one of their files changes, until ctx
// ends. It polls os.Stat of the files every interval (a second if
// interval <= 0) and compares size, modification time and identity (device
// and inode): cheap, and unlike inotify it sees files that are replaced by
// a rename, or through a symlink swapped as Kubernetes updates a mounted
// secret. A failed reload is logged at Error level with the file at fault
// and retried when the files change again; a successful one is logged at
// Info by Reload.
//
// A renewal tool usually writes the certificate and the key one after the
// other, so a poll between the two sees a key that does not match: that
// reload fails, and the next poll, which sees the second file changed,
// loads both.
func (s *Server) Watch(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = time.Second
	}
	// Compare with what the certificates in use were read from, not with
	// the files now: a change between Load and Watch is a change too.
	loaded := s.cur.Load()
	last := loaded.files
	expiredLogged := false
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if cur := s.cur.Load(); cur != loaded {
			// Reloaded elsewhere (SIGHUP): compare with what that read,
			// or the same change would be loaded twice.
			loaded, last, expiredLogged = cur, cur.files, false
		}
		if !expiredLogged && s.opts.Now().After(loaded.status.NotAfter) {
			// Every new handshake fails from now on, and clients see only
			// a failed handshake: say why, once.
			expiredLogged = true
			s.opts.Logger.Error("pki: the server certificate has expired: every new TLS connection fails; renew it",
				"file", filepath.Join(s.opts.Dir, ServerCertFile), "not_after", loaded.status.NotAfter)
		}
		paths := make([]string, len(last))
		for i, f := range last {
			paths[i] = f.path
		}
		now := stampFiles(paths)
		changed := changedFiles(last, now)
		if len(changed) == 0 {
			continue
		}
		last = now
		if err := s.Reload(); err != nil {
			s.opts.Logger.Error("pki: reloading TLS certificates failed; still serving the previous ones",
				"file", ErrorFile(err), "changed", changed, "err", err)
		}
	}
}

// fileStamp is what os.Stat said of a file: nil info if it failed (missing).
type fileStamp struct {
	path string
	info os.FileInfo
}

func stampFiles(paths []string) []fileStamp {
	st := make([]fileStamp, len(paths))
	for i, p := range paths {
		st[i].path = p
		if fi, err := os.Stat(p); err == nil {
			st[i].info = fi
		}
	}
	return st
}

// changedFiles returns the paths whose stamps differ. a and b stamp the same
// paths in the same order.
func changedFiles(a, b []fileStamp) []string {
	var changed []string
	for i := range a {
		x, y := a[i].info, b[i].info
		same := x == nil && y == nil ||
			x != nil && y != nil && x.Size() == y.Size() && x.ModTime().Equal(y.ModTime()) && os.SameFile(x, y)
		if !same {
			changed = append(changed, a[i].path)
		}
	}
	return changed
}
