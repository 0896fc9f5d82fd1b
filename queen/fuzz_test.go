package queen

import (
	"encoding/json"
	"testing"

	"github.com/rbee-dev/rbee/schemas"
)

// FuzzOpenAIRequest feeds arbitrary bodies to the OpenAI request decoding:
// it must never panic, and what it maps is either valid or refused as
// invalid_request.
func FuzzOpenAIRequest(f *testing.F) {
	for _, seed := range []string{
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":8,"temperature":0,"stream":true}`,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}`,
		`{"model":"m","prompt":["once"],"stop":"x","n":1,"top_k":4,"seed":-1}`,
		`{"model":"m","prompt":"x","stop":["a","b"],"max_completion_tokens":3,"stream_options":{"include_usage":true}}`,
		`{"model":"m","messages":[{"role":"user","content":null}],"presence_penalty":-2}`,
		`{"model":"m","prompt":[1,2]}`, `null`, `[]`, `{"messages":{}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var chat chatRequest
		if json.Unmarshal(body, &chat) == nil {
			if ir, err := chat.inferRequest(); err == nil {
				checkAccepted(t, "chat", ir)
			}
		}
		var comp completionRequest
		if json.Unmarshal(body, &comp) == nil {
			if ir, err := comp.inferRequest(); err == nil {
				checkAccepted(t, "completion", ir)
			}
		}
	})
}

func checkAccepted(t *testing.T, kind string, ir schemas.InferRequest) {
	t.Helper()
	if err := ir.Validate(); err != nil && schemas.CodeOf(err) != schemas.CodeInvalidRequest {
		t.Fatalf("%s request %+v: validation error %v has code %q", kind, ir, err, schemas.CodeOf(err))
	}
}
