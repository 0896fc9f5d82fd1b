package gguf

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"

	"github.com/rbee-dev/rbee/infer/quant"
)

// Writer builds a GGUF v3 file. Tests and benchmarks use it to make their own
// models; it keeps metadata and tensors in the order they were added.
type Writer struct {
	kvs       []KV
	keys      map[string]bool
	tensors   []TensorInfo
	names     map[string]bool
	alignment uint64
}

// NewWriter returns an empty writer with the default alignment.
func NewWriter() *Writer {
	return &Writer{keys: map[string]bool{}, names: map[string]bool{}, alignment: DefaultAlignment}
}

// Set adds a metadata value. Supported Go types: uint8 ... uint64, int8 ...
// int64, float32, float64, bool, string, slices of those, Array, and a Value read from a file.
// Setting general.alignment also changes the data alignment.
func (w *Writer) Set(key string, v any) error {
	if w.keys[key] {
		return fmt.Errorf("gguf writer: duplicate key %q", key)
	}
	val, err := toValue(v)
	if err != nil {
		return fmt.Errorf("gguf writer: key %q: %w", key, err)
	}
	if key == "general.alignment" {
		a, ok := val.Int()
		if !ok || a <= 0 || a&(a-1) != 0 {
			return fmt.Errorf("gguf writer: general.alignment %v is not a power of two", v)
		}
		w.alignment = uint64(a)
	}
	w.keys[key] = true
	w.kvs = append(w.kvs, KV{Key: key, Value: val})
	return nil
}

// AddTensor adds a tensor; dims are in ggml order (dims[0] is the row length)
// and data must hold exactly the bytes that type and shape need.
func (w *Writer) AddTensor(name string, t quant.Type, dims []uint64, data []byte) error {
	if w.names[name] {
		return fmt.Errorf("gguf writer: duplicate tensor %q", name)
	}
	if len(dims) == 0 || len(dims) > maxDims {
		return fmt.Errorf("gguf writer: tensor %q has %d dimensions", name, len(dims))
	}
	info := TensorInfo{Name: name, Dims: append([]uint64(nil), dims...), Type: t, Data: data}
	size, err := quant.TensorBytes(t, info.Elements())
	if err != nil {
		return fmt.Errorf("gguf writer: tensor %q: %w", name, err)
	}
	if uint64(len(data)) != size {
		return fmt.Errorf("gguf writer: tensor %q: %d bytes of data, want %d", name, len(data), size)
	}
	w.names[name] = true
	w.tensors = append(w.tensors, info)
	return nil
}

func toValue(v any) (Value, error) {
	switch x := v.(type) {
	case Value:
		// One read from another file: a file can be copied with changes.
		return x, nil
	case uint8:
		return Value{TypeUint8, x}, nil
	case int8:
		return Value{TypeInt8, x}, nil
	case uint16:
		return Value{TypeUint16, x}, nil
	case int16:
		return Value{TypeInt16, x}, nil
	case uint32:
		return Value{TypeUint32, x}, nil
	case int32:
		return Value{TypeInt32, x}, nil
	case float32:
		return Value{TypeFloat32, x}, nil
	case bool:
		return Value{TypeBool, x}, nil
	case string:
		return Value{TypeString, x}, nil
	case uint64:
		return Value{TypeUint64, x}, nil
	case int64:
		return Value{TypeInt64, x}, nil
	case float64:
		return Value{TypeFloat64, x}, nil
	case Array:
		return Value{TypeArray, x}, nil
	}
	if a, ok := sliceArray(v); ok {
		return Value{TypeArray, a}, nil
	}
	return Value{}, fmt.Errorf("unsupported value type %T", v)
}

func sliceArray(v any) (Array, bool) {
	switch v.(type) {
	case []uint8:
		return Array{TypeUint8, v}, true
	case []int8:
		return Array{TypeInt8, v}, true
	case []uint16:
		return Array{TypeUint16, v}, true
	case []int16:
		return Array{TypeInt16, v}, true
	case []uint32:
		return Array{TypeUint32, v}, true
	case []int32:
		return Array{TypeInt32, v}, true
	case []float32:
		return Array{TypeFloat32, v}, true
	case []bool:
		return Array{TypeBool, v}, true
	case []string:
		return Array{TypeString, v}, true
	case []uint64:
		return Array{TypeUint64, v}, true
	case []int64:
		return Array{TypeInt64, v}, true
	case []float64:
		return Array{TypeFloat64, v}, true
	case []Array:
		return Array{TypeArray, v}, true
	}
	return Array{}, false
}

// WriteTo writes the whole file.
func (w *Writer) WriteTo(dst io.Writer) (int64, error) {
	cw := &countWriter{w: bufio.NewWriter(dst)}
	e := encoder{w: cw}
	e.u32(Magic)
	e.u32(3)
	e.u64(uint64(len(w.tensors)))
	e.u64(uint64(len(w.kvs)))
	for _, kv := range w.kvs {
		e.str(kv.Key)
		e.value(kv.Value)
	}
	offsets := make([]uint64, len(w.tensors))
	var off uint64
	for i, t := range w.tensors {
		offsets[i] = off
		off = alignUp(off+uint64(len(t.Data)), w.alignment)
	}
	for i, t := range w.tensors {
		e.str(t.Name)
		e.u32(uint32(len(t.Dims)))
		for _, d := range t.Dims {
			e.u64(d)
		}
		e.u32(uint32(t.Type))
		e.u64(offsets[i])
	}
	e.pad(w.alignment)
	for _, t := range w.tensors {
		e.bytes(t.Data)
		e.pad(w.alignment)
	}
	if e.err == nil {
		e.err = cw.w.(*bufio.Writer).Flush()
	}
	return cw.n, e.err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

type encoder struct {
	w   *countWriter
	err error
	buf [8]byte
}

func (e *encoder) bytes(b []byte) {
	if e.err == nil {
		_, e.err = e.w.Write(b)
	}
}

func (e *encoder) u32(v uint32) {
	binary.LittleEndian.PutUint32(e.buf[:4], v)
	e.bytes(e.buf[:4])
}

func (e *encoder) u64(v uint64) {
	binary.LittleEndian.PutUint64(e.buf[:8], v)
	e.bytes(e.buf[:8])
}

func (e *encoder) str(s string) {
	e.u64(uint64(len(s)))
	e.bytes([]byte(s))
}

func (e *encoder) pad(a uint64) {
	if n := alignUp(uint64(e.w.n), a) - uint64(e.w.n); n > 0 {
		e.bytes(make([]byte, n))
	}
}

func (e *encoder) value(v Value) {
	e.u32(uint32(v.Type))
	e.payload(v.Type, v.v)
}

func (e *encoder) payload(t ValueType, v any) {
	switch x := v.(type) {
	case uint8:
		e.bytes([]byte{x})
	case int8:
		e.bytes([]byte{byte(x)})
	case bool:
		b := byte(0)
		if x {
			b = 1
		}
		e.bytes([]byte{b})
	case uint16:
		binary.LittleEndian.PutUint16(e.buf[:2], x)
		e.bytes(e.buf[:2])
	case int16:
		binary.LittleEndian.PutUint16(e.buf[:2], uint16(x))
		e.bytes(e.buf[:2])
	case uint32:
		e.u32(x)
	case int32:
		e.u32(uint32(x))
	case float32:
		e.u32(math.Float32bits(x))
	case uint64:
		e.u64(x)
	case int64:
		e.u64(uint64(x))
	case float64:
		e.u64(math.Float64bits(x))
	case string:
		e.str(x)
	case Array:
		e.u32(uint32(x.Elem))
		e.u64(uint64(x.Len()))
		e.elements(x)
	default:
		if e.err == nil {
			e.err = fmt.Errorf("gguf writer: cannot encode %T as %s", v, t)
		}
	}
}

func (e *encoder) elements(a Array) {
	each := func(n int, at func(int) any) {
		for i := range n {
			e.payload(a.Elem, at(i))
		}
	}
	switch s := a.Values.(type) {
	case []uint8:
		e.bytes(s)
	case []int8:
		each(len(s), func(i int) any { return s[i] })
	case []uint16:
		each(len(s), func(i int) any { return s[i] })
	case []int16:
		each(len(s), func(i int) any { return s[i] })
	case []uint32:
		each(len(s), func(i int) any { return s[i] })
	case []int32:
		each(len(s), func(i int) any { return s[i] })
	case []float32:
		each(len(s), func(i int) any { return s[i] })
	case []bool:
		each(len(s), func(i int) any { return s[i] })
	case []string:
		each(len(s), func(i int) any { return s[i] })
	case []uint64:
		each(len(s), func(i int) any { return s[i] })
	case []int64:
		each(len(s), func(i int) any { return s[i] })
	case []float64:
		each(len(s), func(i int) any { return s[i] })
	case []Array:
		each(len(s), func(i int) any { return s[i] })
	}
}
