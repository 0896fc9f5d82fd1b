package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/rbee-dev/rbee/infer/synth"
)

// runModel dispatches the `rbee model` subcommands (only synth so far).
func runModel(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const usage = "usage: rbee model synth --shape NAME --type TYPE --vocab FILE -o OUT [--seed N]"
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return usageError{errors.New("model: no subcommand given")}
	}
	switch args[0] {
	case "synth":
		return runModelSynth(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprintln(stderr, usage)
		return flag.ErrHelp
	}
	fmt.Fprintln(stderr, usage)
	return usageError{fmt.Errorf("model: unknown subcommand %q", args[0])}
}

// runModelSynth writes a llama model with seeded random weights, byte-identical to what llama.cpp's
// converter and llama-quantize make of the same weights (see package synth).
func runModelSynth(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("model synth", stderr)
	var (
		shape = fs.String("shape", "", "model shape: "+strings.Join(synth.ShapeNames(), " or ")+" (required)")
		typ   = fs.String("type", "", "file type: F32, F16, BF16, Q8_0, Q4_0, Q4_K (= Q4_K_M), Q4_K_M or Q6_K (required)")
		vocab = fs.String("vocab", "", "GGUF file whose tokenizer.ggml.* metadata the model copies (required)")
		out   = fs.String("o", "", "output file (required)")
		seed  = fs.Uint64("seed", 0, "seed of the weights (default: the shape's, 7)")
	)
	if err := parse(fs, args); err != nil {
		return err
	}
	for _, req := range []struct{ name, val string }{{"shape", *shape}, {"type", *typ}, {"vocab", *vocab}, {"o", *out}} {
		if req.val == "" {
			return usageError{fmt.Errorf("model synth: -%s is required", req.name)}
		}
	}
	spec, err := synth.Shape(*shape)
	if err != nil {
		return usageError{err}
	}
	ft, err := synth.ParseFileType(*typ)
	if err != nil {
		return usageError{err}
	}
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "seed" {
			spec.Seed = *seed
		}
	})
	v, err := synth.ReadVocab(*vocab)
	if err != nil {
		return fmt.Errorf("model synth: %w", err)
	}
	if err := synth.WriteFile(*out, spec, ft, v); err != nil {
		return fmt.Errorf("model synth: %w", err)
	}
	st, err := os.Stat(*out)
	if err != nil {
		return fmt.Errorf("model synth: %w", err)
	}
	_, err = fmt.Fprintf(stdout, "wrote %s: %s %s, seed %d, %d bytes\n", *out, *shape, ft, spec.Seed, st.Size())
	return err
}
