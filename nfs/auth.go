package nfs

import (
	"zerofs/fs"
)

// nobody is the identity of AUTH_NONE callers and of squashed root.
const nobody = 65534

// authenticate turns a call's credential into the identity package fs checks
// permissions against. NFS carries no real authentication (DESIGN.md: bind
// to trusted networks); AUTH_UNIX is the client's word for who is calling.
//
// Choices where RFC 5531 leaves one:
//   - AUTH_NONE maps to nobody (65534:65534): anonymous access, as knfsd's
//     anonuid/anongid.
//   - A malformed AUTH_UNIX body, or more than 16 groups, is AUTH_BADCRED.
//   - AUTH_SHORT is AUTH_REJECTEDCRED: we never hand out short credentials,
//     so any is unknown here, and REJECTEDCRED tells the client to send its
//     full credential again (RFC 5531 section 9.2's use of it).
//   - Any other flavor (AUTH_DH, RPCSEC_GSS, unknown numbers) is
//     AUTH_TOOWEAK: well formed, but not a flavor this server accepts.
//   - The verifier of AUTH_NONE and AUTH_UNIX calls must be AUTH_NONE;
//     anything else is AUTH_BADVERF, as knfsd does.
//
// With rootSquash, uid 0 becomes nobody, and so do gid 0 and group 0 among
// the supplementary groups, whoever sends them (knfsd's root_squash squashes
// the group too: otherwise a client keeps group-0 access to everything root's
// group owns).
func authenticate(h *callHeader, rootSquash bool) (*fs.Cred, authStat) {
	var c fs.Cred
	switch h.cred.flavor {
	case authNone:
		c = fs.Cred{Uid: nobody, Gid: nobody}
	case authSys:
		u, err := parseAuthUnix(h.cred.body)
		if err != nil {
			return nil, authBadCred
		}
		c = fs.Cred{Uid: u.uid, Gid: u.gid, Groups: u.gids}
	case authShort:
		return nil, authRejectedCred
	default:
		return nil, authTooWeak
	}
	if h.verf.flavor != authNone {
		return nil, authBadVerf
	}
	if rootSquash {
		if c.Uid == 0 {
			c.Uid = nobody
		}
		if c.Gid == 0 {
			c.Gid = nobody
		}
		for i, g := range c.Groups {
			if g == 0 {
				c.Groups[i] = nobody
			}
		}
	}
	return &c, authOK
}
