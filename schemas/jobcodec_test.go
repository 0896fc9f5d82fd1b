package schemas

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// plainJob is a job as the queen queues a completion: every field the
// hand-written reader takes.
func plainJob() Job {
	j := validChatJob()
	temp, seed, logprobs := 0.7, int64(42), 2
	j.Prompt, j.MaxTokens, j.Stop = "Once upon a time", 16, []string{"\n", "The End"}
	j.Temperature, j.Seed, j.Logprobs = &temp, &seed, &logprobs
	j.TopK, j.TopP, j.MinP, j.RepeatPenalty, j.PresencePenalty, j.FrequencyPenalty, j.N = 40, 0.9, 0.05, 1.1, 0.5, -0.5, 2
	j.Kind = KindGenerate
	j.CreatedAt = time.Date(2026, 12, 3, 10, 0, 0, 123456789, time.UTC)
	j.Deadline = j.CreatedAt.Add(time.Minute).In(time.FixedZone("", 3600))
	j.Principal, j.EventKey = "nats:client", NewEventKey()
	return j
}

// FuzzUnmarshalJob: whatever job the hand-written reader takes,
// json.Unmarshal reads to the same Job.
func FuzzUnmarshalJob(f *testing.F) {
	for _, j := range []Job{validJob(), validChatJob(), plainJob()} {
		data, err := json.Marshal(j)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		`{"id":"a","stop":[],"messages":[]}`, `{"seed":9223372036854775808}`, `{"ID":"a"}`, `{"id":"a","id":"b"}`,
		`{"created_at":"2026-12-03T10:00:00Z"}`, `{"deadline":"2026-13-03T10:00:00Z"}`, `{"temperature":1e400}`,
		`{"messages":[{"role":"user","content":"x","tool_calls":[]}]}`, `{"messages":[{"role":"user"},]}`,
		`{"stop":["a"]} x`, `{"logprobs":-0}`, `{"prompt":"\u00e9"}`, `{"kind":"embed","input":["x"]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var fast Job
		if !decodePlainJob(data, &fast) {
			return
		}
		var want Job
		if err := json.Unmarshal(data, &want); err != nil {
			t.Fatalf("decodePlainJob took %q, json.Unmarshal refuses it: %v", data, err)
		}
		if !reflect.DeepEqual(fast, want) {
			t.Fatalf("%q: decodePlainJob read %+v, json.Unmarshal %+v", data, fast, want)
		}
	})
}

// TestUnmarshalJobTakesWhatTheQueenQueues: a queued completion goes
// through the hand-written reader; one with tools through encoding/json,
// which also keeps reading fields it does not know.
func TestUnmarshalJobTakesWhatTheQueenQueues(t *testing.T) {
	want := plainJob()
	data, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	var got Job
	if !decodePlainJob(data, &got) {
		t.Fatalf("decodePlainJob refused %s", data)
	}
	if !reflect.DeepEqual(got.Messages, want.Messages) || *got.Seed != *want.Seed || !got.Deadline.Equal(want.Deadline) || got.EventKey != want.EventKey {
		t.Errorf("decodePlainJob read %+v, want %+v", got, want)
	}
	var lenient Job
	if err := UnmarshalJob([]byte(`{"id":"a","model":"m","stream":"s","prompt":"x","from_a_newer_queen":1}`), &lenient); err != nil || lenient.Prompt != "x" {
		t.Errorf("UnmarshalJob of a job with an unknown field: %+v, %v", lenient, err)
	}
	if err := UnmarshalJob([]byte(`{"id":`), &lenient); err == nil {
		t.Error("UnmarshalJob took a cut-off job")
	}
}

// BenchmarkUnmarshalJob compares the reader with json.Unmarshal on a
// queued completion.
func BenchmarkUnmarshalJob(b *testing.B) {
	data, err := json.Marshal(plainJob())
	if err != nil {
		b.Fatal(err)
	}
	b.Run("rbee", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var j Job
			if err := UnmarshalJob(data, &j); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var j Job
			if err := json.Unmarshal(data, &j); err != nil {
				b.Fatal(err)
			}
		}
	})
}
