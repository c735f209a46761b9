package fs

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"zerofs/crypt"
)

// Every decoder of bytes that come from the bucket or the local database is
// fuzzed: hostile or damaged input must give an error, never a panic, a huge
// allocation, or a value that re-encodes differently.

func FuzzDecodePieces(f *testing.F) {
	f.Add(encodePieces([]Piece{{Off: 0, Len: 4096, Frame: FrameRef{ID: 1, Obj: ObjRef{ObjWAL, 3}, Off: 80, Size: 100, Raw: 4096}}}))
	f.Add(encodePieces([]Piece{
		{Off: 0, Len: 10, Skip: 5, Frame: FrameRef{ID: 9, Obj: ObjRef{ObjSeg, 1 << 40}, Off: 32, Size: 50, Raw: 20}},
		{Off: 100, Len: 1, Frame: FrameRef{ID: 10, Obj: ObjRef{ObjWAL, 1}, Size: 40, Raw: 1}},
	}))
	f.Add([]byte{0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	// A clone's piece: the frame's sealing inode follows the kind byte.
	f.Add(encodePieces([]Piece{{Off: 0, Len: 4096, Frame: FrameRef{ID: 1, Obj: ObjRef{ObjSeg, 7}, Size: 99, Raw: 4096, Ino: 12}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := decodePieces(b, 4096)
		if err != nil {
			return
		}
		if again := encodePieces(p); !bytes.Equal(again, b) {
			// Varints have one canonical form only if minimal: compare values.
			q, err := decodePieces(again, 4096)
			if err != nil || len(q) != len(p) {
				t.Fatalf("re-encoded pieces do not decode alike: %v", err)
			}
		}
		var end uint32
		for _, x := range p {
			if x.Frame.Obj.Kind&kindHasIno != 0 {
				t.Fatalf("the inode flag leaked into the object kind: %+v", x)
			}
			if x.Off < end || x.end() > 4096 || x.Skip+x.Len > x.Frame.Raw {
				t.Fatalf("decoder accepted an invalid piece %+v", x)
			}
			end = x.end()
		}
	})
}

func FuzzDecodeDelta(f *testing.F) {
	d := &delta{
		kv:     []kvItem{{key: "\x02abc", val: []byte("v")}, {key: "\x03x", del: true}},
		ranges: []chunkRange{{ino: 5, from: 1, to: 9}},
		chunks: []chunkSet{{ino: 5, idx: 2, pieces: []Piece{{Len: 7, Frame: FrameRef{ID: 1, Size: 30, Raw: 7}}}}, {ino: 6, idx: 0}},
	}
	f.Add(d.encode())
	f.Add([]byte{deltaVersion})
	f.Add([]byte{deltaVersion, opSet, 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := decodeDelta(b, 4096)
		if err != nil {
			if !errors.Is(err, errBadDelta) {
				t.Fatalf("error not wrapping errBadDelta: %v", err)
			}
			return
		}
		if _, err := decodeDelta(d.encode(), 4096); err != nil {
			t.Fatalf("re-encoded delta does not decode: %v", err)
		}
	})
}

func FuzzDecodeInode(f *testing.F) {
	n := Inode{Ino: 7, Mode: TypeSymlink | 0o777, Nlink: 1, Size: 3, Mtime: -5, Target: "abc", Gen: 2}
	f.Add(n.encode())
	f.Add([]byte{inodeVersion})
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := decodeInode(b)
		if err != nil {
			return
		}
		m, err := decodeInode(n.encode())
		if err != nil || m != n {
			t.Fatalf("inode does not round trip: %+v vs %+v (%v)", n, m, err)
		}
	})
}

func FuzzParseSegment(f *testing.F) {
	k, _ := crypt.NewKey()
	fs := &FS{key: k}
	fs.fsid[0] = 1
	seg := newSegmentBuilder(fs.fsid, 42)
	seg.add(segFrame{ref: FrameRef{ID: 1, Size: 5, Raw: 3}, ino: 2, idx: 3}, []byte("abcde"))
	f.Add(seg.finish(fs))
	f.Add(make([]byte, segHeaderSize+segFooterSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		frames, err := fs.parseSegment(42, b)
		if err != nil {
			if !errors.Is(err, errBadSegment) {
				t.Fatalf("error not wrapping errBadSegment: %v", err)
			}
			return
		}
		for _, fr := range frames {
			if fr.ref.Off+uint64(fr.ref.Size) > uint64(len(b)) {
				t.Fatal("frame beyond the object accepted")
			}
		}
	})
}

func FuzzDecodeObjInfo(f *testing.F) {
	f.Add(objInfo{Size: 10, Raw: 20, Live: 5}.encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		if o, err := decodeObjInfo(b); err == nil {
			if p, err := decodeObjInfo(o.encode()); err != nil || p != o {
				t.Fatal("object record does not round trip")
			}
		}
	})
}

func FuzzDecodeSnapRecord(f *testing.F) {
	r := snapRecord{Version: snapRecordVersion, ID: 3, Name: "hourly-20261129T2300Z", Created: 1, Schedule: "hourly",
		Files: []ckptFile{{Name: "000001.sst", Key: "meta/000001/ab", Size: 10, Hash: "ab"}}}
	b, _ := json.Marshal(r)
	f.Add(b)
	f.Add([]byte(`{"version":1,"id":1,"name":"a"}`))
	f.Add([]byte(`{"version":1,"id":1,"name":"a","files":[{"name":"../x"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeSnapRecord(b)
		if err != nil {
			if !errors.Is(err, ErrIO) {
				t.Fatalf("error not wrapping ErrIO: %v", err)
			}
			return
		}
		again, _ := json.Marshal(r)
		s, err := decodeSnapRecord(again)
		if err != nil || s.Name != r.Name || s.ID != r.ID || len(s.Files) != len(r.Files) {
			t.Fatalf("snapshot record does not round trip: %v", err)
		}
		if ValidateSnapshotName(r.Name) != nil || r.ID == 0 || r.ID > maxSnapID {
			t.Fatalf("decoder accepted %+v", r)
		}
	})
}

func FuzzDecodeObjects(f *testing.F) {
	f.Add(packObjects([]ObjRef{{ObjWAL, 4}, {ObjSeg, 1 << 40}}))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		objs, err := decodeObjects(b)
		if err != nil {
			return
		}
		if again := packObjects(objs); !bytes.Equal(again, b) {
			t.Fatal("object list does not round trip")
		}
	})
}
