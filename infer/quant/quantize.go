package quant

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Quantize stores the elements of src as type t in dst, which must be exactly their size. The
// quantisers follow ggml's reference ones (quantize_row_*_ref): they are for tests and for writing
// synthetic models, not for speed. Quantised types reject NaN and infinite inputs.
func Quantize(t Type, dst []byte, src []float32) error {
	want, err := RowBytes(t, len(src))
	if err != nil {
		return fmt.Errorf("quantize: %w", err)
	}
	if len(dst) != want {
		return fmt.Errorf("quantize: %d elements of %s take %d bytes, got %d", len(src), t, want, len(dst))
	}
	switch t {
	case F32:
		for i, v := range src {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
		}
		return nil
	case F16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], F32ToF16(v))
		}
		return nil
	case BF16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], F32ToBF16(v))
		}
		return nil
	}
	for i, v := range src {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("quantize: %s: element %d is %v", t, i, v)
		}
	}
	switch t {
	case Q8_0:
		quantQ8_0(dst, src)
	case Q4_0:
		quantQ4_0(dst, src)
	case Q4_K:
		quantQ4K(dst, src)
	case Q6_K:
		quantQ6K(dst, src)
	}
	return checkScales(t, dst)
}

// checkScales reports blocks whose fp16 scales overflowed: their values were too large for the type.
func checkScales(t Type, blocks []byte) error {
	bb := t.BlockBytes()
	for i := 0; i+bb <= len(blocks); i += bb {
		blk := blocks[i : i+bb]
		var d, dmin float32
		switch t {
		case Q8_0, Q4_0:
			d = getF16(blk)
		case Q4_K:
			d, dmin = getF16(blk), getF16(blk[2:])
		case Q6_K:
			d = getF16(blk[q6KD:])
		}
		if math.IsInf(float64(d), 0) || math.IsInf(float64(dmin), 0) {
			return fmt.Errorf("quantize: %s block %d: values too large for an fp16 scale", t, i/bb)
		}
	}
	return nil
}

// nearestInt rounds to the nearest integer, ties to even, with ggml's trick of adding 1.5*2^23 so the
// integer lands in the mantissa; valid for |f| < 2^22, which every caller guarantees by construction.
// The explicit conversion keeps the compiler from fusing the caller's multiply into the add.
func nearestInt(f float32) int {
	v := float32(f) + 12582912
	return int(math.Float32bits(v)&0x007fffff) - 0x00400000
}

func clampInt(v, lo, hi int) int {
	return max(lo, min(hi, v))
}

func putF16(b []byte, f float32) {
	binary.LittleEndian.PutUint16(b, F32ToF16(f))
}

func getF16(b []byte) float32 {
	return f16Table[binary.LittleEndian.Uint16(b)]
}

// quantQ8_0: d = amax/127, q = round(x/d) (ggml's quantize_row_q8_0_ref).
func quantQ8_0(dst []byte, src []float32) {
	for ; len(src) >= qk0; src, dst = src[qk0:], dst[q8_0Bytes:] {
		x := src[:qk0]
		var amax float32
		for _, v := range x {
			amax = max(amax, abs32(v))
		}
		d := amax / 127
		var id float32
		if d != 0 {
			id = 1 / d
		}
		putF16(dst, d)
		for j, v := range x {
			dst[2+j] = byte(int8(math.Round(float64(v * id))))
		}
	}
}

// quantQ4_0: d = max/-8 where max is the element of largest magnitude, so that element maps to
// exactly 0 (the value -8); q = min(15, trunc(x/d + 8.5)) (ggml's quantize_row_q4_0_ref).
func quantQ4_0(dst []byte, src []float32) {
	for ; len(src) >= qk0; src, dst = src[qk0:], dst[q4_0Bytes:] {
		x := src[:qk0]
		var amax, mx float32
		for _, v := range x {
			if a := abs32(v); amax < a {
				amax, mx = a, v
			}
		}
		d := mx / -8
		var id float32
		if d != 0 {
			id = 1 / d
		}
		putF16(dst, d)
		for j := range qk0 / 2 {
			x0 := min(15, int(int8(x[j]*id+8.5)))
			x1 := min(15, int(int8(x[j+qk0/2]*id+8.5)))
			dst[2+j] = byte(x0) | byte(x1)<<4
		}
	}
}

func abs32(v float32) float32 {
	return math.Float32frombits(math.Float32bits(v) &^ (1 << 31))
}

// quantQ4K follows ggml's quantize_row_q4_K_ref: fit each 32-element sub-block with a scale and a
// min (make_qkx2_quants), quantise the eight scales and eight mins to six bits against the block's
// largest, then requantise the elements with the scales as stored.
func quantQ4K(dst []byte, src []float32) {
	var (
		L       [qkK]uint8
		laux    [32]uint8
		weights [32]float32
		scales  [8]float32
		mins    [8]float32
	)
	for ; len(src) >= qkK; src, dst = src[qkK:], dst[q4KBytes:] {
		x := src[:qkK]
		var maxScale, maxMin float32
		for j := range 8 {
			xs := x[32*j : 32*j+32]
			var sumX2 float32
			for _, v := range xs {
				sumX2 += v * v
			}
			avX := float32(math.Sqrt(float64(sumX2 / 32)))
			for l, v := range xs {
				weights[l] = avX + abs32(v)
			}
			scales[j], mins[j] = makeQKX2Quants(15, xs, weights[:], L[32*j:32*j+32], laux[:], -1, 0.1, 20)
			maxScale = max(maxScale, scales[j])
			maxMin = max(maxMin, mins[j])
		}
		var invScale, invMin float32
		if maxScale > 0 {
			invScale = 63 / maxScale
		}
		if maxMin > 0 {
			invMin = 63 / maxMin
		}
		s := (*[12]byte)(dst[4:16])
		*s = [12]byte{}
		for j := range 8 {
			ls := uint8(clampInt(nearestInt(invScale*scales[j]), 0, 63))
			lm := uint8(clampInt(nearestInt(invMin*mins[j]), 0, 63))
			if j < 4 {
				s[j] = ls
				s[j+4] = lm
			} else {
				s[j+4] = ls&0xf | lm&0xf<<4
				s[j-4] |= ls >> 4 << 6
				s[j] |= lm >> 4 << 6
			}
		}
		putF16(dst[0:], maxScale/63)
		putF16(dst[2:], maxMin/63)
		d, dmin := getF16(dst[0:]), getF16(dst[2:])
		for j := range 8 {
			sc, m := scaleMinK4(j, s)
			dj := d * float32(sc)
			if dj == 0 {
				continue
			}
			dm := dmin * float32(m)
			for i, v := range x[32*j : 32*j+32] {
				L[32*j+i] = uint8(clampInt(nearestInt((v+dm)/dj), 0, 15))
			}
		}
		q := dst[16:q4KBytes]
		for j := 0; j < qkK; j += 64 {
			for l := range 32 {
				q[j/2+l] = L[j+l] | L[j+l+32]<<4
			}
		}
	}
}

// makeQKX2Quants is ggml's make_qkx2_quants: fit x ≈ scale*L - min with L in [0, nmax], min >= 0,
// minimising the weighted squared error over a sweep of nstep+1 candidate scales around nmax/(max-min).
func makeQKX2Quants(nmax int, x, weights []float32, L, laux []uint8, rmin, rdelta float32, nstep int) (scale, theMin float32) {
	n := len(x)
	mn, mx := x[0], x[0]
	sumW := weights[0]
	sumX := sumW * x[0]
	for i := 1; i < n; i++ {
		mn = min(mn, x[i])
		mx = max(mx, x[i])
		sumW += weights[i]
		sumX += weights[i] * x[i]
	}
	mn = min(mn, 0)
	if mx == mn {
		for i := range n {
			L[i] = 0
		}
		return 0, -mn
	}
	iscale := float32(nmax) / (mx - mn)
	scale = 1 / iscale
	var bestError float32
	for i := range n {
		l := clampInt(nearestInt(iscale*(x[i]-mn)), 0, nmax)
		L[i] = uint8(l)
		diff := scale*float32(l) + mn - x[i]
		bestError += weights[i] * diff * diff
	}
	for is := 0; is <= nstep; is++ {
		iscale = (rmin + rdelta*float32(is) + float32(nmax)) / (mx - mn)
		var sumL, sumL2, sumXL float32
		for i := range n {
			l := clampInt(nearestInt(iscale*(x[i]-mn)), 0, nmax)
			laux[i] = uint8(l)
			w := weights[i]
			fl := float32(l)
			sumL += w * fl
			sumL2 += w * fl * fl
			sumXL += w * fl * x[i]
		}
		D := sumW*sumL2 - sumL*sumL
		if D <= 0 {
			continue
		}
		thisScale := (sumW*sumXL - sumX*sumL) / D
		thisMin := (sumL2*sumX - sumL*sumXL) / D
		if thisMin > 0 {
			thisMin = 0
			thisScale = sumXL / sumL2
		}
		var curError float32
		for i := range n {
			diff := thisScale*float32(laux[i]) + thisMin - x[i]
			curError += weights[i] * diff * diff
		}
		if curError < bestError {
			copy(L[:n], laux[:n])
			bestError = curError
			scale = thisScale
			mn = thisMin
		}
	}
	return scale, -mn
}

// groupMaxEps is ggml's GROUP_MAX_EPS: groups whose largest magnitude is below it quantise to zero.
const groupMaxEps = 1e-15

// quantQ6K follows ggml's quantize_row_q6_K_ref: fit each 16-element group with a signed scale
// (make_qx_quants, weighted by x²), quantise the sixteen scales to int8 against the largest, then
// requantise the elements to [-32, 31] with the scales as stored.
func quantQ6K(dst []byte, src []float32) {
	var (
		L      [qkK]int8
		scales [16]float32
	)
	for ; len(src) >= qkK; src, dst = src[qkK:], dst[q6KBytes:] {
		x := src[:qkK]
		var maxScale, maxAbsScale float32
		for ib := range 16 {
			scales[ib] = makeQXQuantsRMSE(32, x[16*ib:16*ib+16], L[16*ib:16*ib+16])
			if a := abs32(scales[ib]); a > maxAbsScale {
				maxAbsScale, maxScale = a, scales[ib]
			}
		}
		blk := dst[:q6KBytes]
		if maxAbsScale < groupMaxEps {
			clear(blk)
			continue
		}
		iscale := -128 / maxScale
		putF16(blk[q6KD:], 1/iscale)
		d := getF16(blk[q6KD:])
		sc := blk[q6KScales:q6KD]
		for ib := range 16 {
			sc[ib] = byte(int8(clampInt(nearestInt(iscale*scales[ib]), -128, 127)))
		}
		for j := range 16 {
			dj := d * float32(int8(sc[j]))
			if dj == 0 {
				continue
			}
			for i, v := range x[16*j : 16*j+16] {
				L[16*j+i] = int8(clampInt(nearestInt(v/dj), -32, 31) + 32)
			}
		}
		for h := range 2 {
			ql := blk[64*h : 64*h+64]
			qh := blk[q6KQh+32*h : q6KQh+32*h+32]
			l4 := L[128*h : 128*h+128]
			for l := range 32 {
				q1, q2, q3, q4 := uint8(l4[l]), uint8(l4[l+32]), uint8(l4[l+64]), uint8(l4[l+96])
				ql[l] = q1&0xf | q3&0xf<<4
				ql[l+32] = q2&0xf | q4&0xf<<4
				qh[l] = q1>>4 | q2>>4<<2 | q3>>4<<4 | q4>>4<<6
			}
		}
	}
}

// makeQXQuantsRMSE is ggml's make_qx_quants with rmse_type 1 and no importance weights (the form
// quantize_row_q6_K_ref uses): fit x ≈ scale*(L-nmax) with L-nmax in [-nmax, nmax-1], weighting each
// element by x², trying 19 scales around -nmax/max and keeping the best least-squares fit.
func makeQXQuantsRMSE(nmax int, x []float32, L []int8) float32 {
	var mx, amax float32
	for _, v := range x {
		if a := abs32(v); a > amax {
			amax, mx = a, v
		}
	}
	if amax < groupMaxEps {
		for i := range x {
			L[i] = 0
		}
		return 0
	}
	iscale := -float32(nmax) / mx
	var sumLX, sumL2 float32
	for i, v := range x {
		l := clampInt(nearestInt(iscale*v), -nmax, nmax-1)
		L[i] = int8(l + nmax)
		sumLX, sumL2 = accumQX(sumLX, sumL2, v, l)
	}
	var scale float32
	if sumL2 != 0 {
		scale = sumLX / sumL2
	}
	best := scale * sumLX
	for is := -9; is <= 9; is++ {
		if is == 0 {
			continue
		}
		iscale = -(float32(nmax) + float32(0.1*float32(is))) / mx // conversion: no FMA, as in ggml
		sumLX, sumL2 = 0, 0
		for _, v := range x {
			l := clampInt(nearestInt(iscale*v), -nmax, nmax-1)
			sumLX, sumL2 = accumQX(sumLX, sumL2, v, l)
		}
		if sumL2 > 0 && sumLX*sumLX > best*sumL2 {
			for i, v := range x {
				L[i] = int8(nmax + clampInt(nearestInt(iscale*v), -nmax, nmax-1))
			}
			scale = sumLX / sumL2
			best = scale * sumLX
		}
	}
	return scale
}

// accumQX adds one element to make_qx_quants' sums with ggml's evaluation order, w*x*l and w*l*l
// left to right with w = x², each step rounded to float32 (w*(l*l) differs in the last bit, and the
// comparisons of the scale search are that sensitive).
func accumQX(sumLX, sumL2, x float32, l int) (float32, float32) {
	w := x * x
	fl := float32(l)
	return sumLX + float32(float32(w*x)*fl), sumL2 + float32(float32(w*fl)*fl)
}
