// Package bundled carries the small model that `rbee up` serves out of the
// box: stories260K (MIT, from Andrej Karpathy's llama2.c; see LICENSE-llama2c.txt),
// embedded in the binary so a fresh machine needs no download.
package bundled

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
)

// Name is the bundled model's name on the bus.
const Name = "stories260K"

//go:embed stories260K.gguf
var model []byte

// SHA256 is the checksum of the bundled file.
const SHA256 = "047bf46455a544931cff6fef14d7910154c56afbc23ab1c5e56a72e69912c04b"

// Install writes the bundled model into dir (once; a file already there with
// the right checksum is kept) and returns its path. Workers memory-map it
// from there.
func Install(dir string) (string, error) {
	path := filepath.Join(dir, Name+".gguf")
	if existing, err := os.ReadFile(path); err == nil && bytes.Equal(existing, model) {
		return path, nil
	}
	if sum := sha256.Sum256(model); hex.EncodeToString(sum[:]) != SHA256 {
		return "", fmt.Errorf("bundled model checksum %x does not match %s", sum, SHA256)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("install bundled model: %w", err)
	}
	tmp, err := os.CreateTemp(dir, Name+".*.tmp")
	if err != nil {
		return "", fmt.Errorf("install bundled model: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(model); err != nil {
		tmp.Close()
		return "", fmt.Errorf("install bundled model: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("install bundled model: %w", err)
	}
	// Rename is atomic, so a worker never maps a half-written file.
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("install bundled model: %w", err)
	}
	return path, nil
}
