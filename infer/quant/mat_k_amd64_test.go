package quant

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
)

// hsumFloat8 is ggml's hsum_float_8.
func hsumFloat8(acc *[8]float32) float32 {
	var h [4]float32
	for l := range h {
		h[l] = acc[l+4] + acc[l]
	}
	return (h[0] + h[2]) + (h[1] + h[3])
}

// ggmlQ4KDot is ggml's AVX2 ggml_vec_dot_q4_K_q8_K written out lane by lane: per block, lane l of
// the integer sum holds elements 4l..4l+3 of every 32, scaled per 32; lane k of the mins' product
// holds mins 2k and 2k+1 against the sums of bsums 4k..4k+3 in pairs.
func ggmlQ4KDot(row []byte, x vec) float32 {
	var acc [8]float32
	var accm [4]float32
	for b, dy := range x.d {
		blk := row[b*q4KBytes : (b+1)*q4KBytes]
		d := dy * F16ToF32(binary.LittleEndian.Uint16(blk))
		dmin := -dy * F16ToF32(binary.LittleEndian.Uint16(blk[2:]))
		sc, m := unpackScalesK4((*[12]byte)(blk[4:16]))
		bs := x.bsums[16*b : 16*b+16]
		for k := range accm {
			prod := int32(m[2*k])*(int32(bs[4*k])+int32(bs[4*k+1])) + int32(m[2*k+1])*(int32(bs[4*k+2])+int32(bs[4*k+3]))
			accm[k] = fma32(dmin, float32(prod), accm[k])
		}
		y := x.qs[b*qkK : (b+1)*qkK]
		for l := range acc {
			var sumi int32
			for j := range 4 {
				var lo, hi int32
				for i := 4 * l; i < 4*l+4; i++ {
					q := blk[16+32*j+i]
					lo += int32(q&0xf) * int32(y[64*j+i])
					hi += int32(q>>4) * int32(y[64*j+32+i])
				}
				sumi += int32(sc[2*j])*lo + int32(sc[2*j+1])*hi
			}
			acc[l] = fma32(d, float32(sumi), acc[l])
		}
	}
	return hsumFloat8(&acc) + ((accm[0] + accm[2]) + (accm[1] + accm[3]))
}

// ggmlQ6KDot is ggml's AVX2 ggml_vec_dot_q6_K_q8_K written out lane by lane: lane l of chunk k of
// half h holds elements 128h + 32k + 4l..4l+3, whose scale is 8h + 2k + l/4.
func ggmlQ6KDot(row []byte, x vec) float32 {
	var acc [8]float32
	for b, dy := range x.d {
		blk := row[b*q6KBytes : (b+1)*q6KBytes]
		d := dy * F16ToF32(binary.LittleEndian.Uint16(blk[q6KD:]))
		y := x.qs[b*qkK : (b+1)*qkK]
		for l := range acc {
			var sumi int32
			for h := range 2 {
				for k := range 4 {
					var s int32
					for i := 4 * l; i < 4*l+4; i++ {
						e := 32*k + i
						q, _ := q6KQuant(blk, 128*h+e)
						s += (int32(q) - 32) * int32(y[128*h+e])
					}
					sumi += int32(int8(blk[q6KScales+8*h+2*k+l/4])) * s
				}
			}
			acc[l] = fma32(d, float32(sumi), acc[l])
		}
	}
	return hsumFloat8(&acc)
}

// TestKKernelsMatchGGML holds the AVX2 K-quant kernels to ggml's operations bit for bit on every
// path: one vector (row pairs and an odd tail) and groups of vectors (full and partial groups of
// eight, row ranges not starting at 0, several tile chunks of rows), and checks that nothing
// outside the range is written.
func TestKKernelsMatchGGML(t *testing.T) {
	if matKernels[Q4_K] == nil {
		t.Skip("no AVX2 kernels on this CPU")
	}
	oracle := map[Type]func([]byte, vec) float32{Q4_K: ggmlQ4KDot, Q6_K: ggmlQ6KDot}
	r := rand.New(rand.NewPCG(41, 42))
	for _, typ := range []Type{Q4_K, Q6_K} {
		for _, nb := range []int{1, 2, 3, 5} {
			cols := nb * qkK
			rows := []int{1, 2, 3, 4, 7}
			if nb == 1 {
				rows = append(rows, kTileBytes/typ.BlockBytes()+3) // two tile chunks
			}
			for _, nrows := range rows {
				w, err := NewMatrix(typ, nrows, cols, randomRows(r, typ, nrows, cols))
				if err != nil {
					t.Fatal(err)
				}
				for _, count := range []int{1, 2, 3, 7, 8, 9, 17} {
					a, _ := prepareVectors(t, r, typ, count, cols)
					start := r.IntN(nrows)
					dst := make([]float32, count*nrows)
					for i := range dst {
						dst[i] = 42
					}
					MatMulRows(dst, w, a, start, nrows)
					rb := w.rowBytes()
					for v := range count {
						for row := range nrows {
							got, want := dst[v*nrows+row], float32(42)
							if row >= start {
								want = oracle[typ](w.Data[row*rb:(row+1)*rb], a.vector(v))
							}
							if math.Float32bits(got) != math.Float32bits(want) {
								t.Fatalf("%s %d blocks, rows [%d, %d), vector %d of %d, row %d: got %g, want %g",
									typ, nb, start, nrows, v, count, row, got, want)
							}
						}
					}
				}
			}
		}
	}
}

// TestKKernelsExtremeQuants: quants and scales at their limits (every Q4_K nibble 15 and 6-bit
// scale 63, every Q6_K quant 0 or 63 and scale -128 or 127, activations ±127) keep the int16 steps
// of VPMADDUBSW and the subtraction of 32s within range, so the kernels still match ggml.
func TestKKernelsExtremeQuants(t *testing.T) {
	if matKernels[Q4_K] == nil {
		t.Skip("no AVX2 kernels on this CPU")
	}
	const cols, nrows = 2 * qkK, 3
	for _, typ := range []Type{Q4_K, Q6_K} {
		for _, fill := range []byte{0x00, 0xff, 0x80, 0x7f} {
			data := make([]byte, nrows*2*typ.BlockBytes())
			for i := range data {
				data[i] = fill
			}
			bb := typ.BlockBytes()
			for b := 0; b < len(data); b += bb {
				// Keep the fp16 scales finite: 0x3c00 is 1.
				if typ == Q4_K {
					binary.LittleEndian.PutUint16(data[b:], 0x3c00)
					binary.LittleEndian.PutUint16(data[b+2:], 0x3c00)
				} else {
					binary.LittleEndian.PutUint16(data[b+q6KD:], 0x3c00)
				}
			}
			w, err := NewMatrix(typ, nrows, cols, data)
			if err != nil {
				t.Fatal(err)
			}
			for _, sign := range []float32{1, -1} {
				x := make([]float32, 3*cols)
				for i := range x {
					x[i] = sign
					if i%7 == 3 {
						x[i] = -sign
					}
				}
				var a Activation
				if err := a.PrepareBatch(typ, x, cols); err != nil {
					t.Fatal(err)
				}
				for _, count := range []int{1, 3} {
					batch := &Activation{format: a.format, n: a.n, count: count, qs: a.qs, d: a.d, bsums: a.bsums}
					dst := make([]float32, count*nrows)
					MatMulRows(dst, w, batch, 0, nrows)
					for v := range count {
						for row := range nrows {
							rowData := w.Data[row*w.rowBytes() : (row+1)*w.rowBytes()]
							want := ggmlQ6KDot
							if typ == Q4_K {
								want = ggmlQ4KDot
							}
							if got, want := dst[v*nrows+row], want(rowData, a.vector(v)); math.Float32bits(got) != math.Float32bits(want) {
								t.Fatalf("%s fill %#x sign %g, vector %d of %d, row %d: got %g, want %g",
									typ, fill, sign, v, count, row, got, want)
							}
						}
					}
				}
			}
		}
	}
}

// TestFMAF32 checks fma32 against exact rational arithmetic on cases where rounding the float64
// sum directly would round twice.
func TestFMAF32(t *testing.T) {
	r := rand.New(rand.NewPCG(43, 44))
	for range 20000 {
		a := float32(r.NormFloat64())
		b := float32(r.NormFloat64())
		c := float32(r.NormFloat64() * math.Ldexp(1, r.IntN(40)-20))
		got := fma32(a, b, c)
		exact := math.FMA(float64(a), float64(b), float64(c))
		// Between the float32 neighbours of got, the exact value must be the nearer (ties to even).
		lo, hi := math.Nextafter32(got, float32(math.Inf(-1))), math.Nextafter32(got, float32(math.Inf(1)))
		if math.Abs(exact-float64(got)) > math.Abs(exact-float64(lo)) || math.Abs(exact-float64(got)) > math.Abs(exact-float64(hi)) {
			t.Fatalf("fma32(%g, %g, %g) = %g, exact %g", a, b, c, got, exact)
		}
	}
}

// BenchmarkMatK compares the AVX2 K-quant kernels with the Go ones in one run: decode (one vector)
// at the 134M FFN shape and at 4096x4096 in bytes of weights per second, and a 64-vector prompt
// chunk in GMAC/s.
func BenchmarkMatK(b *testing.B) {
	shapes := []struct{ rows, cols, count int }{{2048, 768, 1}, {4096, 4096, 1}, {2048, 768, 64}}
	for _, typ := range []Type{Q4_K, Q6_K} {
		for _, s := range shapes {
			w := benchMatrix(b, typ, s.rows, s.cols)
			a, _ := prepareVectors(b, rand.New(rand.NewPCG(45, 46)), typ, s.count, s.cols)
			dst := make([]float32, s.count*s.rows)
			kernels := map[string]matFunc{
				"asm": matKernels[typ],
				"go": func(dst []float32, ldd int, rows []byte, rowBytes int, a *Activation) {
					matGeneric(goKernels[typ], dst, ldd, rows, rowBytes, a)
				},
			}
			for _, name := range []string{"asm", "go"} {
				mat := kernels[name]
				if mat == nil {
					continue
				}
				b.Run(typ.String()+"/"+strconv.Itoa(s.rows)+"x"+strconv.Itoa(s.cols)+"/batch"+strconv.Itoa(s.count)+"/"+name, func(b *testing.B) {
					b.SetBytes(int64(len(w.Data)))
					for b.Loop() {
						mat(dst, s.rows, w.Data, w.rowBytes(), a)
					}
					b.ReportMetric(float64(s.rows*s.cols*s.count)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GMAC/s")
				})
			}
		}
	}
}
