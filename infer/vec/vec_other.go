//go:build !amd64

package vec

func dotsF16(dst []float32, q []float32, k []uint16, stride int)  { dotsF16Go(dst, q, k, stride) }
func axpysF16(out []float32, p []float32, v []uint16, stride int) { axpysF16Go(out, p, v, stride) }
func maxF32(x []float32) float32                                  { return maxF32Go(x) }
func expSub(x []float32, m float32) float64                       { return expSubGo(x, m) }
func scale(x []float32, s float32)                                { scaleGo(x, s) }
func swiglu8(gate, up []float32)                                  { swiglu8Go(gate, up) }
func roundF16(dst, src []float32)                                 { roundF16Go(dst, src) }
func toF16(dst []uint16, src []float32)                           { toF16Go(dst, src) }
func add(dst, src []float32)                                      { addGo(dst, src) }
func fromF16(dst []float32, src []uint16)                         { fromF16Go(dst, src) }
