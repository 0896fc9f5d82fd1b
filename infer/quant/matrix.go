package quant

import (
	"fmt"
	"math"
)

// Matrix is a row-major weight matrix. Data is a slice of the mapped model file and is never copied.
type Matrix struct {
	Type       Type
	Rows, Cols int
	Data       []byte
}

// NewMatrix checks that data holds exactly rows rows of cols elements of type t.
func NewMatrix(t Type, rows, cols int, data []byte) (Matrix, error) {
	rb, err := RowBytes(t, cols)
	if err != nil {
		return Matrix{}, fmt.Errorf("matrix %dx%d: %w", rows, cols, err)
	}
	if rows < 0 {
		return Matrix{}, fmt.Errorf("matrix %dx%d %s: negative row count", rows, cols, t)
	}
	if rb != 0 && rows > math.MaxInt/rb {
		return Matrix{}, fmt.Errorf("matrix %dx%d %s: size overflows", rows, cols, t)
	}
	if len(data) != rows*rb {
		return Matrix{}, fmt.Errorf("matrix %dx%d %s: want %d bytes, got %d", rows, cols, t, rows*rb, len(data))
	}
	return Matrix{Type: t, Rows: rows, Cols: cols, Data: data}, nil
}

// rowBytes returns the bytes per row of w, panicking if w does not describe its data: a Matrix
// reaching the kernels without NewMatrix's checks is a programming error.
func (w Matrix) rowBytes() int {
	rb, err := RowBytes(w.Type, w.Cols)
	if err != nil || w.Rows < 0 || rb != 0 && len(w.Data)/rb < w.Rows {
		panic(fmt.Sprintf("quant: invalid matrix %s %dx%d with %d bytes", w.Type, w.Rows, w.Cols, len(w.Data)))
	}
	return rb
}

// checkActivation panics when a was not prepared for rows of type t and cols elements: that is a
// wiring mistake in the caller, not bad input.
func checkActivation(t Type, cols int, a *Activation) {
	format, ok := vecDotType(t)
	if !ok || a.format != format || a.n != cols {
		panic(fmt.Sprintf("quant: activation (format %s, %d elements) does not fit %s rows of %d elements",
			a.format, a.n, t, cols))
	}
}

// MatMulRows computes dst[v*w.Rows+r] = dot(row r of w, vector v of a) for r in [start, end) and
// every vector v of the batch a. Each result depends only on its row and its vector, whatever the
// batch and the range (see matFunc). It does not allocate, so a pool of workers can split the rows
// of one product between them. It panics if a was prepared for another type or length, or if the
// range does not fit w or dst.
func MatMulRows(dst []float32, w Matrix, a *Activation, start, end int) {
	rb := w.rowBytes()
	checkActivation(w.Type, w.Cols, a)
	if start < 0 || start > end || end > w.Rows || len(dst) < a.count*w.Rows {
		panic(fmt.Sprintf("quant: rows [%d, %d) of %d for %d vectors into %d outputs",
			start, end, w.Rows, a.count, len(dst)))
	}
	if start == end || a.count == 0 {
		return
	}
	rows := w.Data[start*rb : end*rb]
	if mat := matKernels[w.Type]; mat != nil {
		mat(dst[start:], w.Rows, rows, rb, a)
		return
	}
	matGeneric(dotKernels[w.Type], dst[start:], w.Rows, rows, rb, a)
}

// MatVecRows is MatMulRows for a batch of one vector.
func MatVecRows(dst []float32, w Matrix, a *Activation, start, end int) {
	MatMulRows(dst, w, a, start, end)
}

// DotRow dots one row of type t, as stored, against the single prepared vector in a, with the kernel
// MatMulRows uses. It panics if a was prepared for another type or length, or holds several vectors.
func DotRow(t Type, row []byte, a *Activation) float32 {
	checkActivation(t, a.n, a)
	if rb, _ := RowBytes(t, a.n); len(row) != rb || a.count != 1 {
		panic(fmt.Sprintf("quant: %s row of %d bytes against %d vectors, want %d bytes and one vector of %d elements",
			t, len(row), a.count, rb, a.n))
	}
	if mat := matKernels[t]; mat != nil {
		mat(a.one[:], 1, row, len(row), a)
		return a.one[0]
	}
	return dotKernels[t](row, a.vector(0))
}

// DequantizeRow writes row r of w to dst[:w.Cols] (token embedding lookup). It panics if r is out of
// range or dst is too short.
func DequantizeRow(w Matrix, r int, dst []float32) {
	rb := w.rowBytes()
	if r < 0 || r >= w.Rows || len(dst) < w.Cols {
		panic(fmt.Sprintf("quant: row %d of %d rows into %d floats, want %d", r, w.Rows, len(dst), w.Cols))
	}
	dequantizeRow(w.Type, dst[:w.Cols], w.Data[r*rb:(r+1)*rb])
}
