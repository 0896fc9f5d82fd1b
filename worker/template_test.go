package worker_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/rbee-dev/rbee/infer"
	"github.com/rbee-dev/rbee/infer/gguf"
	"github.com/rbee-dev/rbee/schemas"
	"github.com/rbee-dev/rbee/worker"
)

// A chat template is data from the model file. One that would crash the
// process (a value that contains itself, a macro that calls itself: Go's
// stack overflow is fatal, not a panic) or hang it (a loop of 10^9) fails
// the chat job with template_error, and the worker goes on serving.
func TestHostileTemplateFailsTheJobNotTheWorker(t *testing.T) {
	for name, tmpl := range map[string]string{
		"self-referencing": `{% set ns = namespace(x=0) %}{% set ns.x = ns %}{{ ns.x }}`,
		"recursive macro":  `{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}`,
		"loop of 10^9":     `{% for a in range(40000) %}{% for b in range(25000) %}{% endfor %}{% endfor %}`,
	} {
		t.Run(name, func(t *testing.T) {
			model := modelWithTemplate(t, tmpl)
			b := newBed(t)
			b.startWorkerOn(t, model, worker.Config{ContextLength: 256})
			for i := range 2 {
				chat := b.submit(t, schemas.Job{ID: "chat-" + string(rune('a'+i)), MaxTokens: 4, Sampling: greedy(),
					Messages: []schemas.Message{{Role: "user", Content: "Hi"}}})
				wantError(t, drain(t, chat), schemas.CodeTemplateError)
			}
			done := b.submit(t, schemas.Job{ID: "after", Prompt: "Once upon a time", MaxTokens: 4, Sampling: greedy()})
			if end := wantEnd(t, drain(t, done)); end.Usage.CompletionTokens == 0 {
				t.Errorf("completion after the failed chats: %+v, want tokens", end.Usage)
			}
			b.waitQueueEmpty(t)
		})
	}
}

// modelWithTemplate loads a copy of the test model whose chat template is tmpl.
func modelWithTemplate(t *testing.T, tmpl string) *infer.Model {
	t.Helper()
	src, err := gguf.Open(modelPath)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	w := gguf.NewWriter()
	for _, kv := range src.KVs {
		if kv.Key != "tokenizer.chat_template" {
			if err := w.Set(kv.Key, kv.Value); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Set("tokenizer.chat_template", tmpl); err != nil {
		t.Fatal(err)
	}
	for _, ti := range src.Tensors {
		if err := w.AddTensor(ti.Name, ti.Type, ti.Dims, ti.Data); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "hostile.gguf")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	model, err := infer.Load(path, infer.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { model.Close() })
	return model
}
