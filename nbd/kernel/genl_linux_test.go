package kernel

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// The attribute layout the kernel parses for NBD_CMD_CONNECT: a u64, a
// string and a nested list of nested items, each padded to 4 bytes.
func TestAttrsRoundTrip(t *testing.T) {
	as := []attr{
		u64Attr(attrSizeBytes, 1<<30),
		strAttr(attrBackendIdentifier, "zerofs:h:1/d"), // 13 bytes with NUL: padded
		u32Attr(attrIndex, 7),
		{typ: attrSockets, nested: []attr{
			{typ: sockItem, nested: []attr{u32Attr(sockFD, 3)}},
			{typ: sockItem, nested: []attr{u32Attr(sockFD, 4)}},
		}},
	}
	b := appendAttrs(nil, as)
	if len(b)%4 != 0 {
		t.Fatalf("encoded length %d is not 4-aligned", len(b))
	}
	m, err := parseAttrs(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := binary.NativeEndian.Uint64(m[attrSizeBytes]); got != 1<<30 {
		t.Errorf("size %d", got)
	}
	if got := m[attrBackendIdentifier]; !bytes.Equal(got, []byte("zerofs:h:1/d\x00")) {
		t.Errorf("identifier %q", got)
	}
	if got := binary.NativeEndian.Uint32(m[attrIndex]); got != 7 {
		t.Errorf("index %d", got)
	}
	items, err := parseAttrList(m[attrSockets])
	if err != nil || len(items) != 2 {
		t.Fatalf("sockets: %d items, %v", len(items), err)
	}
	for i, it := range items {
		fd, err := parseAttrs(it)
		if err != nil {
			t.Fatal(err)
		}
		if got := binary.NativeEndian.Uint32(fd[sockFD]); got != uint32(3+i) {
			t.Errorf("socket %d: fd %d", i, got)
		}
	}
}

func TestParseAttrsRejectsBadLengths(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"short header", []byte{8, 0}},
		{"length below header", []byte{2, 0, 1, 0}},
		{"length past end", []byte{12, 0, 1, 0, 0, 0, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := parseAttrs(tc.in); err == nil {
				t.Error("parseAttrs accepted it")
			}
			if _, err := parseAttrList(tc.in); err == nil {
				t.Error("parseAttrList accepted it")
			}
		})
	}
}

// Resolving a family exercises the request path (header, ACK, reply
// parsing) against the real kernel without privileges or the nbd module:
// nlctrl always exists.
func TestFamilyResolution(t *testing.T) {
	c, err := dialGenl()
	if err != nil {
		t.Skipf("no generic netlink here: %v", err)
	}
	defer c.Close()
	id, groups, err := c.family("nlctrl")
	if err != nil {
		t.Fatal(err)
	}
	if id != 0x10 { // GENL_ID_CTRL
		t.Errorf("nlctrl id %d, want 16", id)
	}
	if _, ok := groups["notify"]; !ok {
		t.Errorf("nlctrl groups %v lack notify", groups)
	}
	if _, _, err := c.family("no-such-family-zerofs"); err == nil {
		t.Error("resolved a family that does not exist")
	}
}

// FuzzParseAttrs: replies and multicast messages come from the kernel, but
// a decoder never trusts its input.
func FuzzParseAttrs(f *testing.F) {
	f.Add(appendAttrs(nil, []attr{u32Attr(attrIndex, 1), {typ: attrDeviceList, nested: []attr{
		{typ: 1, nested: []attr{u32Attr(deviceIndex, 1), {typ: deviceConnected, data: []byte{1}}}}}}}))
	f.Add([]byte{4, 0, 1, 0})
	f.Add([]byte{0xff, 0xff, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseAttrs(b)
		if err != nil {
			return
		}
		for _, v := range m {
			if items, err := parseAttrList(v); err == nil {
				for _, it := range items {
					parseAttrs(it)
				}
			}
		}
	})
}
