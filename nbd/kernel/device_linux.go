package kernel

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"zerofs/nbd"
)

// Attribute and command numbers of the nbd generic netlink family, from the
// kernel's include/uapi/linux/nbd-netlink.h (the family since Linux 4.12; the
// backend identifier, which adoption and the status checks rely on, is
// younger: tested on Debian 12's 6.1).
const (
	cmdConnect     = 1
	cmdDisconnect  = 2
	cmdReconfigure = 3
	cmdLinkDead    = 4
	cmdStatus      = 5

	attrIndex             = 1
	attrSizeBytes         = 2
	attrBlockSizeBytes    = 3
	attrTimeout           = 4
	attrServerFlags       = 5
	attrSockets           = 7
	attrDeadConnTimeout   = 8
	attrDeviceList        = 9
	attrBackendIdentifier = 10

	deviceIndex     = 1
	deviceConnected = 2
	sockItem        = 1
	sockFD          = 1

	familyName  = "nbd"
	familyVer   = 1
	mcastGroup  = "nbd_mc_group"
	statusEvery = 5 * time.Second
	adoptWait   = 10 * time.Second
)

// Attach connects the export to a kernel nbd device and returns it; Keep
// then keeps it connected. When o.Index names a device that is already
// connected to this same export (an earlier `zerofs nbd attach` that
// exited without detaching), Attach adopts it instead of failing.
func Attach(ctx context.Context, o Options) (_ *Device, err error) {
	o = o.withDefaults()
	c, err := dialGenl()
	if err != nil {
		return nil, err
	}
	d := &Device{o: o, c: c, Index: o.Index}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	fam, groups, err := nbdFamily(c)
	if err != nil {
		return nil, err
	}
	d.family = fam
	// Subscribe before connecting, so a connection that dies at once is
	// not missed.
	if d.watch, err = d.subscribe(groups); err != nil {
		return nil, err
	}
	conns, info, err := dialAll(ctx, o, o.Connections)
	if err != nil {
		return nil, err
	}
	d.Size, d.ReadOnly = info.Size, info.ReadOnly()
	as := []attr{
		u64Attr(attrSizeBytes, info.Size),
		u64Attr(attrBlockSizeBytes, uint64(o.BlockSize)),
		u64Attr(attrServerFlags, uint64(info.Flags)),
		u64Attr(attrTimeout, uint64(o.Timeout/time.Second)),
		u64Attr(attrDeadConnTimeout, uint64(o.DeadTimeout/time.Second)),
		strAttr(attrBackendIdentifier, o.identifier()),
	}
	if o.Index >= 0 {
		as = append(as, u32Attr(attrIndex, uint32(o.Index)))
	}
	replies, err := d.withSockets(conns, cmdConnect, as)
	// EBUSY on a device that was attached to this export: either it is
	// being detached (the kernel frees it when its last user lets go:
	// udev's probe, a lazy unmount) or an earlier attach died and left it
	// attached. Wait for the first; adopt the second. A device another
	// live attach keeps is refused.
	ours := func() bool {
		return errors.Is(err, syscall.EBUSY) && o.Index >= 0 && d.backend() == o.identifier()
	}
	if ours() {
		if pid := d.attacherAlive(); pid != 0 {
			return nil, fmt.Errorf("attach /dev/nbd%d: it is attached to %s %q and kept by process %d (another zerofs nbd attach?)", o.Index, o.Addr, o.Export, pid)
		}
	}
	for wait := time.Now().Add(adoptWait); ours() && time.Now().Before(wait); {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if conns, _, err = dialAll(ctx, o, o.Connections); err != nil {
			return nil, err
		}
		replies, err = d.withSockets(conns, cmdConnect, as)
	}
	if ours() {
		o.Logf("/dev/nbd%d is already attached to %s %q: adopting it", o.Index, o.Addr, o.Export)
		// Its sockets may have died with the attach that made it: give it
		// fresh ones (the kernel ignores those it has no dead socket for).
		d.reconnect(ctx)
		return d, nil
	}
	if err != nil {
		return nil, explain("attach", o.Index, err)
	}
	for _, r := range replies {
		if v, ok := r[attrIndex]; ok && len(v) == 4 {
			d.Index = int(binary.NativeEndian.Uint32(v))
		}
	}
	if d.Index < 0 {
		return nil, errors.New("attach: the kernel did not say which device it used")
	}
	return d, nil
}

// nbdFamily resolves the nbd family, which exists once the module is loaded.
func nbdFamily(c *genlConn) (uint16, map[string]uint32, error) {
	fam, groups, err := c.family(familyName)
	if errors.Is(err, syscall.ENOENT) {
		return 0, nil, errors.New("the kernel has no nbd netlink family: load the module first (modprobe nbd)")
	}
	if err != nil {
		return 0, nil, fmt.Errorf("resolve netlink family nbd: %w", err)
	}
	return fam, groups, nil
}

// explain turns the kernel's errno into what the operator should do.
func explain(op string, index int, err error) error {
	dev := "a device"
	if index >= 0 {
		dev = fmt.Sprintf("/dev/nbd%d", index)
	}
	hint := ""
	switch {
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		hint = " (this needs root: CAP_SYS_ADMIN)"
	case op == "attach" && errors.Is(err, syscall.EBUSY):
		hint = fmt.Sprintf(" (it is attached to something else: zerofs nbd detach %s, or choose another --device)", dev)
	case op == "attach" && errors.Is(err, syscall.EINVAL):
		hint = " (the kernel refused the parameters: --block-size must be a power of two from 512 to the page size; more than one --connections needs a server that allows it)"
	case op == "detach" && errors.Is(err, syscall.EINVAL):
		hint = " (no such nbd device)"
	}
	return fmt.Errorf("%s %s: %w%s", op, dev, err, hint)
}

// Keep holds the device connected until ctx ends or the device is
// disconnected by someone else (nbd-client -d, zerofs nbd detach), which it
// reports as ErrDetached.
//
// How a restart stays invisible: the device was configured with a dead
// connection timeout, so when a connection drops the kernel does not fail
// I/O at once. It marks the socket dead, tells us with a LINK_DEAD
// multicast, and holds new requests for up to DeadTimeout waiting for a
// replacement. Requests that were in flight on the dead socket come back
// after Timeout and join them. We dial the server again (retrying while it
// is down), and hand the kernel the new socket with RECONFIGURE; held
// requests then go out on it. A clean stop of zerofs answers every request
// it has read before closing, so the only wait is the restart itself. After
// kill -9 the restarted server fails I/O on the export with EIO (it is
// interrupted, docs/durability.md): the reconnect makes that error reach the
// filesystem at once instead of after DeadTimeout.
func (d *Device) Keep(ctx context.Context) error {
	// The watcher reads a socket that d.close closes: it must be gone
	// first, or its fd number could be reused (by Detach's socket) under it.
	wctx, stopWatch := context.WithCancel(ctx)
	dead := make(chan struct{}, 1)
	watchErr := make(chan error, 1)
	go func() { watchErr <- d.watchDead(wctx, dead) }()
	defer func() {
		stopWatch()
		select {
		case <-watchErr:
		case <-time.After(3 * time.Second): // its reads time out after 1 s
		}
		d.close()
	}()
	tick := time.NewTicker(statusEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-watchErr:
			watchErr <- err // for the deferred wait
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("watch /dev/nbd%d: %w", d.Index, err)
		case <-tick.C:
			ok, err := d.connected()
			if err != nil {
				d.o.Logf("status of /dev/nbd%d: %v", d.Index, err)
				continue
			}
			if !ok || d.ownedByOther() {
				return ErrDetached
			}
		case <-dead:
			d.reconnect(ctx)
		}
	}
}

// reconnect hands the kernel a new socket for each of the device's
// connections, retrying with backoff while the server is down or the kernel
// refuses; it gives up only when the device is no longer attached.
func (d *Device) reconnect(ctx context.Context) {
	backoff := 100 * time.Millisecond
	start := time.Now()
	var lastErr string
	var lastCheck time.Time
	for fixed := 0; ctx.Err() == nil; {
		conns, info, err := dialAll(ctx, d.o, 1)
		if err == nil && info.Size != d.Size {
			// The kernel cannot change a device's size on reconfigure;
			// serving the old size is what the filesystem above expects.
			d.o.Logf("%q is now %d bytes (was %d): /dev/nbd%d keeps the old size until it is attached again", d.o.Export, info.Size, d.Size, d.Index)
		}
		if err == nil {
			// The kernel refuses a reconfigure without the identifier the
			// device was attached with ("must specify backend").
			_, err = d.withSockets(conns, cmdReconfigure, []attr{
				u32Attr(attrIndex, uint32(d.Index)), strAttr(attrBackendIdentifier, d.o.identifier())})
			// The kernel answers success whether it took the socket (one of
			// its sockets was dead) or had no use for it, so one socket per
			// connection is handed over, and the ones it had no use for are
			// closed again.
			if err == nil {
				fixed++
				backoff = 100 * time.Millisecond
				if fixed >= d.o.Connections {
					d.o.Logf("/dev/nbd%d reconnected to %s %.1f s after it lost its connection", d.Index, d.o.Addr, time.Since(start).Seconds())
					return
				}
				continue
			}
			err = fmt.Errorf("reconfigure: %w", err)
		}
		if msg := err.Error(); msg != lastErr {
			d.o.Logf("/dev/nbd%d lost its connection; reconnecting to %s: %v", d.Index, d.o.Addr, err)
			lastErr = msg
		}
		// Detached meanwhile (zerofs nbd detach while zerofs is down), or
		// attached to another backend: stop; Keep's status check says which.
		if time.Since(lastCheck) >= time.Second {
			lastCheck = time.Now()
			if ok, serr := d.connected(); serr == nil && (!ok || d.ownedByOther()) {
				return
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		// At most a second between tries: every second the server stays
		// unreachable after it is back is a second of held I/O, and a
		// refused connection costs nothing.
		backoff = min(backoff*2, time.Second)
	}
}

// Detach disconnects the device: the kernel fails any further I/O on it.
func (d *Device) Detach() error { return Detach(d.Index) }

// Detach disconnects /dev/nbd<index>, however it was attached.
func Detach(index int) error {
	c, err := dialGenl()
	if err != nil {
		return err
	}
	defer c.Close()
	fam, _, err := nbdFamily(c)
	if err != nil {
		return err
	}
	if _, err := c.request(fam, cmdDisconnect, familyVer, []attr{u32Attr(attrIndex, uint32(index))}); err != nil {
		return explain("detach", index, err)
	}
	return nil
}

func (d *Device) close() {
	if d.watch != nil {
		d.watch.Close()
	}
	d.c.Close()
}

// subscribe opens the socket that receives LINK_DEAD messages. It has a
// receive timeout so its reader can notice ctx ending.
func (d *Device) subscribe(groups map[string]uint32) (*genlConn, error) {
	g, ok := groups[mcastGroup]
	if !ok {
		return nil, fmt.Errorf("the nbd netlink family has no %s multicast group: this kernel cannot report dead connections", mcastGroup)
	}
	w, err := dialGenl()
	if err != nil {
		return nil, err
	}
	if err := w.join(g); err != nil {
		w.Close()
		return nil, err
	}
	tv := unix.NsecToTimeval(int64(time.Second))
	if err := unix.SetsockoptTimeval(w.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		w.Close()
		return nil, os.NewSyscallError("setsockopt(SO_RCVTIMEO)", err)
	}
	return w, nil
}

func (d *Device) watchDead(ctx context.Context, dead chan<- struct{}) error {
	buf := make([]byte, 16<<10)
	for ctx.Err() == nil {
		msgs, err := d.watch.receive(buf)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.ENOBUFS) {
			// Messages were dropped: one of them may have been ours.
			// A reconnect attempt with nothing dead costs one handshake.
			msgs = []genlMsg{{cmd: cmdLinkDead, attrs: map[uint16][]byte{attrIndex: binary.NativeEndian.AppendUint32(nil, uint32(d.Index))}}}
		} else if err != nil {
			return err
		}
		for _, m := range msgs {
			v := m.attrs[attrIndex]
			if m.cmd == cmdLinkDead && len(v) == 4 && int(binary.NativeEndian.Uint32(v)) == d.Index {
				select {
				case dead <- struct{}{}:
				default:
				}
			}
		}
	}
	return nil
}

// connected asks the kernel whether the device is still configured.
func (d *Device) connected() (bool, error) {
	replies, err := d.c.request(d.family, cmdStatus, familyVer, []attr{u32Attr(attrIndex, uint32(d.Index))})
	if err != nil {
		return false, err
	}
	for _, r := range replies {
		items, err := parseAttrList(r[attrDeviceList])
		if err != nil {
			return false, err
		}
		for _, it := range items {
			a, err := parseAttrs(it)
			if err != nil {
				return false, err
			}
			idx, conn := a[deviceIndex], a[deviceConnected]
			if len(idx) == 4 && int(binary.NativeEndian.Uint32(idx)) == d.Index && len(conn) >= 1 {
				return conn[0] != 0, nil
			}
		}
	}
	return false, nil
}

// ownedByOther reports whether the device now belongs to another backend
// (detached and attached again elsewhere). Kernels without the backend
// attribute in sysfs never say so.
func (d *Device) ownedByOther() bool {
	b := d.backend()
	return b != "" && b != d.o.identifier()
}

// attacherAlive reports the pid of a live process that attached the device
// (/sys/block/nbdN/pid), 0 if none.
func (d *Device) attacherAlive() int {
	b, err := os.ReadFile(fmt.Sprintf("/sys/block/nbd%d/pid", d.Index))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || pid == os.Getpid() {
		return 0
	}
	if syscall.Kill(pid, 0) == nil || errors.Is(syscall.Kill(pid, 0), syscall.EPERM) {
		return pid
	}
	return 0
}

// backend is the identifier the device was attached with ("" if none).
func (d *Device) backend() string {
	b, err := os.ReadFile(fmt.Sprintf("/sys/block/nbd%d/backend", d.Index))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// withSockets sends cmd with conns as NBD_ATTR_SOCKETS. The kernel takes its
// own reference to each socket, so our descriptors are closed once it has
// answered.
func (d *Device) withSockets(conns []net.Conn, cmd uint8, as []attr) ([]map[uint16][]byte, error) {
	files, err := kernelSockets(conns)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	socks := attr{typ: attrSockets, nested: []attr{}}
	for _, f := range files {
		socks.nested = append(socks.nested, attr{typ: sockItem, nested: []attr{u32Attr(sockFD, uint32(f.Fd()))}})
	}
	return d.c.request(d.family, cmd, familyVer, append(as, socks))
}

func dialAll(ctx context.Context, o Options, n int) ([]net.Conn, nbd.Negotiated, error) {
	var conns []net.Conn
	var info nbd.Negotiated
	for i := 0; i < n; i++ {
		var conf *tls.Config
		var err error
		if o.TLS != nil {
			if conf, err = o.TLS(); err != nil {
				for _, c := range conns {
					c.Close()
				}
				return nil, info, err
			}
		}
		nc, in, err := nbd.Dial(ctx, o.Addr, o.Export, conf)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, info, err
		}
		conns, info = append(conns, nc), in
	}
	return conns, info, nil
}
