package worker_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/rbee-dev/rbee/bus"
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

// A job that names another job's stream, or a subject outside rbee's job
// streams, as its own is refused: the worker writes nowhere but the job's
// own events subject, so no job can inject text into another's answer.
func TestJobNamingAnotherStreamIsRefused(t *testing.T) {
	b := newBed(t)
	b.startWorker(t, worker.Config{ContextLength: 256})
	victim := b.read(t, "victim-1")
	for i, stream := range []string{
		b.subj.JobEvents(testOwner, "victim-1"),
		b.subj.Heartbeat(schemas.KindWorker, "w1"),
		b.subj.Jobs(modelName),
		"_INBOX.someone",
	} {
		id := "forger-" + string(rune('a'+i))
		data, err := json.Marshal(schemas.Job{ID: id, Model: modelName, Stream: stream, Prompt: "Once", MaxTokens: 4})
		if err != nil {
			t.Fatal(err)
		}
		b.submitRaw(t, id, data)
	}
	checkFor(t, waitLong, func() error {
		dead, err := bus.ReadDeadLetters(testContext(t), b.js, b.subj, modelName, 0)
		if err != nil || len(dead) != 4 {
			return fmt.Errorf("%d dead letters (%v), want 4", len(dead), err)
		}
		for _, d := range dead {
			if d.Code != schemas.CodeInvalidRequest {
				return fmt.Errorf("dead letter %+v, want invalid_request", d)
			}
		}
		return nil
	})
	// The victim's stream got nothing: its own job then streams from seq 0.
	b.submitRaw(t, "victim-1", mustJSON(t, schemas.Job{ID: "victim-1", Model: modelName,
		Stream: b.subj.JobEvents(testOwner, "victim-1"), Prompt: "Once", MaxTokens: 4}))
	events := drain(t, victim)
	wantEnd(t, events)
	if events[0].Seq != 0 || events[0].JobID != "victim-1" {
		t.Errorf("the victim's first event %+v, want its own, seq 0", events[0])
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
