package schemas

import (
	"encoding/json"
	"testing"
)

// FuzzValidate feeds arbitrary bytes to every wire message's decoder and
// Validate: none may panic, and every rejection carries invalid_request.
func FuzzValidate(f *testing.F) {
	for _, v := range []any{validJob(), validChatJob(), validInferRequest(), tokenEvent(), endEvent(), errorEvent(),
		validWorkerHeartbeat(), validHiveHeartbeat(), validWorkerProgress(), failedWorkerProgress(), Control{Command: ControlShutdown},
		SpawnRequest{Model: "tiny", OnDemand: true}, StopRequest{WorkerID: "w1", Reason: "test"}, DrainRequest{Resume: true},
		ShutdownRequest{Reason: "maintenance"}} {
		b, err := json.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		``, `null`, `{}`, `[]`, `"job"`, `{"type":"token"}`, `{"type":"end","usage":null}`,
		`{"type":"error","error":{}}`, `{"temperature":-1e400}`, `{"messages":[null]}`, `{"seq":-9223372036854775808}`,
		`{"id":"a","model":"m","stream":"r","stop":[""]}`, `{"token_id":4294967296}`,
		`{"id":"a","model":"m","stream":"r","kind":"embed","input":["x",""],"truncate":true}`,
		`{"id":"a","model":"m","stream":"r","kind":"tokenize","prompt":"x","add_special":true,"with_pieces":true}`,
		`{"id":"a","model":"m","stream":"r","kind":"detokenize","tokens":[1,-1]}`, `{"kind":"nope"}`,
		`{"job_id":"j","seq":0,"delivery":1,"type":"end","stop_reason":"stop","usage":{},"embeddings":[[0.5,-1e39]],"tokens":[1],"pieces":["a"]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, v := range []interface {
			Validate() error
		}{&Job{}, &InferRequest{}, &Event{}, &WorkerHeartbeat{}, &HiveHeartbeat{}, &WorkerProgress{}, &Control{}, &AuditEvent{},
			&SpawnRequest{}, &StopRequest{}, &DrainRequest{}, &ShutdownRequest{}} {
			if json.Unmarshal(data, v) != nil {
				continue
			}
			if err := v.Validate(); err != nil && CodeOf(err) != CodeInvalidRequest {
				t.Errorf("%T.Validate() = %v: code %s, want %s", v, err, CodeOf(err), CodeInvalidRequest)
			}
		}
	})
}

// FuzzDecodeEvents reads arbitrary message bodies as job events: no panic,
// every rejection carries invalid_request, and whatever is accepted encodes
// back to events that decode to the same.
func FuzzDecodeEvents(f *testing.F) {
	seed, err := EncodeEvents([]Event{tokenEvent(), errorEvent()})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	for _, s := range []string{"", "\n\n", "{}\n", `{"job_id":"j","seq":0,"delivery":1,"type":"token","token_id":1}` + "\n{"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		events, err := DecodeEvents(nil, data)
		if err != nil {
			if CodeOf(err) != CodeInvalidRequest {
				t.Fatalf("DecodeEvents: %v: code %s, want %s", err, CodeOf(err), CodeInvalidRequest)
			}
			return
		}
		again, err := EncodeEvents(events)
		if err != nil {
			t.Fatalf("EncodeEvents of decoded events: %v", err)
		}
		back, err := DecodeEvents(nil, again)
		if err != nil || len(back) != len(events) {
			t.Fatalf("round trip: %d events, then %d (%v)", len(events), len(back), err)
		}
	})
}
