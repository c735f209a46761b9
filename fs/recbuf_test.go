package fs

import "testing"

func TestRecordBuffers(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name    string
		put     []int // capacities handed back, in order
		get     int
		wantCap int // 0: a new buffer
	}{
		{"empty pool allocates rounded up", nil, 3*mib + 1, 0},
		{"reuses a buffer that fits", []int{4 * mib}, 3 * mib, 4 * mib},
		{"skips a buffer too small", []int{mib, 8 * mib}, 2 * mib, 8 * mib},
		{"nothing fits", []int{mib}, 2 * mib, 0},
		{"oversized buffers are not kept", []int{64 * mib}, mib, 0},
		{"full pool keeps the larger", []int{mib, mib, 6 * mib}, 5 * mib, 6 * mib},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRecordBuffers(2, 16*mib)
			for _, c := range tc.put {
				r.put(make([]byte, 10, c))
			}
			b := r.get(tc.get)
			if len(b) != tc.get {
				t.Fatalf("len %d, want %d", len(b), tc.get)
			}
			if tc.wantCap == 0 {
				if cap(b)%mib != 0 || cap(b) < tc.get || cap(b) >= tc.get+mib {
					t.Fatalf("new buffer of cap %d for %d bytes", cap(b), tc.get)
				}
				return
			}
			if cap(b) != tc.wantCap {
				t.Fatalf("cap %d, want the pooled %d", cap(b), tc.wantCap)
			}
		})
	}
}
