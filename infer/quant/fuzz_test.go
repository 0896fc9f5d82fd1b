package quant

import (
	"math"
	"testing"
)

// FuzzDequantize feeds arbitrary bytes, types and lengths to Dequantize: it must never panic, must
// accept exactly the inputs whose size matches, and then must agree with DequantizeRow.
func FuzzDequantize(f *testing.F) {
	f.Add(uint32(Q4_K), uint16(256), make([]byte, 144))
	f.Add(uint32(Q6_K), uint16(256), q6KHandBlock())
	f.Add(uint32(Q4_0), uint16(32), []byte{0x00, 0x38, 0xf0, 0xe1, 0xd2, 0xc3, 0xb4, 0xa5, 0x96, 0x87, 0x78, 0x69, 0x5a, 0x4b, 0x3c, 0x2d, 0x1e, 0x0f})
	f.Add(uint32(Q8_0), uint16(32), make([]byte, 34))
	f.Add(uint32(F16), uint16(3), []byte{0x00, 0x7c, 0x01, 0x7c, 0x00, 0x80})
	f.Add(uint32(BF16), uint16(1), []byte{0xc0, 0x7f})
	f.Add(uint32(F32), uint16(1), []byte{1, 2, 3})
	f.Add(uint32(Q8_K), uint16(256), make([]byte, 292))
	f.Add(uint32(13), uint16(256), make([]byte, 176))
	f.Fuzz(func(t *testing.T, typ uint32, n uint16, src []byte) {
		dst := make([]float32, n)
		err := Dequantize(Type(typ), dst, src)
		want, sizeErr := RowBytes(Type(typ), int(n))
		if (err == nil) != (sizeErr == nil && want == len(src)) {
			t.Fatalf("Dequantize(%s, %d, %d bytes) = %v; RowBytes = %d, %v", Type(typ), n, len(src), err, want, sizeErr)
		}
		if err != nil || n == 0 {
			return
		}
		w, err := NewMatrix(Type(typ), 1, int(n), src)
		if err != nil {
			t.Fatalf("NewMatrix after a successful Dequantize: %v", err)
		}
		row := make([]float32, n)
		DequantizeRow(w, 0, row)
		for i := range row {
			if math.Float32bits(row[i]) != math.Float32bits(dst[i]) {
				t.Fatalf("element %d: DequantizeRow %g, Dequantize %g", i, row[i], dst[i])
			}
		}
	})
}
