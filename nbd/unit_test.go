package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"zerofs/fs"
)

func TestReplyEncoding(t *testing.T) {
	unhex := func(s string) []byte {
		b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name string
		got  []byte
		want string
	}{
		{"simple ok", appendSimpleReply(nil, 0, 0x0102030405060708), "67446698 00000000 0102030405060708"},
		{"simple EIO", appendSimpleReply(nil, errIO, 1), "67446698 00000005 0000000000000001"},
		{"none", appendNoneChunk(nil, 9), "668e33ef 0001 0000 0000000000000009 00000000"},
		{"error chunk", appendErrorChunk(nil, 2, errInval, "bad"), "668e33ef 0001 8001 0000000000000002 00000009 00000016 0003 626164"},
		{"offset data header", appendOffsetDataHeader(nil, 3, 0, 4096, 512), "668e33ef 0000 0001 0000000000000003 00000208 0000000000001000"},
		{"offset hole", appendOffsetHole(nil, 4, replyFlagDone, 8192, 4096), "668e33ef 0001 0002 0000000000000004 0000000c 0000000000002000 00001000"},
		{"block status", appendBlockStatus(nil, 5, 1, []statusDesc{{4096, 3}, {512, 0}}), "668e33ef 0001 0005 0000000000000005 00000014 00000001 00001000 00000003 00000200 00000000"},
		{"option reply", appendOptReply(nil, optGo, repAck, nil), "0003e889045565a9 00000007 00000001 00000000"},
		{"info export", infoExportData(1<<30, 0x0d4d), "0000 0000000040000000 0d4d"},
		{"info block size", infoBlockSizeData(1, 4096, 32<<20), "0003 00000001 00001000 02000000"},
		{"server reply", serverReplyData("ab", ""), "00000002 6162"},
		{"meta context", metaContextData(1, "base:allocation"), "00000001 626173653a616c6c6f636174696f6e"},
		{"export name reply, no zeroes", exportNameReply(512, 1, true), "0000000000000200 0001"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if want := unhex(tc.want); !bytes.Equal(tc.got, want) {
				t.Fatalf("got  %x\nwant %x", tc.got, want)
			}
		})
	}
	if got := exportNameReply(1, 1, false); len(got) != 10+exportNameZero || !isZero(got[10:]) {
		t.Fatalf("export name reply with zeroes: %x", got)
	}
}

func TestClipMessage(t *testing.T) {
	long := strings.Repeat("é", maxErrorMessage) // 2 bytes each
	for _, tc := range []struct{ name, in string }{
		{"short", "hello"},
		{"long multi-byte", long},
		{"NUL and invalid UTF-8", "a\x00b\xffc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := clipMessage(tc.in)
			if len(got) > maxErrorMessage || strings.ContainsRune(got, 0) || !isValidUTF8(got) {
				t.Fatalf("clipMessage gave %d bytes, valid %v", len(got), isValidUTF8(got))
			}
		})
	}
}

func isValidUTF8(s string) bool { return strings.ToValidUTF8(s, "") == s }

func TestCheckRequest(t *testing.T) {
	const size = 1 << 20
	rw := session{size: size}
	rwS := session{size: size, structured: true}
	rwM := session{size: size, structured: true, meta: true}
	ro := session{size: size, readOnly: true}
	big := session{size: 1 << 30, maxPayload: DefaultMaxPayload}
	for _, tc := range []struct {
		name    string
		s       session
		r       request
		want    uint32
		payload uint32
	}{
		{"read ok", rw, request{typ: cmdRead, length: 4096}, 0, 0},
		{"read to the end", rw, request{typ: cmdRead, off: size - 1, length: 1}, 0, 0},
		{"read past the end", rw, request{typ: cmdRead, off: size - 1, length: 2}, errInval, 0},
		{"read overflow", rw, request{typ: cmdRead, off: 1<<64 - 1, length: 2}, errInval, 0},
		{"read too big, simple", rw, request{typ: cmdRead, length: advertisedMaxPayload + 1}, errInval, 0},
		{"read too big, structured", rwS, request{typ: cmdRead, length: advertisedMaxPayload + 1}, errOverflow, 0},
		{"read DF, simple", rw, request{typ: cmdRead, flags: cmdFlagDF, length: 1}, errInval, 0},
		{"read DF, structured", rwS, request{typ: cmdRead, flags: cmdFlagDF, length: 1}, 0, 0},
		{"read FUA", rw, request{typ: cmdRead, flags: cmdFlagFUA, length: 1}, 0, 0},
		{"write ok", rw, request{typ: cmdWrite, length: 512}, 0, 512},
		{"write past the end", rw, request{typ: cmdWrite, off: size, length: 1}, errNoSpc, 1},
		{"write too big", rw, request{typ: cmdWrite, length: advertisedMaxPayload + 1}, errInval, advertisedMaxPayload + 1},
		{"read above the advertised maximum, within MaxPayload", big, request{typ: cmdRead, length: 48 << 20}, 0, 0},
		{"write above the advertised maximum, within MaxPayload", big, request{typ: cmdWrite, length: 48 << 20}, 0, 48 << 20},
		{"write above MaxPayload", big, request{typ: cmdWrite, length: DefaultMaxPayload + 1}, errInval, DefaultMaxPayload + 1},
		{"write read-only", ro, request{typ: cmdWrite, length: 1}, errPerm, 1},
		{"write zero length past the end", rw, request{typ: cmdWrite, off: size + 1}, errNoSpc, 0},
		{"write zero length at the end", rw, request{typ: cmdWrite, off: size}, 0, 0},
		{"flush", rw, request{typ: cmdFlush}, 0, 0},
		{"flush with length", rw, request{typ: cmdFlush, length: 1}, errInval, 0},
		{"flush read-only", ro, request{typ: cmdFlush}, 0, 0},
		{"trim read-only", ro, request{typ: cmdTrim, length: 1}, errPerm, 0},
		{"trim past the end", rw, request{typ: cmdTrim, off: size, length: 1}, errInval, 0},
		{"trim huge", rw, request{typ: cmdTrim, length: size}, 0, 0},
		{"zeroes past the end", rw, request{typ: cmdWriteZeroes, off: size, length: 1}, errNoSpc, 0},
		{"zeroes NO_HOLE", rw, request{typ: cmdWriteZeroes, flags: cmdFlagNoHole, length: 1}, 0, 0},
		{"zeroes FAST_ZERO", rw, request{typ: cmdWriteZeroes, flags: cmdFlagFastZero, length: 1}, 0, 0},
		{"zeroes FAST_ZERO NO_HOLE", rw, request{typ: cmdWriteZeroes, flags: cmdFlagFastZero | cmdFlagNoHole, length: 1}, errNotSup, 0},
		{"zeroes DF", rw, request{typ: cmdWriteZeroes, flags: cmdFlagDF, length: 1}, errInval, 0},
		{"cache", rw, request{typ: cmdCache, length: size}, 0, 0},
		{"cache past the end", rw, request{typ: cmdCache, off: 1, length: size}, errInval, 0},
		{"block status without meta", rwS, request{typ: cmdBlockStatus, length: 1}, errInval, 0},
		{"block status", rwM, request{typ: cmdBlockStatus, flags: cmdFlagReqOne, length: 1}, 0, 0},
		{"block status zero length", rwM, request{typ: cmdBlockStatus}, errInval, 0},
		{"block status past the end", rwM, request{typ: cmdBlockStatus, off: size, length: 1}, errInval, 0},
		{"unknown command", rw, request{typ: 8, length: 100}, errInval, 0},
		{"unknown flag", rw, request{typ: cmdRead, flags: 1 << 15, length: 1}, errInval, 0},
		{"payload-length flag", rw, request{typ: cmdWrite, flags: cmdFlagPayloadLen, length: 1}, errInval, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := checkRequest(tc.r, tc.s)
			var got uint32
			if v.err != nil {
				got = v.err.code
			}
			if got != tc.want || v.payload != tc.payload {
				t.Fatalf("error %s payload %d, want %s payload %d (%v)", errnoName(got), v.payload, errnoName(tc.want), tc.payload, v.err)
			}
		})
	}
	if v := checkRequest(request{typ: cmdDisc, off: 5, length: 5}, rw); !v.disc || v.err != nil {
		t.Fatalf("DISC: %+v", v)
	}
}

func TestDecodeRequest(t *testing.T) {
	r := request{flags: cmdFlagFUA, typ: cmdWrite, cookie: 0xdeadbeefcafe, off: 1 << 40, length: 12345}
	got, err := decodeRequest(encodeRequest(r))
	if err != nil || got != r {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	b := encodeRequest(r)
	b[3] = 0
	var bm errBadMagic
	if _, err := decodeRequest(b); !errors.As(err, &bm) {
		t.Fatalf("bad magic: %v", err)
	}
	if _, err := decodeRequest(b[:27]); err == nil {
		t.Fatal("short header accepted")
	}
}

func TestDecodeOption(t *testing.T) {
	long := strings.Repeat("x", maxStringLen+1)
	for _, tc := range []struct {
		name    string
		code    uint32
		data    []byte
		wantErr uint32
		check   func(t *testing.T, o option)
	}{
		{name: "export name", code: optExportName, data: []byte("disk"), check: func(t *testing.T, o option) {
			if o.name != "disk" {
				t.Fatalf("name %q", o.name)
			}
		}},
		{name: "export name too long", code: optExportName, data: []byte(long), wantErr: repErrInvalid},
		{name: "export name not UTF-8", code: optExportName, data: []byte{0xff}, wantErr: repErrInvalid},
		{name: "export name with NUL", code: optExportName, data: []byte("a\x00b"), wantErr: repErrInvalid},
		{name: "abort ignores data", code: optAbort, data: []byte("junk")},
		{name: "list", code: optList},
		{name: "list with data", code: optList, data: []byte{0}, wantErr: repErrInvalid},
		{name: "starttls with data", code: optStartTLS, data: []byte{0}, wantErr: repErrInvalid},
		{name: "go", code: optGo, data: nameData("disk", 0, 2, 0, 3, 0, 1), check: func(t *testing.T, o option) {
			if o.name != "disk" || !equalSlices(o.infos, []uint16{infoBlockSize, infoName}) {
				t.Fatalf("%+v", o)
			}
		}},
		{name: "go empty name", code: optGo, data: nameData("", 0, 0)},
		{name: "go without info count", code: optGo, data: nameData("disk"), wantErr: repErrInvalid},
		{name: "go with info count past the data", code: optGo, data: nameData("disk", 0, 3, 0, 1), wantErr: repErrInvalid},
		{name: "go with trailing bytes", code: optGo, data: nameData("disk", 0, 0, 9), wantErr: repErrInvalid},
		{name: "info name length past the data", code: optInfo, data: binary.BigEndian.AppendUint32(nil, 5), wantErr: repErrInvalid},
		{name: "info short", code: optInfo, data: []byte{0, 0}, wantErr: repErrInvalid},
		{name: "list meta, no queries", code: optListMetaContext, data: metaData("disk"), check: func(t *testing.T, o option) {
			if len(o.queries) != 0 {
				t.Fatalf("%+v", o)
			}
		}},
		{name: "set meta", code: optSetMetaContext, data: metaData("disk", "base:allocation", "x-foo:bar"), check: func(t *testing.T, o option) {
			if !equalSlices(o.queries, []string{"base:allocation", "x-foo:bar"}) {
				t.Fatalf("%+v", o)
			}
		}},
		{name: "meta query without namespace", code: optSetMetaContext, data: metaData("disk", "allocation"), wantErr: repErrInvalid},
		{name: "meta huge query count", code: optSetMetaContext, data: append(nameData("disk"), 0xff, 0xff, 0xff, 0xff), wantErr: repErrInvalid},
		{name: "meta trailing bytes", code: optSetMetaContext, data: append(metaData("disk", "base:"), 1), wantErr: repErrInvalid},
		{name: "meta query past the data", code: optListMetaContext, data: append(nameData("disk"), 0, 0, 0, 1, 0, 0, 0, 9, 'b'), wantErr: repErrInvalid},
		{name: "unknown", code: 200, data: []byte("x"), wantErr: repErrUnsup},
		{name: "extended headers", code: optExtendedHeaders, wantErr: repErrUnsup},
		{name: "peek export (withdrawn)", code: optPeekExport, wantErr: repErrUnsup},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := decodeOption(tc.code, tc.data)
			var got uint32
			if err != nil {
				got = err.rep
			}
			if got != tc.wantErr {
				t.Fatalf("got %s (%v), want %s", repName(got), err, repName(tc.wantErr))
			}
			if tc.check != nil && err == nil {
				tc.check(t, o)
			}
		})
	}
}

func TestSelectMeta(t *testing.T) {
	for _, tc := range []struct {
		name    string
		queries []string
		list    bool
		want    bool
	}{
		{"list all", nil, true, true},
		{"set nothing", nil, false, false},
		{"list base wildcard", []string{"base:"}, true, true},
		{"set base wildcard is ignored", []string{"base:"}, false, false},
		{"set base:allocation", []string{"base:allocation"}, false, true},
		{"unknown base leaf", []string{"base:other"}, false, false},
		{"other namespace", []string{"qemu:dirty-bitmap:a"}, true, false},
		{"mixed", []string{"qemu:x", "base:allocation"}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := selectMeta(tc.queries, tc.list); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestErrnoFor(t *testing.T) {
	wrap := func(e error) error { return fmt.Errorf("context: %w", e) }
	for _, tc := range []struct {
		name string
		cmd  uint16
		err  error
		want uint32
	}{
		{"EIO", cmdRead, wrap(fs.ErrIO), errIO},
		{"ENOSPC", cmdWrite, wrap(fs.ErrNoSpace), errNoSpc},
		{"EFBIG", cmdWrite, wrap(fs.ErrFileTooBig), errNoSpc},
		{"EDQUOT", cmdWrite, wrap(syscall.EDQUOT), errNoSpc},
		{"EROFS on a write", cmdWrite, wrap(fs.ErrReadOnly), errPerm},
		{"EROFS on a trim", cmdTrim, wrap(fs.ErrReadOnly), errPerm},
		{"EROFS on a flush", cmdFlush, wrap(fs.ErrReadOnly), errIO},
		{"EACCES", cmdWrite, wrap(fs.ErrAccess), errPerm},
		{"EPERM", cmdWrite, wrap(fs.ErrPerm), errPerm},
		{"EINVAL", cmdRead, wrap(fs.ErrInvalid), errInval},
		{"ENOENT (export deleted)", cmdRead, wrap(fs.ErrNotExist), errIO},
		{"ESTALE", cmdRead, wrap(fs.ErrStale), errIO},
		{"plain error", cmdRead, errors.New("boom"), errIO},
		{"cancelled", cmdFlush, wrap(context.Canceled), errShutdown},
		{"deadline", cmdWrite, wrap(context.DeadlineExceeded), errShutdown},
		{"nil", cmdRead, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := errnoFor(tc.cmd, tc.err); got != tc.want {
				t.Fatalf("got %s, want %s", errnoName(got), errnoName(tc.want))
			}
		})
	}
	e := fsError(cmdWrite, wrap(fs.ErrNoSpace), "write [%d, +%d)", 1, 2)
	if !errors.Is(e, fs.ErrNoSpace) || !strings.Contains(e.Error(), "ENOSPC") {
		t.Fatalf("fsError does not wrap its cause: %v", e)
	}
}

func TestSegmentsFromHoles(t *testing.T) {
	blk := uint64(preferredBlockSize)
	type seg struct {
		n    int
		hole bool
	}
	hole := func(off, n uint64) fs.Extent { return fs.Extent{Off: off, Len: n, Hole: true} }
	for _, tc := range []struct {
		name  string
		off   uint64
		n     int
		holes []fs.Extent
		want  []seg
	}{
		{"all data", 0, 3 * int(blk), nil, []seg{{3 * int(blk), false}}},
		{"all hole", 0, 3 * int(blk), []fs.Extent{hole(0, 3*blk)}, []seg{{3 * int(blk), true}}},
		{"data hole data", 0, 4 * int(blk), []fs.Extent{hole(blk, 2*blk)}, []seg{{int(blk), false}, {2 * int(blk), true}, {int(blk), false}}},
		{"unaligned hole edges are data", 100, 2 * int(blk), []fs.Extent{hole(100, 2*blk)}, []seg{{int(blk) - 100, false}, {int(blk), true}, {100, false}}},
		{"hole shorter than a block is data", 0, int(blk), []fs.Extent{hole(10, blk-10)}, []seg{{int(blk), false}}},
		{"two holes merge across nothing", 0, 2 * int(blk), []fs.Extent{hole(0, blk), hole(blk, blk)}, []seg{{2 * int(blk), true}}},
		{"empty", 0, 0, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			segs := segmentsFromHoles(tc.off, tc.n, tc.holes)
			var got []seg
			pos := tc.off
			for _, s := range segs {
				if s.off != pos {
					t.Fatalf("segments not contiguous: %+v", segs)
				}
				pos += uint64(s.n)
				got = append(got, seg{s.n, s.hole})
			}
			if !equalSlices(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestStatusDescs(t *testing.T) {
	const hz = stateHole | stateZero
	for _, tc := range []struct {
		name string
		ext  []fs.Extent
		r    request
		want []statusDesc
	}{
		{"alternating", []fs.Extent{{Off: 0, Len: 10, Hole: true}, {Off: 10, Len: 5}, {Off: 15, Len: 1, Hole: true}}, request{length: 16},
			[]statusDesc{{10, hz}, {5, 0}, {1, hz}}},
		{"merges equal neighbours", []fs.Extent{{Off: 0, Len: 10}, {Off: 10, Len: 5}}, request{length: 15}, []statusDesc{{15, 0}}},
		{"REQ_ONE", []fs.Extent{{Off: 0, Len: 10, Hole: true}, {Off: 10, Len: 5}}, request{flags: cmdFlagReqOne, length: 15}, []statusDesc{{10, hz}}},
		{"nothing: past the file's end", nil, request{length: 4096}, []statusDesc{{4096, hz}}},
		{"not contiguous: the prefix", []fs.Extent{{Off: 0, Len: 10, Hole: true}, {Off: 12, Len: 5}}, request{length: 17}, []statusDesc{{10, hz}}},
		{"not from the start: unknown", []fs.Extent{{Off: 5, Len: 10, Hole: true}}, request{length: 15}, []statusDesc{{15, 0}}},
		{"offset request", []fs.Extent{{Off: 100, Len: 10, Hole: true}}, request{off: 100, length: 10}, []statusDesc{{10, hz}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := statusDescs(tc.ext, tc.r); !equalSlices(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestBuffers(t *testing.T) {
	for _, n := range []int{0, 1, 4096, 4097, 1 << 20, advertisedMaxPayload} {
		b := getBuf(n)
		if len(b) != n || cap(b)&(cap(b)-1) != 0 {
			t.Fatalf("getBuf(%d): len %d cap %d", n, len(b), cap(b))
		}
		putBuf(b)
	}
	putBuf(make([]byte, 3000)) // foreign sizes are dropped, not pooled wrongly
	if b := getBuf(4096); len(b) != 4096 {
		t.Fatal(len(b))
	}
}

func TestValidateExportName(t *testing.T) {
	for _, tc := range []struct {
		name string
		want error
	}{
		{"disk", nil},
		{"pg-01.img", nil},
		{"日本語", nil},
		{strings.Repeat("a", 255), nil},
		{"", fs.ErrInvalid},
		{".", fs.ErrInvalid},
		{"..", fs.ErrInvalid},
		{"a/b", fs.ErrInvalid},
		{"a\x00b", fs.ErrInvalid},
		{"\xff", fs.ErrInvalid},
		{strings.Repeat("a", 256), fs.ErrNameTooLong},
	} {
		t.Run(fmt.Sprintf("%.20q", tc.name), func(t *testing.T) {
			err := ValidateExportName(tc.name)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestExportManagement(t *testing.T) {
	ctx := context.Background()
	f := openTestFS(t)
	if exps, err := ListExports(ctx, f); err != nil || len(exps) != 0 {
		t.Fatalf("fresh filesystem: %v %v", exps, err)
	}
	if err := ResizeExport(ctx, f, "a", 4096); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("resize before /.nbd exists: %v", err)
	}
	mustCreateExport(t, f, "a", 1<<20)
	mustCreateExport(t, f, "b", 0)
	if err := CreateExport(ctx, f, "a", 4096); !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("creating an existing export: %v", err)
	}
	if err := CreateExport(ctx, f, "bad/name", 4096); !errors.Is(err, fs.ErrInvalid) {
		t.Fatalf("bad name: %v", err)
	}
	if err := CreateExport(ctx, f, "huge", fs.MaxFileSize+1); !errors.Is(err, fs.ErrFileTooBig) {
		t.Fatalf("huge: %v", err)
	}
	// Things in /.nbd that are not regular files are not exports.
	dir, err := f.Lookup(ctx, fs.Root, fs.RootIno, ExportDir)
	if err != nil {
		t.Fatal(err)
	}
	if dir.Perm() != 0o755 {
		t.Fatalf("/.nbd mode %o", dir.Perm())
	}
	if _, _, err := f.Create(ctx, fs.Root, dir.Ino, "subdir", fs.NewNode{Mode: fs.TypeDir | 0o755}); err != nil {
		t.Fatal(err)
	}
	if err := ResizeExport(ctx, f, "b", 4096); err != nil {
		t.Fatal(err)
	}
	exps, err := ListExports(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	want := []ExportInfo{{Name: "a", Size: 1 << 20}, {Name: "b", Size: 4096}}
	if !equalSlices(exps, want) {
		t.Fatalf("exports %+v, want %+v", exps, want)
	}
	a, err := lookupExportFile(ctx, f, "a")
	if err != nil || a.Perm() != 0o644 {
		t.Fatalf("export file mode %o, %v", a.Perm(), err)
	}
	if err := DeleteExport(ctx, f, "subdir"); !errors.Is(err, fs.ErrInvalid) {
		t.Fatalf("deleting a directory as an export: %v", err)
	}
	if err := DeleteExport(ctx, f, "a"); err != nil {
		t.Fatal(err)
	}
	if err := DeleteExport(ctx, f, "a"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("deleting twice: %v", err)
	}
	if exps, _ := ListExports(ctx, f); len(exps) != 1 || exps[0].Name != "b" {
		t.Fatalf("after delete: %+v", exps)
	}
	if _, err := (fsExports{f}).lookup(ctx, ""); err == nil {
		t.Fatal("the empty (default) export name resolved")
	}
}

// TestExportSizes: export sizes must be multiples of 4096, and the error
// names the nearest valid sizes; CreateExport and ResizeExport (what the
// admin API and the CLI call) both enforce it.
func TestExportSizes(t *testing.T) {
	cases := []struct {
		name string
		size uint64
		err  error    // nil: valid
		want []string // in the error
	}{
		{"zero", 0, nil, nil},
		{"one block", 4096, nil, nil},
		{"64 MiB", 64 << 20, nil, nil},
		{"the maximum", fs.MaxFileSize, nil, nil},
		{"one byte", 1, fs.ErrInvalid, []string{"not a multiple of 4096", "use 4096 (4K)"}},
		{"1000001", 1000001, fs.ErrInvalid, []string{"not a multiple of 4096", "drop the last 577 bytes", "use 999424 (976K) or 1003520 (980K)"}},
		{"1 GiB plus a sector", 1<<30 + 512, fs.ErrInvalid, []string{"use 1073741824 (1G) or 1073745920 (1048580K)"}},
		{"just under the maximum", fs.MaxFileSize - 1, fs.ErrInvalid, []string{fmt.Sprintf("or %d (1P)", uint64(fs.MaxFileSize))}},
		{"over the maximum", fs.MaxFileSize + 4096, fs.ErrFileTooBig, []string{"exceeds the maximum"}},
	}
	ctx := context.Background()
	f := openTestFS(t)
	mustCreateExport(t, f, "existing", 4096)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			check := func(what string, err error) {
				t.Helper()
				if tc.err == nil {
					if err != nil {
						t.Fatalf("%s: %v", what, err)
					}
					return
				}
				if !errors.Is(err, tc.err) {
					t.Fatalf("%s: %v, want %v", what, err, tc.err)
				}
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Fatalf("%s: %q does not say %q", what, err, w)
					}
				}
			}
			check("ValidateExportSize", ValidateExportSize(tc.size))
			if tc.size > 1<<30 && tc.err == nil {
				return // valid, and not worth a file
			}
			name := fmt.Sprintf("d%d", i)
			check("CreateExport", CreateExport(ctx, f, name, tc.size))
			if tc.err != nil {
				if _, err := lookupExportFile(ctx, f, name); !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("a refused create left an export: %v", err)
				}
			}
			check("ResizeExport", ResizeExport(ctx, f, "existing", tc.size))
		})
	}
}

// TestObserveAndPanicRecovery: Observe sees every command, and a panic in
// it (a bug in the hook) closes only that connection.
func TestObserveAndPanicRecovery(t *testing.T) {
	f := openTestFS(t)
	mustCreateExport(t, f, "disk", 1<<20)
	var mu sync.Mutex
	seen := map[string]int{}
	_, addr := startServer(t, f, Options{Observe: func(cmd string, n int, d time.Duration, err error) {
		if cmd == "cache" {
			panic("observe hook bug")
		}
		mu.Lock()
		seen[cmd]++
		mu.Unlock()
	}})
	c, err := dialClient(addr, "disk", clientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Write(0, []byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(0, 1); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	c.do(cmdCache, 0, 0, 1, nil) // its reply may or may not arrive before the close
	expectClosed(t, c.nc)
	c2, err := dialClient(addr, "disk", clientOptions{})
	if err != nil {
		t.Fatalf("server gone after a panic on another connection: %v", err)
	}
	got, err := c2.Read(0, 1)
	if err != nil || string(got) != "x" {
		t.Fatalf("after the panic: %q %v", got, err)
	}
	c2.Disconnect()
	// Observe runs after the reply is sent (and DISC has none): wait for it.
	missing := func() []string {
		mu.Lock()
		defer mu.Unlock()
		var out []string
		for _, cmd := range []string{"write", "read", "flush", "disc"} {
			if seen[cmd] == 0 {
				out = append(out, cmd)
			}
		}
		return out
	}
	for deadline := time.Now().Add(30 * time.Second); len(missing()) > 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Observe never saw %v", missing())
		}
	}
}

func TestAppendRange(t *testing.T) {
	data := [][]byte{[]byte("abc"), []byte("defgh"), []byte("i"), []byte("jk")}
	tests := []struct {
		name     string
		from, to int
		want     []string
	}{
		{"all", 0, 11, []string{"abc", "defgh", "i", "jk"}},
		{"inside one slice", 4, 6, []string{"ef"}},
		{"across slices", 2, 10, []string{"c", "defgh", "i", "j"}},
		{"on boundaries", 3, 9, []string{"defgh", "i"}},
		{"last byte", 10, 11, []string{"k"}},
		{"empty", 5, 5, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, p := range appendRange(nil, data, tc.from, tc.to) {
				got = append(got, string(p))
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("appendRange(%d, %d) = %q, want %q", tc.from, tc.to, got, tc.want)
			}
		})
	}
}
