package fs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
)

// File types, the S_IFMT bits of Mode.
const (
	TypeMask    = syscall.S_IFMT
	TypeRegular = syscall.S_IFREG
	TypeDir     = syscall.S_IFDIR
	TypeSymlink = syscall.S_IFLNK
	TypeChar    = syscall.S_IFCHR
	TypeBlock   = syscall.S_IFBLK
	TypeFIFO    = syscall.S_IFIFO
	TypeSocket  = syscall.S_IFSOCK
)

// RootIno is the root directory's inode number. Inode numbers are never
// reused: the next number only grows, so a stale NFS handle or NBD export
// can never name a different file.
const RootIno uint64 = 1

// Inode is a file's attributes. Times are nanoseconds since the Unix epoch.
type Inode struct {
	Ino   uint64
	Mode  uint32 // type (TypeMask bits) | setuid/setgid/sticky | permissions
	Uid   uint32
	Gid   uint32
	Nlink uint32
	Size  uint64
	Atime int64
	Mtime int64
	Ctime int64
	Rdev  uint64 // device number of character and block special files
	// Parent is a directory's parent (for ".."); zero for other types, whose
	// links may live in many directories.
	Parent uint64
	// NextCookie is a directory's next READDIR cookie: every entry gets a new
	// one when linked, so a listing resumed from a cookie never skips or
	// repeats entries because others were added or removed meanwhile.
	NextCookie uint64
	// Target is a symbolic link's target.
	Target string
	// Verf is the verifier of an exclusive create (NFSv3 CREATE EXCLUSIVE),
	// so a retransmitted create finds its own file instead of failing.
	Verf uint64
	// Gen is the writer epoch that created the inode. An inode number
	// allocated by a create that a crash lost (never flushed) is allocated
	// again after restart; handles carry (Ino, Gen) so an old handle to the
	// lost file is stale instead of naming the new one.
	Gen uint64
}

func (n *Inode) Type() uint32 { return n.Mode & TypeMask }
func (n *Inode) IsDir() bool  { return n.Type() == TypeDir }
func (n *Inode) IsReg() bool  { return n.Type() == TypeRegular }
func (n *Inode) IsLink() bool { return n.Type() == TypeSymlink }
func (n *Inode) Perm() uint32 { return n.Mode &^ TypeMask }

const inodeVersion = 1

var errBadInode = errors.New("corrupt inode record")

func (n *Inode) encode() []byte {
	b := make([]byte, 0, 64+len(n.Target))
	b = append(b, inodeVersion)
	b = binary.AppendUvarint(b, n.Ino)
	b = binary.AppendUvarint(b, uint64(n.Mode))
	b = binary.AppendUvarint(b, uint64(n.Uid))
	b = binary.AppendUvarint(b, uint64(n.Gid))
	b = binary.AppendUvarint(b, uint64(n.Nlink))
	b = binary.AppendUvarint(b, n.Size)
	b = binary.AppendVarint(b, n.Atime)
	b = binary.AppendVarint(b, n.Mtime)
	b = binary.AppendVarint(b, n.Ctime)
	b = binary.AppendUvarint(b, n.Rdev)
	b = binary.AppendUvarint(b, n.Parent)
	b = binary.AppendUvarint(b, n.NextCookie)
	b = binary.AppendUvarint(b, uint64(len(n.Target)))
	b = append(b, n.Target...)
	b = binary.AppendUvarint(b, n.Verf)
	return binary.AppendUvarint(b, n.Gen)
}

func decodeInode(b []byte) (Inode, error) {
	var n Inode
	d := decoder{b: b}
	if v := d.byte(); v != inodeVersion {
		return n, fmt.Errorf("inode record version %d: %w", v, errBadInode)
	}
	n.Ino = d.uvarint()
	n.Mode = d.uint32()
	n.Uid = d.uint32()
	n.Gid = d.uint32()
	n.Nlink = d.uint32()
	n.Size = d.uvarint()
	n.Atime = d.varint()
	n.Mtime = d.varint()
	n.Ctime = d.varint()
	n.Rdev = d.uvarint()
	n.Parent = d.uvarint()
	n.NextCookie = d.uvarint()
	n.Target = string(d.bytes(int(d.uvarintMax(maxTarget))))
	n.Verf = d.uvarint()
	n.Gen = d.uvarint()
	if d.err != nil || len(d.b) != 0 {
		return n, fmt.Errorf("inode record: %w", errBadInode)
	}
	return n, nil
}

// maxTarget bounds a symlink target (PATH_MAX).
const maxTarget = 4096

// decoder reads the varint encodings of metadata records. It never panics on
// short or hostile input: the first problem sets err and every later read
// returns zero.
type decoder struct {
	b   []byte
	err error
}

var errShort = errors.New("truncated record")

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) < 1 {
		d.fail(errShort)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(errShort)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uvarintMax(max uint64) uint64 {
	v := d.uvarint()
	if v > max {
		d.fail(fmt.Errorf("value %d exceeds %d", v, max))
		return 0
	}
	return v
}

func (d *decoder) uint32() uint32 { return uint32(d.uvarintMax(1<<32 - 1)) }

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(errShort)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) fixed64() uint64 {
	if d.err != nil || len(d.b) < 8 {
		d.fail(errShort)
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil || n < 0 || len(d.b) < n {
		d.fail(errShort)
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}
