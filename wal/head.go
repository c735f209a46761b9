package wal

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"strconv"
)

// HeadKey is the key of the head object in the main store.
const HeadKey = "head"

// Head is the root of a filesystem in its main store. It is tiny, rewritten
// only with compare-and-swap, and says three things:
//
//   - who may write: Epoch is the newest writer's claim. A writer claims by
//     rewriting the head with Epoch+1 (If-None-Match when creating, If-Match
//     otherwise), so of two writers racing for the same epoch exactly one wins,
//     and every later head update of an older writer fails;
//   - where recovery starts: records up to Base are covered by the checkpoint
//     named Checkpoint, so recovery loads that and replays from Base+1;
//   - what the filesystem is: FSID and the caller's Init parameters, fixed at
//     creation.
//
// It is stored as a line of JSON between a magic line and a CRC line so an
// operator can read it with any S3 tool, and a torn or foreign object is
// detected.
type Head struct {
	FSID  [16]byte `json:"-"`
	Epoch uint64   `json:"epoch"`
	// Base is the last record the checkpoint covers. Its epoch seeds replay's
	// epoch check: a leftover record of an older writer just after Base must
	// still be recognized as stale.
	Base       Position `json:"base"`
	Checkpoint string   `json:"checkpoint,omitempty"`
	Init       []byte   `json:"init,omitempty"`
}

// Position names one record: its sequence number and, because a sequence
// number can be reused by a later writer after a crash left it unacknowledged,
// the epoch and random id of the record actually there. The zero Position is
// "before the first record".
type Position struct {
	Seq   uint64 `json:"seq"`
	Epoch uint64 `json:"epoch"`
	ID    uint64 `json:"id"`
}

type headJSON struct {
	Head
	FSID string `json:"fsid"`
}

const headMagic = "ZFSHEAD 1\n"

func (h *Head) encode() []byte {
	body, err := json.Marshal(headJSON{Head: *h, FSID: hex.EncodeToString(h.FSID[:])})
	if err != nil {
		panic(fmt.Sprintf("wal: encode head: %v", err)) // plain struct: cannot fail
	}
	var b bytes.Buffer
	b.WriteString(headMagic)
	b.Write(body)
	b.WriteByte('\n')
	b.WriteString(strconv.FormatUint(uint64(crc32.Checksum(body, castagnoli)), 16))
	b.WriteByte('\n')
	return b.Bytes()
}

func decodeHead(b []byte) (Head, error) {
	var h Head
	if !bytes.HasPrefix(b, []byte(headMagic)) {
		return h, fmt.Errorf("head object does not start with %q: %w", headMagic[:len(headMagic)-1], ErrCorrupt)
	}
	rest := b[len(headMagic):]
	nl := bytes.IndexByte(rest, '\n')
	if nl < 0 {
		return h, fmt.Errorf("head object truncated: %w", ErrCorrupt)
	}
	body, tail := rest[:nl], bytes.TrimSpace(rest[nl+1:])
	crc, err := strconv.ParseUint(string(tail), 16, 32)
	if err != nil || uint32(crc) != crc32.Checksum(body, castagnoli) {
		return h, fmt.Errorf("head object checksum mismatch: %w", ErrCorrupt)
	}
	var hj headJSON
	if err := json.Unmarshal(body, &hj); err != nil {
		return h, fmt.Errorf("head object: %v: %w", err, ErrCorrupt)
	}
	id, err := hex.DecodeString(hj.FSID)
	if err != nil || len(id) != 16 {
		return h, fmt.Errorf("head object: bad fsid %q: %w", hj.FSID, ErrCorrupt)
	}
	h = hj.Head
	copy(h.FSID[:], id)
	return h, nil
}
