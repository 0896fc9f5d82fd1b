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

// kernelFor returns the dot kernel for rows of type t and cols elements against a, panicking when
// a was not prepared for such rows: that is a wiring mistake in the caller, not bad input.
func kernelFor(t Type, cols int, a *Activation) dotFunc {
	format, ok := vecDotType(t)
	if !ok || a.format != format || a.n != cols {
		panic(fmt.Sprintf("quant: activation (format %s, %d elements) does not fit %s rows of %d elements",
			a.format, a.n, t, cols))
	}
	return dotKernels[t]
}

// MatVecRows computes dst[r] = dot(row r of w, x) for r in [start, end), with x prepared in a. It
// does not allocate, so a pool of workers can split the rows of one product between them. It panics
// if a was prepared for another type or length, or if the range does not fit w or dst.
func MatVecRows(dst []float32, w Matrix, a *Activation, start, end int) {
	rb := w.rowBytes()
	dot := kernelFor(w.Type, w.Cols, a)
	if start < 0 || start > end || end > w.Rows || end > len(dst) {
		panic(fmt.Sprintf("quant: rows [%d, %d) out of range for %d rows and %d outputs", start, end, w.Rows, len(dst)))
	}
	for r := start; r < end; r++ {
		dst[r] = dot(w.Data[r*rb:(r+1)*rb], a)
	}
}

// DotRow dots one row of type t, as stored, against the prepared activation. It panics if a was
// prepared for another type or length.
func DotRow(t Type, row []byte, a *Activation) float32 {
	dot := kernelFor(t, a.n, a)
	if rb, _ := RowBytes(t, a.n); len(row) != rb {
		panic(fmt.Sprintf("quant: %s row of %d bytes, want %d for %d elements", t, len(row), rb, a.n))
	}
	return dot(row, a)
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
