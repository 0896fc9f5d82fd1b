package gguf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"

	"github.com/rbee-dev/rbee/infer/quant"
)

// Magic is "GGUF" read as a little-endian uint32.
const Magic = 0x46554747

// DefaultAlignment applies when general.alignment is absent.
const DefaultAlignment = 32

const (
	maxKeyLen    = 1 << 16
	maxDims      = 4
	maxArrayNest = 4
)

// ErrFormat is wrapped by every error about a malformed file.
var ErrFormat = errors.New("malformed gguf")

// FormatError says which field at which offset could not be read.
type FormatError struct {
	Field  string
	Offset int64
	Reason string
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("gguf: %s at offset %d: %s", e.Field, e.Offset, e.Reason)
}

func (e *FormatError) Unwrap() error { return ErrFormat }

// KV is one metadata entry, in file order.
type KV struct {
	Key   string
	Value Value
}

// TensorInfo describes one tensor; Data is a slice of the mapped file.
type TensorInfo struct {
	Name   string
	Dims   []uint64 // ggml order: Dims[0] is the row length
	Type   quant.Type
	Offset uint64 // relative to the data section
	Data   []byte
}

// Elements is the product of the dimensions.
func (t *TensorInfo) Elements() uint64 {
	n := uint64(1)
	for _, d := range t.Dims {
		n *= d
	}
	return n
}

// File is a parsed GGUF file.
type File struct {
	Version    uint32
	KVs        []KV
	Tensors    []TensorInfo
	Alignment  uint64
	DataOffset int64

	kv      map[string]int
	tensors map[string]int
	unmap   func() error
}

// Open memory-maps and parses the file at path. Close releases the mapping;
// tensor Data must not be used after Close.
func Open(path string) (*File, error) { return OpenProgress(path, nil) }

// progressChunk is how much of the file OpenProgress reads in between two
// reports.
const progressChunk = 8 << 20

// OpenProgress is Open that reads the file into memory chunk by chunk
// before parsing it, telling progress the bytes read so far and the file's
// size: once with none read, then after every chunk. Reading a
// multi-gigabyte model off a disk takes a while, which Open spends in one
// system call. A nil progress is Open.
func OpenProgress(path string, progress func(done, total int64)) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open gguf: %w", err)
	}
	defer fh.Close()
	data, unmap, err := mapFile(fh, progress)
	if err != nil {
		return nil, fmt.Errorf("map %s: %w", path, err)
	}
	f, err := Parse(data)
	if err != nil {
		_ = unmap()
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	f.unmap = unmap
	return f, nil
}

// Close releases the file mapping, if any.
func (f *File) Close() error {
	if f.unmap == nil {
		return nil
	}
	err := f.unmap()
	f.unmap = nil
	return err
}

// Parse reads a GGUF image held in memory. Tensor data slices alias data.
func Parse(data []byte) (*File, error) {
	d := &decoder{buf: data}
	f := &File{kv: map[string]int{}, tensors: map[string]int{}}

	magic, err := d.u32("magic")
	if err != nil {
		return nil, err
	}
	if magic != Magic {
		return nil, d.fail("magic", 0, fmt.Sprintf("got %#08x, want %#08x (\"GGUF\")", magic, Magic))
	}
	if f.Version, err = d.u32("version"); err != nil {
		return nil, err
	}
	if f.Version != 2 && f.Version != 3 {
		return nil, d.fail("version", 4, fmt.Sprintf("version %d is not supported (want 2 or 3)", f.Version))
	}
	nTensors, err := d.u64("tensor_count")
	if err != nil {
		return nil, err
	}
	nKV, err := d.u64("metadata_kv_count")
	if err != nil {
		return nil, err
	}
	// Each KV needs at least 12 bytes (key length and type), each tensor info
	// at least 24: counts beyond what the file can hold are lies.
	if err := d.checkCount("metadata_kv_count", nKV, 12); err != nil {
		return nil, err
	}
	f.KVs = make([]KV, 0, nKV)
	for i := uint64(0); i < nKV; i++ {
		at := d.off
		key, err := d.str(fmt.Sprintf("metadata[%d].key", i), maxKeyLen)
		if err != nil {
			return nil, err
		}
		if _, dup := f.kv[key]; dup {
			return nil, d.fail("metadata key "+key, int64(at), "duplicate key")
		}
		v, err := d.value("metadata "+key, 0)
		if err != nil {
			return nil, err
		}
		f.kv[key] = len(f.KVs)
		f.KVs = append(f.KVs, KV{Key: key, Value: v})
	}

	f.Alignment = DefaultAlignment
	if v, ok := f.Get("general.alignment"); ok {
		a, ok := v.Int()
		if !ok || a <= 0 || a > 1<<20 || a&(a-1) != 0 {
			return nil, d.fail("general.alignment", -1, fmt.Sprintf("%v is not a power of two up to 1 MiB", v.Any()))
		}
		f.Alignment = uint64(a)
	}

	if err := d.checkCount("tensor_count", nTensors, 24); err != nil {
		return nil, err
	}
	f.Tensors = make([]TensorInfo, 0, nTensors)
	for i := uint64(0); i < nTensors; i++ {
		t, err := d.tensorInfo(i)
		if err != nil {
			return nil, err
		}
		if _, dup := f.tensors[t.Name]; dup {
			return nil, d.fail("tensor "+t.Name, int64(d.off), "duplicate tensor name")
		}
		f.tensors[t.Name] = len(f.Tensors)
		f.Tensors = append(f.Tensors, t)
	}

	dataStart := alignUp(uint64(d.off), f.Alignment)
	if dataStart > uint64(len(data)) && len(f.Tensors) > 0 {
		return nil, d.fail("tensor data", int64(d.off), "file ends before the data section")
	}
	f.DataOffset = int64(dataStart)
	for i := range f.Tensors {
		t := &f.Tensors[i]
		field := "tensor " + t.Name
		if t.Offset%f.Alignment != 0 {
			return nil, d.fail(field+" offset", -1, fmt.Sprintf("%d is not a multiple of the alignment %d", t.Offset, f.Alignment))
		}
		size, err := quant.TensorBytes(t.Type, t.Elements())
		if err != nil {
			return nil, d.fail(field+" size", -1, err.Error())
		}
		avail := uint64(len(data)) - dataStart
		if t.Offset > avail || size > avail-t.Offset {
			return nil, d.fail(field+" data", int64(dataStart+t.Offset),
				fmt.Sprintf("%d bytes at data offset %d run past the end of the file (%d bytes of data)", size, t.Offset, avail))
		}
		start := dataStart + t.Offset
		t.Data = data[start : start+size : start+size]
	}
	return f, nil
}

// Get returns the metadata value for key.
func (f *File) Get(key string) (Value, bool) {
	i, ok := f.kv[key]
	if !ok {
		return Value{}, false
	}
	return f.KVs[i].Value, true
}

// String returns a string metadata value.
func (f *File) String(key string) (string, bool) {
	v, ok := f.Get(key)
	if !ok {
		return "", false
	}
	return v.String()
}

// Int returns an integer metadata value.
func (f *File) Int(key string) (int64, bool) {
	v, ok := f.Get(key)
	if !ok {
		return 0, false
	}
	return v.Int()
}

// Float returns a numeric metadata value as float64.
func (f *File) Float(key string) (float64, bool) {
	v, ok := f.Get(key)
	if !ok {
		return 0, false
	}
	return v.Float()
}

// Bool returns a bool metadata value.
func (f *File) Bool(key string) (bool, bool) {
	v, ok := f.Get(key)
	if !ok {
		return false, false
	}
	return v.Bool()
}

// Array returns an array metadata value.
func (f *File) Array(key string) (Array, bool) {
	v, ok := f.Get(key)
	if !ok {
		return Array{}, false
	}
	return v.Array()
}

// Tensor returns the tensor called name.
func (f *File) Tensor(name string) (*TensorInfo, bool) {
	i, ok := f.tensors[name]
	if !ok {
		return nil, false
	}
	return &f.Tensors[i], true
}

func alignUp(n, a uint64) uint64 { return (n + a - 1) / a * a }

type decoder struct {
	buf []byte
	off int
}

func (d *decoder) fail(field string, at int64, reason string) error {
	if at < 0 {
		at = int64(d.off)
	}
	return &FormatError{Field: field, Offset: at, Reason: reason}
}

func (d *decoder) need(field string, n uint64) ([]byte, error) {
	if n > uint64(len(d.buf)-d.off) {
		return nil, d.fail(field, -1, fmt.Sprintf("need %d bytes, file has %d left", n, len(d.buf)-d.off))
	}
	b := d.buf[d.off : d.off+int(n)]
	d.off += int(n)
	return b, nil
}

// checkCount rejects a count whose elements, at minSize bytes each, cannot
// fit in what is left of the file.
func (d *decoder) checkCount(field string, n uint64, minSize uint64) error {
	left := uint64(len(d.buf) - d.off)
	if minSize > 0 && n > left/minSize {
		return d.fail(field, -1, fmt.Sprintf("count %d cannot fit in the %d bytes left", n, left))
	}
	return nil
}

func (d *decoder) u32(field string) (uint32, error) {
	b, err := d.need(field, 4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (d *decoder) u64(field string) (uint64, error) {
	b, err := d.need(field, 8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

func (d *decoder) str(field string, limit uint64) (string, error) {
	n, err := d.u64(field + " length")
	if err != nil {
		return "", err
	}
	if n > limit {
		return "", d.fail(field, int64(d.off-8), fmt.Sprintf("length %d exceeds the limit %d", n, limit))
	}
	b, err := d.need(field, n)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

func (d *decoder) value(field string, depth int) (Value, error) {
	tag, err := d.u32(field + " type")
	if err != nil {
		return Value{}, err
	}
	t := ValueType(tag)
	switch t {
	case TypeString:
		s, err := d.str(field, math.MaxInt32)
		return Value{Type: t, v: s}, err
	case TypeArray:
		a, err := d.array(field, depth)
		return Value{Type: t, v: a}, err
	}
	if t.size() == 0 {
		return Value{}, d.fail(field+" type", int64(d.off-4), fmt.Sprintf("unknown value type %d", tag))
	}
	b, err := d.need(field, uint64(t.size()))
	if err != nil {
		return Value{}, err
	}
	v, err := scalar(t, b)
	if err != nil {
		return Value{}, d.fail(field, int64(d.off-t.size()), err.Error())
	}
	return Value{Type: t, v: v}, nil
}

func scalar(t ValueType, b []byte) (any, error) {
	le := binary.LittleEndian
	switch t {
	case TypeUint8:
		return b[0], nil
	case TypeInt8:
		return int8(b[0]), nil
	case TypeUint16:
		return le.Uint16(b), nil
	case TypeInt16:
		return int16(le.Uint16(b)), nil
	case TypeUint32:
		return le.Uint32(b), nil
	case TypeInt32:
		return int32(le.Uint32(b)), nil
	case TypeFloat32:
		return math.Float32frombits(le.Uint32(b)), nil
	case TypeBool:
		if b[0] > 1 {
			return nil, fmt.Errorf("bool byte %d is neither 0 nor 1", b[0])
		}
		return b[0] == 1, nil
	case TypeUint64:
		return le.Uint64(b), nil
	case TypeInt64:
		return int64(le.Uint64(b)), nil
	case TypeFloat64:
		return math.Float64frombits(le.Uint64(b)), nil
	}
	return nil, fmt.Errorf("unknown value type %d", t)
}

func (d *decoder) array(field string, depth int) (Array, error) {
	if depth >= maxArrayNest {
		return Array{}, d.fail(field, -1, fmt.Sprintf("arrays nested deeper than %d", maxArrayNest))
	}
	tag, err := d.u32(field + " element type")
	if err != nil {
		return Array{}, err
	}
	elem := ValueType(tag)
	n, err := d.u64(field + " count")
	if err != nil {
		return Array{}, err
	}
	minSize := uint64(elem.size())
	switch elem {
	case TypeString:
		minSize = 8
	case TypeArray:
		minSize = 12
	}
	if minSize == 0 {
		return Array{}, d.fail(field+" element type", int64(d.off-12), fmt.Sprintf("unknown value type %d", tag))
	}
	if err := d.checkCount(field+" count", n, minSize); err != nil {
		return Array{}, err
	}
	a := Array{Elem: elem}
	switch elem {
	case TypeString:
		out := make([]string, n)
		for i := range out {
			if out[i], err = d.str(fmt.Sprintf("%s[%d]", field, i), math.MaxInt32); err != nil {
				return Array{}, err
			}
		}
		a.Values = out
	case TypeArray:
		out := make([]Array, n)
		for i := range out {
			if out[i], err = d.array(fmt.Sprintf("%s[%d]", field, i), depth+1); err != nil {
				return Array{}, err
			}
		}
		a.Values = out
	default:
		b, err := d.need(field, n*minSize)
		if err != nil {
			return Array{}, err
		}
		if a.Values, err = scalars(elem, b, int(n)); err != nil {
			return Array{}, d.fail(field, -1, err.Error())
		}
	}
	return a, nil
}

func scalars(t ValueType, b []byte, n int) (any, error) {
	le := binary.LittleEndian
	switch t {
	case TypeUint8:
		return append([]uint8(nil), b...), nil
	case TypeInt8:
		out := make([]int8, n)
		for i := range out {
			out[i] = int8(b[i])
		}
		return out, nil
	case TypeUint16:
		out := make([]uint16, n)
		for i := range out {
			out[i] = le.Uint16(b[2*i:])
		}
		return out, nil
	case TypeInt16:
		out := make([]int16, n)
		for i := range out {
			out[i] = int16(le.Uint16(b[2*i:]))
		}
		return out, nil
	case TypeUint32:
		out := make([]uint32, n)
		for i := range out {
			out[i] = le.Uint32(b[4*i:])
		}
		return out, nil
	case TypeInt32:
		out := make([]int32, n)
		for i := range out {
			out[i] = int32(le.Uint32(b[4*i:]))
		}
		return out, nil
	case TypeFloat32:
		out := make([]float32, n)
		for i := range out {
			out[i] = math.Float32frombits(le.Uint32(b[4*i:]))
		}
		return out, nil
	case TypeBool:
		out := make([]bool, n)
		for i := range out {
			if b[i] > 1 {
				return nil, fmt.Errorf("element %d: bool byte %d is neither 0 nor 1", i, b[i])
			}
			out[i] = b[i] == 1
		}
		return out, nil
	case TypeUint64:
		out := make([]uint64, n)
		for i := range out {
			out[i] = le.Uint64(b[8*i:])
		}
		return out, nil
	case TypeInt64:
		out := make([]int64, n)
		for i := range out {
			out[i] = int64(le.Uint64(b[8*i:]))
		}
		return out, nil
	case TypeFloat64:
		out := make([]float64, n)
		for i := range out {
			out[i] = math.Float64frombits(le.Uint64(b[8*i:]))
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown element type %d", t)
}

func (d *decoder) tensorInfo(i uint64) (TensorInfo, error) {
	field := fmt.Sprintf("tensor[%d]", i)
	name, err := d.str(field+" name", maxKeyLen)
	if err != nil {
		return TensorInfo{}, err
	}
	field = "tensor " + strings.ToValidUTF8(name, "?")
	nDims, err := d.u32(field + " n_dims")
	if err != nil {
		return TensorInfo{}, err
	}
	if nDims == 0 || nDims > maxDims {
		return TensorInfo{}, d.fail(field+" n_dims", int64(d.off-4), fmt.Sprintf("%d dimensions (want 1 to %d)", nDims, maxDims))
	}
	t := TensorInfo{Name: name, Dims: make([]uint64, nDims)}
	elems := uint64(1)
	for k := range t.Dims {
		if t.Dims[k], err = d.u64(fmt.Sprintf("%s dims[%d]", field, k)); err != nil {
			return TensorInfo{}, err
		}
		if t.Dims[k] == 0 || t.Dims[k] > math.MaxInt32 {
			return TensorInfo{}, d.fail(fmt.Sprintf("%s dims[%d]", field, k), int64(d.off-8), fmt.Sprintf("dimension %d out of range", t.Dims[k]))
		}
		hi, lo := mul64(elems, t.Dims[k])
		if hi != 0 || lo > 1<<48 {
			return TensorInfo{}, d.fail(field+" dims", int64(d.off-8), "element count overflows")
		}
		elems = lo
	}
	typ, err := d.u32(field + " type")
	if err != nil {
		return TensorInfo{}, err
	}
	t.Type = quant.Type(typ)
	if _, err := quant.TensorBytes(t.Type, elems); err != nil {
		return TensorInfo{}, d.fail(field+" type", int64(d.off-4), err.Error())
	}
	if t.Offset, err = d.u64(field + " offset"); err != nil {
		return TensorInfo{}, err
	}
	return t, nil
}

func mul64(a, b uint64) (hi, lo uint64) {
	if a == 0 || b == 0 {
		return 0, 0
	}
	lo = a * b
	if lo/b != a {
		return 1, lo
	}
	return 0, lo
}
