package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// A minimal generic netlink client: just what the nbd family needs (one
// request, its reply and ACK; one multicast group). Netlink messages are in
// host byte order.

const (
	genlHdrLen = 4
	nlaHdrLen  = 4
)

// attr is one netlink attribute: a typed value, or nested attributes.
type attr struct {
	typ    uint16
	data   []byte
	nested []attr
}

func u32Attr(t uint16, v uint32) attr {
	return attr{typ: t, data: binary.NativeEndian.AppendUint32(nil, v)}
}

func u64Attr(t uint16, v uint64) attr {
	return attr{typ: t, data: binary.NativeEndian.AppendUint64(nil, v)}
}

func strAttr(t uint16, s string) attr { return attr{typ: t, data: append([]byte(s), 0)} }

func align4(n int) int { return (n + 3) &^ 3 }

func appendAttrs(b []byte, as []attr) []byte {
	for _, a := range as {
		start := len(b)
		b = append(b, 0, 0, 0, 0)
		binary.NativeEndian.PutUint16(b[start+2:], a.typ)
		if a.nested != nil {
			b = appendAttrs(b, a.nested)
		} else {
			b = append(b, a.data...)
		}
		binary.NativeEndian.PutUint16(b[start:], uint16(len(b)-start))
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
	}
	return b
}

// parseAttrs splits b into attributes by type; the last of a type wins.
func parseAttrs(b []byte) (map[uint16][]byte, error) {
	out := map[uint16][]byte{}
	err := walkAttrs(b, func(typ uint16, data []byte) { out[typ] = data })
	return out, err
}

// parseAttrList returns nested attributes in order (for lists, where every
// element has the same type).
func parseAttrList(b []byte) ([][]byte, error) {
	var out [][]byte
	err := walkAttrs(b, func(_ uint16, data []byte) { out = append(out, data) })
	return out, err
}

// walkAttrs calls fn for each attribute of b, its type without the nested
// and byte-order flags.
func walkAttrs(b []byte, fn func(typ uint16, data []byte)) error {
	for len(b) > 0 {
		if len(b) < nlaHdrLen {
			return errors.New("netlink: truncated attribute")
		}
		n := int(binary.NativeEndian.Uint16(b))
		if n < nlaHdrLen || n > len(b) {
			return fmt.Errorf("netlink: attribute length %d of %d", n, len(b))
		}
		fn(binary.NativeEndian.Uint16(b[2:])&^(unix.NLA_F_NESTED|unix.NLA_F_NET_BYTEORDER), b[nlaHdrLen:n])
		if align4(n) >= len(b) {
			break
		}
		b = b[align4(n):]
	}
	return nil
}

// genlConn is a NETLINK_GENERIC socket. Requests are serialized: each waits
// for its own ACK, so replies never interleave.
type genlConn struct {
	mu  sync.Mutex
	fd  int
	seq uint32
}

func dialGenl() (*genlConn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_GENERIC)
	if err != nil {
		return nil, os.NewSyscallError("socket(AF_NETLINK)", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("bind(AF_NETLINK)", err)
	}
	return &genlConn{fd: fd}, nil
}

func (c *genlConn) Close() error { return unix.Close(c.fd) }

// request sends one generic netlink request with NLM_F_ACK and returns the
// attributes of the reply messages that came before the ACK. A negative
// errno in the ACK is returned as a syscall.Errno, so callers can test for
// EBUSY, ENOSPC and friends with errors.Is.
func (c *genlConn) request(family uint16, cmd, version uint8, as []attr) ([]map[uint16][]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	seq := c.seq
	b := make([]byte, unix.NLMSG_HDRLEN, 256)
	b = append(b, cmd, version, 0, 0)
	b = appendAttrs(b, as)
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], family)
	binary.NativeEndian.PutUint16(b[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(b[8:], seq)
	if err := unix.Sendto(c.fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, os.NewSyscallError("sendto(netlink)", err)
	}
	var replies []map[uint16][]byte
	for {
		// A fresh buffer per datagram: the replies' attributes point into it.
		buf := make([]byte, 64<<10)
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, os.NewSyscallError("recvfrom(netlink)", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, fmt.Errorf("netlink: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != seq {
				continue
			}
			switch m.Header.Type {
			case unix.NLMSG_ERROR:
				if len(m.Data) < 4 {
					return nil, errors.New("netlink: short error message")
				}
				if e := int32(binary.NativeEndian.Uint32(m.Data)); e != 0 {
					return replies, syscall.Errno(-e)
				}
				return replies, nil
			case unix.NLMSG_DONE:
				return replies, nil
			default:
				if len(m.Data) < genlHdrLen {
					return nil, errors.New("netlink: short generic message")
				}
				a, err := parseAttrs(m.Data[genlHdrLen:])
				if err != nil {
					return nil, err
				}
				replies = append(replies, a)
			}
		}
	}
}

// family resolves a generic netlink family name to its id and the ids of
// its multicast groups.
func (c *genlConn) family(name string) (uint16, map[string]uint32, error) {
	replies, err := c.request(unix.GENL_ID_CTRL, unix.CTRL_CMD_GETFAMILY, 1,
		[]attr{strAttr(unix.CTRL_ATTR_FAMILY_NAME, name)})
	if err != nil {
		return 0, nil, err
	}
	for _, r := range replies {
		id, ok := r[unix.CTRL_ATTR_FAMILY_ID]
		if !ok || len(id) < 2 {
			continue
		}
		groups := map[string]uint32{}
		if list, ok := r[unix.CTRL_ATTR_MCAST_GROUPS]; ok {
			items, err := parseAttrList(list)
			if err != nil {
				return 0, nil, err
			}
			for _, it := range items {
				g, err := parseAttrs(it)
				if err != nil {
					return 0, nil, err
				}
				gname, gid := g[unix.CTRL_ATTR_MCAST_GRP_NAME], g[unix.CTRL_ATTR_MCAST_GRP_ID]
				if len(gname) > 0 && len(gid) == 4 {
					groups[string(gname[:len(gname)-1])] = binary.NativeEndian.Uint32(gid)
				}
			}
		}
		return binary.NativeEndian.Uint16(id), groups, nil
	}
	return 0, nil, fmt.Errorf("netlink: no id for family %q", name)
}

// join subscribes the socket to a multicast group.
func (c *genlConn) join(group uint32) error {
	return os.NewSyscallError("setsockopt(NETLINK_ADD_MEMBERSHIP)",
		unix.SetsockoptInt(c.fd, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, int(group)))
}

// receive reads multicast messages and returns each one's command and
// attributes, which point into buf. It blocks; closing the socket from another goroutine does not
// reliably wake it, so watchers use a socket of their own with a receive
// timeout (see Device.watch).
func (c *genlConn) receive(buf []byte) ([]genlMsg, error) {
	n, _, err := unix.Recvfrom(c.fd, buf, 0)
	if err != nil {
		return nil, err
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	var out []genlMsg
	for _, m := range msgs {
		if len(m.Data) < genlHdrLen || m.Header.Type == unix.NLMSG_ERROR || m.Header.Type == unix.NLMSG_DONE {
			continue
		}
		a, err := parseAttrs(m.Data[genlHdrLen:])
		if err != nil {
			return nil, err
		}
		out = append(out, genlMsg{cmd: m.Data[0], attrs: a})
	}
	return out, nil
}

type genlMsg struct {
	cmd   uint8
	attrs map[uint16][]byte
}
