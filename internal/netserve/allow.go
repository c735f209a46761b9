package netserve

import (
	"net"
	"net/netip"
)

// Allowed reports whether a client at a may connect to a server limited to
// networks (the servers' allowed_networks). No networks means loopback
// only: the safe default for a server whose protocol has no
// authentication of its own. IPv4-mapped IPv6 addresses count as IPv4.
func Allowed(networks []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	if len(networks) == 0 {
		return a.IsLoopback()
	}
	for _, p := range networks {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// RemoteAddr is nc's peer address (the zero AddrPort if it has none).
func RemoteAddr(nc net.Conn) netip.AddrPort {
	if ta, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(nc.RemoteAddr().String())
	return ap
}
