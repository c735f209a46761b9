package nbd

import (
	"fmt"
	"path"
	"strings"
)

// Who may attach what. Three checks, in the order a connection meets them:
//
//  1. Its address must be in Options.AllowedNetworks (Serve closes it at
//     accept otherwise, before a byte is read).
//  2. With TLS required (TLSRequire), nothing but NBD_OPT_STARTTLS and
//     NBD_OPT_ABORT is answered before TLS; a client certificate is
//     verified by the TLS configuration (tls_verify_peer), so a session
//     that completed its TLS handshake has a verified identity.
//  3. Options.Access, if it has rules, decides per export from that
//     identity: exports a client may not use are left out of NBD_OPT_LIST
//     and refused at NBD_OPT_INFO/GO (NBD_REP_ERR_POLICY) and
//     NBD_OPT_EXPORT_NAME (the connection is closed).
//
// A client without a verified certificate (plaintext, or TLS without
// tls_verify_peer) has no identity and matches no rule: with rules
// configured it can use nothing. With no rules, every client that passed
// 1 and 2 may use every export.

// AccessRule lets clients whose certificate names match Client use the
// exports matching any of Exports. Both are path.Match patterns ("db-*",
// "*"); a certificate's names are its subject CN and its DNS, email and URI
// subject alternative names, matched without regard to case. Export names
// are matched exactly.
type AccessRule struct {
	Client  string
	Exports []string
}

// Access is a set of rules; a client may use an export if any rule allows
// it. The zero value (and nil) has no rules and allows everything.
type Access struct {
	Rules []AccessRule
}

// NewAccess checks the patterns of rules (a malformed pattern would
// otherwise match nothing, silently).
func NewAccess(rules []AccessRule) (*Access, error) {
	for i, r := range rules {
		if r.Client == "" {
			return nil, fmt.Errorf("access rule %d: client is empty", i+1)
		}
		if _, err := path.Match(r.Client, ""); err != nil {
			return nil, fmt.Errorf("access rule %d: client pattern %q: %w", i+1, r.Client, err)
		}
		if len(r.Exports) == 0 {
			return nil, fmt.Errorf("access rule %d (client %q): exports is empty", i+1, r.Client)
		}
		for _, e := range r.Exports {
			if _, err := path.Match(e, ""); err != nil {
				return nil, fmt.Errorf("access rule %d (client %q): export pattern %q: %w", i+1, r.Client, e, err)
			}
		}
	}
	return &Access{Rules: rules}, nil
}

// restricted reports whether any rule is configured.
func (a *Access) restricted() bool { return a != nil && len(a.Rules) > 0 }

// allows reports whether a client with the verified names may use export.
func (a *Access) allows(names []string, export string) bool {
	if !a.restricted() {
		return true
	}
	for _, r := range a.Rules {
		if !matchAny(r.Client, names) {
			continue
		}
		for _, e := range r.Exports {
			if ok, _ := path.Match(e, export); ok {
				return true
			}
		}
	}
	return false
}

// matchAny reports whether pattern matches one of names. Case does not
// matter: DNS names, the usual certificate names, ignore it, and a rule
// that refused DB-A.example.com for db-a.example.com would only surprise.
func matchAny(pattern string, names []string) bool {
	for _, n := range names {
		if ok, _ := path.Match(strings.ToLower(pattern), strings.ToLower(n)); ok {
			return true
		}
	}
	return false
}

// peerName is how logs name a client: its verified certificate names, or
// that it has none.
func peerName(names []string) string {
	if len(names) == 0 {
		return "no verified certificate"
	}
	return "certificate " + strings.Join(names, ", ")
}
