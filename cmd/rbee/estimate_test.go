package main

import (
	"io"
	"slices"
	"testing"

	"github.com/rbee-dev/rbee/hive"
)

// The estimate is the file plus the KV pool as infer sizes it:
// stories260K has 5 layers, 4 KV heads of 8 dimensions.
func TestEstimateWorker(t *testing.T) {
	const path = "../../infer/testdata/stories260K.gguf"
	one, err := estimateWorker(hive.ModelSpec{Name: "s", Path: path, Slots: 1, ContextLength: 512})
	if err != nil {
		t.Fatal(err)
	}
	four, err := estimateWorker(hive.ModelSpec{Name: "s", Path: path, Slots: 4, ContextLength: 512})
	if err != nil {
		t.Fatal(err)
	}
	// Three more slots of 512 positions: K and V, 5 layers, 32 values of 2 bytes.
	if got, want := four.RAM-one.RAM, uint64(3*512*2*5*32*2); got != want {
		t.Errorf("three more slots add %d bytes, want %d", got, want)
	}
	pool, err := estimateWorker(hive.ModelSpec{Name: "s", Path: path, Slots: 4, ContextLength: 512, KVTokens: 1})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := one.RAM-pool.RAM, uint64((512-16)*2*5*32*2); got != want {
		t.Errorf("a one-token pool (one block) saves %d bytes on a 512 one, want %d", got, want)
	}
	if _, err := estimateWorker(hive.ModelSpec{Name: "x", Path: "estimate_test.go"}); err == nil {
		t.Error("a file that is not GGUF: nil error")
	}
}

func TestFlagsFirst(t *testing.T) {
	fs := newFlags("x", io.Discard)
	fs.String("hive", "", "")
	fs.Bool("json", false, "")
	got := flagsFirst(fs, []string{"--hive", "h1", "MODEL", "--json", "--server=u", "-x", "v"})
	want := []string{"--hive", "h1", "--json", "--server=u", "-x", "MODEL", "v"}
	if !slices.Equal(got, want) {
		t.Errorf("flagsFirst = %q, want %q", got, want)
	}
}
