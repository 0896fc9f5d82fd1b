package quant

import (
	"errors"
	"math"
	"testing"
)

func TestTypeMetadata(t *testing.T) {
	cases := []struct {
		t          Type
		name       string
		block      int
		bytes      int
		supported  bool
		formatName string
	}{
		{F32, "F32", 1, 4, true, "F32"},
		{F16, "F16", 1, 2, true, "F16"},
		{BF16, "BF16", 1, 2, true, "BF16"},
		{Q8_0, "Q8_0", 32, 34, true, "Q8_0"},
		{Q4_0, "Q4_0", 32, 18, true, "Q8_0"},
		{Q4_K, "Q4_K", 256, 144, true, "Q8_K"},
		{Q6_K, "Q6_K", 256, 210, true, "Q8_K"},
		{Q8_K, "Q8_K", 256, 292, false, ""},
		{Type(13), "Q5_K", 0, 0, false, ""},
		{Type(3), "Q4_1", 0, 0, false, ""},
		{Type(39), "MXFP4", 0, 0, false, ""},
		{Type(4), "type(4)", 0, 0, false, ""}, // retired id
		{Type(1000), "type(1000)", 0, 0, false, ""},
		{Type(math.MaxUint32), "type(4294967295)", 0, 0, false, ""},
	}
	for _, c := range cases {
		if got := c.t.String(); got != c.name {
			t.Errorf("Type(%d).String() = %q, want %q", uint32(c.t), got, c.name)
		}
		if got := c.t.BlockSize(); got != c.block {
			t.Errorf("%s.BlockSize() = %d, want %d", c.name, got, c.block)
		}
		if got := c.t.BlockBytes(); got != c.bytes {
			t.Errorf("%s.BlockBytes() = %d, want %d", c.name, got, c.bytes)
		}
		if got := c.t.Supported(); got != c.supported {
			t.Errorf("%s.Supported() = %v, want %v", c.name, got, c.supported)
		}
		format, ok := vecDotType(c.t)
		if ok != (c.formatName != "") || ok && format.String() != c.formatName {
			t.Errorf("vecDotType(%s) = %s, %v, want %q", c.name, format, ok, c.formatName)
		}
	}
}

func TestRowBytes(t *testing.T) {
	good := []struct {
		t    Type
		n    int
		want int
	}{
		{F32, 7, 28},
		{F16, 3, 6},
		{BF16, 0, 0},
		{Q8_0, 64, 68},
		{Q4_0, 4096, 128 * 18},
		{Q4_K, 512, 288},
		{Q6_K, 4096, 16 * 210},
	}
	for _, c := range good {
		got, err := RowBytes(c.t, c.n)
		if err != nil || got != c.want {
			t.Errorf("RowBytes(%s, %d) = %d, %v, want %d", c.t, c.n, got, err, c.want)
		}
	}
	bad := []struct {
		t           Type
		n           int
		unsupported bool
	}{
		{Q4_K, 100, false},
		{Q8_0, 33, false},
		{F32, -1, false},
		{Q8_0, math.MaxInt - math.MaxInt%32, false}, // overflows
		{Type(13), 256, true},
		{Q8_K, 256, true},
	}
	for _, c := range bad {
		got, err := RowBytes(c.t, c.n)
		if err == nil {
			t.Errorf("RowBytes(%s, %d) = %d, want an error", c.t, c.n, got)
			continue
		}
		if errors.Is(err, ErrUnsupported) != c.unsupported {
			t.Errorf("RowBytes(%s, %d): %v; wraps ErrUnsupported = %v, want %v", c.t, c.n, err, !c.unsupported, c.unsupported)
		}
	}
}

func TestTensorBytes(t *testing.T) {
	got, err := TensorBytes(Q4_K, 4096*4096)
	if err != nil || got != 4096*4096/256*144 {
		t.Errorf("TensorBytes(Q4_K, 4096²) = %d, %v", got, err)
	}
	got, err = TensorBytes(F32, 1<<61)
	if err != nil || got != 1<<63 {
		t.Errorf("TensorBytes(F32, 2^61) = %d, %v", got, err)
	}
	bad := []struct {
		t     Type
		elems uint64
	}{
		{F32, 1 << 62},                  // 2^64 bytes
		{Q8_0, math.MaxUint64 &^ 31},    // blocks*34 overflows
		{Q6_K, 255},                     // not whole blocks
		{Type(10), 256},                 // Q2_K
		{Type(math.MaxUint32), 1 << 10}, // unknown id
		{F16, math.MaxUint64/2 + 1},     // exactly 2^64 bytes
	}
	for _, c := range bad {
		if got, err := TensorBytes(c.t, c.elems); err == nil {
			t.Errorf("TensorBytes(%s, %d) = %d, want an error", c.t, c.elems, got)
		}
	}
}
